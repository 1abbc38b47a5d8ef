"""What a study shows when it is done: the trials table, its figures, and what each trial logs.

The table has one row per finished trial, sorted by lambda, and is printed,
returned by ``--json`` and logged as ``trials.csv``.
"""

import math
import time
from dataclasses import dataclass, field
from datetime import datetime

from optuna.trial import TrialState

from .. import plots, processes, tracking
from . import queue
from .study import LAM, protocol_params


@dataclass
class Timer:
    """Wall time per activity, in seconds."""

    seconds: dict = field(default_factory=dict)

    def add(self, name, seconds):
        """Add ``seconds`` to activity ``name``."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def timed(self, name):
        """A context manager adding the time spent in its block to ``name``."""
        return _Timed(self, name)


class _Timed:
    def __init__(self, timer, name):
        self.timer, self.name = timer, name

    def __enter__(self):
        self.started = time.perf_counter()

    def __exit__(self, *exc):
        self.timer.add(self.name, time.perf_counter() - self.started)


def trials_table(study):
    """One row per finished trial, sorted by lambda."""
    rows = []
    for t in queue.finished_trials(study):
        accuracies = t.user_attrs.get("val_accuracies", [])
        rows.append({
            "trial": t.number,
            "lam": t.params.get(LAM, float("nan")),
            "state": t.state.name,
            "mean_val_accuracy": t.value if t.state == TrialState.COMPLETE else float("nan"),
            "std_val_accuracy": t.user_attrs.get("val_accuracy_std", float("nan")),
            "val_accuracies": " ".join(f"{a:.4f}" for a in accuracies),
            "reason": t.user_attrs.get("reason", "") if t.state != TrialState.COMPLETE else "",
        })
    return sorted(rows, key=lambda r: r["lam"])


def best_row(rows):
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    return max(complete, key=lambda r: r["mean_val_accuracy"]) if complete else None


def format_table(rows, n_seeds):
    """The table printed at the end of a study."""
    lines = [f"{'trial':>5}  {'lambda':>10}  {'val accuracy (mean ± std of ' + str(n_seeds) + ' seeds)':<38} state"]
    for r in rows:
        accuracy = ("" if math.isnan(r["mean_val_accuracy"])
                    else f"{100 * r['mean_val_accuracy']:6.2f} ± {100 * r['std_val_accuracy']:.2f} %")
        state = r["state"] + (f" ({r['reason']})" if r["reason"] else "")
        lines.append(f"{r['trial']:>5}  {r['lam']:>10.3g}  {accuracy:<38} {state}")
    best = best_row(rows)
    if best is not None:
        lines.append(f"best: trial {best['trial']}, lambda {best['lam']:.4g}, validation accuracy "
                     f"{100 * best['mean_val_accuracy']:.2f} ± {100 * best['std_val_accuracy']:.2f} %")
    return "\n".join(lines)


def study_figures(study, rows, kind):
    """Figures logged on the parent run."""
    figures = {}
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    if complete:
        figures["lambda_search"] = plots.lambda_search(
            [r["lam"] for r in complete], [r["mean_val_accuracy"] for r in complete],
            [r["std_val_accuracy"] for r in complete], log_x=kind == "coarse",
            title=f"{kind} search: mean validation accuracy ± 3σ")
        figures.update(plots.optuna_figures(study))
    return figures


def trial_records(outcome, config, splits):
    """What the tracking layer logs for the recorded trials of one population."""
    protocol = protocol_params(config)
    records = []
    for result in outcome.results:
        if not result.recorded:
            continue
        seeds = [tracking.SeedRecord(
            seed=seed, val_accuracy=accuracy, history=outcome.training.history, member=m,
            val_true=splits.val.y, val_pred=outcome.val_pred[m], class_names=splits.label_names,
            status=outcome.training.status[m])
            for seed, accuracy, m in zip(config.study.seeds, result.accuracies, result.members)]
        records.append(tracking.TrialRecord(number=result.number, lam=result.lam, state=result.state,
                                            mean=result.mean, std=result.std, seeds=seeds, params=protocol,
                                            reason=result.reason))
    return records


def log_lost_trials(study, config, url, parent):
    """Log again, from the study, the finished trials whose MLflow runs died with the process writing them.

    Their curves are lost; the trial run gets the values Optuna holds and the
    tag curves=lost. A trial counts as lost when it has no trial run and the
    process that told it is dead (or silent for the grace period).
    """
    grace = processes.grace_seconds()
    with queue.study_lock(url):
        logged = tracking.logged_trials(config.study.experiment, config.study.name)
        lost = []
        for t in queue.finished_trials(study):
            if t.number in logged:
                continue
            worker = t.system_attrs.get(queue.WORKER_ATTR)
            silent = (datetime.now() - (t.datetime_complete or datetime.now())).total_seconds() > grace
            if processes.alive(worker) is False or (processes.alive(worker) is None and silent):
                lost.append(t)
        parent.log_trials([lost_record(t, config) for t in lost])


def lost_record(frozen, config):
    """A TrialRecord, without seed runs, of a finished trial as the study holds it."""
    accuracies = frozen.user_attrs.get("val_accuracies", [])
    return tracking.TrialRecord(
        number=frozen.number, lam=frozen.params[LAM], state=frozen.state.name,
        mean=frozen.value if frozen.value is not None else float("nan"),
        std=frozen.user_attrs.get("val_accuracy_std", float("nan")), params=protocol_params(config),
        reason=frozen.user_attrs.get("reason", ""), tags={"curves": "lost"},
        seed_accuracies=dict(zip(config.study.seeds, accuracies)))
