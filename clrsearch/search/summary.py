"""What a study shows when it is done: the trials table, its figures, what each trial logs, the compute used.

The table has one row per finished trial, sorted by lambda, and is printed,
returned by ``--json`` and logged as ``trials.csv``. Beside the paired
comparison with the winner (:mod:`.compare`), each completed point has its
MCB interval for mu_i - max_{j != i} mu_j over all completed points (on each
pair's common replicates), whether it is in the *best set* (upper bound > 0)
and its P(best) (:mod:`.decision`). The winner is the largest mean among the
points still in the race at its end (all completed points without a race).
"""

import contextlib
import math
import re
import time
from dataclasses import dataclass, field

import numpy as np
from optuna.trial import TrialState

from .. import plots, processes, tracking
from . import decision, pruning, queue
from ..config import GRID_DIMENSIONS
from ..data import Folds
from .compare import best_key, compare_to_best
from .queue import NEW_REPLICATES, POINT, ROUND
from .race import race_end, race_left
from .study import ACCURACIES, LAM, REPLICATES, latest_trials, point_train_config, protocol_params, replicate_accuracies

MAX_DESCRIPTION = 8000  # characters: MLflow's limit for a tag value, the run description included


@dataclass
class Timer:
    """Wall time per activity, in seconds."""

    seconds: dict = field(default_factory=dict)

    def add(self, name, seconds):
        """Add ``seconds`` to activity ``name``."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextlib.contextmanager
    def timed(self, name):
        """A context manager adding the time spent in its block to ``name``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)


def trials_table(study, alpha=0.05):
    """One row per point (its latest trial), sorted by the point's settings, with its paired comparison with the
    winner, its MCB interval, whether it is in the best set, and its P(best)."""
    trials = list(latest_trials(queue.finished_trials(study)).values())
    left = race_left(study)
    accuracies = {t.number: replicate_accuracies(t) for t in trials
                  if t.state == TrialState.COMPLETE and t.user_attrs.get(REPLICATES)}
    points = {t.number: _point(t) for t in trials}
    contenders = {n: a for n, a in accuracies.items() if points[n] not in left}
    winner = best_key(contenders or accuracies) if accuracies else None
    comparisons = compare_to_best(accuracies, alpha, best=winner)  # see .compare
    intervals = decision.mcb(accuracies, alpha) if accuracies else {}
    members = decision.best_set(intervals)
    chances = decision.p_best(accuracies)
    rows = []
    for t in trials:
        c, interval = comparisons.get(t.number), intervals.get(t.number)
        rows.append({
            "trial": t.number,
            "point": _point(t),
            **t.params,
            "state": t.state.name,
            "mean_val_accuracy": t.value if t.state == TrialState.COMPLETE else float("nan"),
            "std_val_accuracy": t.user_attrs.get("val_accuracy_std", float("nan")),
            "replicates": len(t.user_attrs.get(REPLICATES, [])),
            "val_accuracies": " ".join(f"{a:.4f}" for a in t.user_attrs.get(ACCURACIES, [])),
            "delta_vs_best": c.delta if c else float("nan"),
            "ci_low": c.ci_low if c else float("nan"),
            "ci_high": c.ci_high if c else float("nan"),
            "p_vs_best": c.p if c else float("nan"),
            "verdict": c.verdict if c else "",
            "mcb_low": interval.low if interval else float("nan"),
            "mcb_high": interval.high if interval else float("nan"),
            "best_set": t.number in members,
            "p_best": chances.get(t.number, float("nan")),
            "rounds": t.user_attrs.get(ROUND, 1),
            "left_race": left.get(_point(t), ""),
            "reason": t.user_attrs.get("reason", "") if t.state != TrialState.COMPLETE else "",
        })
    keys = [LAM, *_dims(rows)]
    return sorted(rows, key=lambda r: tuple(r[name] for name in keys))


def _point(trial):
    return trial.user_attrs.get(POINT, trial.number)


def _dims(rows):
    """The columns besides lambda that name a point: the schedule dimensions present."""
    present = set().union(*rows) if rows else set()
    return [name for name in GRID_DIMENSIONS if name != LAM and name in present]


def verdicts(rows):
    """trial number -> its comparison with the best, JSON-ready, for the study's user attrs and the trial runs."""
    def number(value):
        return None if isinstance(value, float) and math.isnan(value) else value

    decided = {"p_best", "best_set"}
    return {str(r["trial"]): {"delta_vs_best": number(r["delta_vs_best"]), "p_vs_best": number(r["p_vs_best"]),
                              "verdict": r["verdict"], **{k: number(r[k]) for k in sorted(decided & set(r))}}
            for r in rows if r["verdict"]}


def best_row(rows):
    """The row of the best point, or None."""
    return next((r for r in rows if r["verdict"] == "best"), None)


def _cells(r, width=""):
    """The text of a row's validation accuracy (mean ± std, n), the mean ``width`` wide, its paired difference
    [interval], Holm p-value and verdict (with the race's end)."""
    accuracy = ("" if math.isnan(r["mean_val_accuracy"]) else f"{100 * r['mean_val_accuracy']:{width}.2f} ± "
                f"{100 * r['std_val_accuracy']:.2f} % ({r['replicates']})")
    delta = ("" if math.isnan(r["delta_vs_best"]) or r["verdict"] == "best"
             else f"{100 * r['delta_vs_best']:+.2f} [{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}]")
    p = "" if math.isnan(r["p_vs_best"]) else f"{r['p_vs_best']:.3g}"
    verdict = r["verdict"] or r["state"] + (f" ({r['reason']})" if r["reason"] else "")
    if r.get("best_set"):
        verdict += ", best set"
    if r["left_race"] != "":
        verdict += f", left after round {r['left_race']}"
    return accuracy, delta, p, verdict


def _decision_cells(r):
    """The text of a row's MCB interval [low, high] and P(best), ("", "") without them."""
    if math.isnan(r.get("mcb_low", math.nan)):
        return "", ""
    return f"[{100 * r['mcb_low']:+.2f}, {100 * r['mcb_high']:+.2f}]", f"{r['p_best']:.3f}"


def format_table(rows):
    """The table printed at the end of a study."""
    dims = _dims(rows)
    decided = any("p_best" in r for r in rows)
    lines = [f"{'trial':>5}  {'lambda':>10}  " + "".join(f"{k:>11}  " for k in dims)
             + f"{'val accuracy (mean ± std, n)':<30} {'Δ vs best [95% CI]':<26} {'p (Holm)':>9}  "
             + (f"{'MCB [interval]':<18} {'P(best)':>7}  " if decided else "") + "verdict"]
    for r in rows:
        accuracy, delta, p, verdict = _cells(r, width="6")
        interval, chance = _decision_cells(r)
        lines.append(f"{r['trial']:>5}  {r[LAM]:>10.3g}  " + "".join(f"{str(r[k]):>11}  " for k in dims)
                     + f"{accuracy:<30} {delta:<26} {p:>9}  "
                     + (f"{interval:<18} {chance:>7}  " if decided else "") + verdict)
    best = best_row(rows)
    if best is not None:
        settings = ", ".join([f"lambda {best[LAM]:.4g}"] + [f"{k} {best[k]}" for k in dims])
        lines.append(f"best: trial {best['trial']}, {settings}, validation accuracy "
                     f"{100 * best['mean_val_accuracy']:.2f} ± {100 * best['std_val_accuracy']:.2f} % "
                     f"({best['replicates']} replicates)")
    return "\n".join(lines)


def markdown_table(rows, title="", notes=()):
    """The table of :func:`format_table` in Markdown, the best point said first and its row in bold: a study run's
    description.

    Parameters
    ----------
    rows : list of dict, from :func:`trials_table`
    title : str, a heading line, e.g. the study's kind and name
    notes : lines said after the best point, e.g. :func:`notes` (the best set, the race's end, the compute)

    Returns
    -------
    str, at most ``MAX_DESCRIPTION`` characters (MLflow's limit for a tag); rows that do not fit are
    left out, with a line saying how many and where they are (``trials.csv``)
    """
    dims = _dims(rows)
    lines = [f"### {title}", ""] if title else []
    best = best_row(rows)
    if best is not None:
        settings = ", ".join([f"λ = {best[LAM]:.4g}"] + [f"{k} = {best[k]}" for k in dims])
        lines += [f"**Best: trial {best['trial']}, {settings}: validation accuracy "
                  f"{100 * best['mean_val_accuracy']:.2f} ± {100 * best['std_val_accuracy']:.2f} % "
                  f"({best['replicates']} replicates).**", ""]
    lines += [*(f"{note}  " for note in notes), ""] if notes else []
    decided = any("p_best" in r for r in rows)
    lines += [f"{len(rows)} points; Δ and its 95% interval: paired difference to the best, in accuracy points; "
              "p: one-sided paired t-test, Holm-adjusted" + ("; MCB: simultaneous interval for the point's mean "
                                                             "minus the best other's, in points; P(best): Bayesian "
                                                             "bootstrap over replicates." if decided else "."), ""]
    lines += ["| trial | λ | " + "".join(f"{k} | " for k in dims) + "val accuracy (mean ± std, n) | "
              "Δ vs best [95% CI] | p (Holm) | " + ("MCB [interval] | P(best) | " if decided else "") + "verdict |",
              "|" + "---:|" * (2 + len(dims)) + "---|---|---:|" + ("---|---:|" if decided else "") + "---|"]
    body = []
    for r in rows:
        accuracy, delta, p, verdict = _cells(r)
        cells = [str(r["trial"]), f"{r[LAM]:.3g}", *(str(r[k]) for k in dims), accuracy, delta, p,
                 *(_decision_cells(r) if decided else ()), verdict.replace("|", "\\|")]
        if r["verdict"] == "best":
            cells = [f"**{c}**" if c else c for c in cells]
        body.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines + body)
    while len(text) > MAX_DESCRIPTION and body:
        body.pop()
        text = "\n".join(lines + body + ["", f"*{len(rows) - len(body)} more rows in trials.csv*"])
    return text


def compute_used(study, config, n_train):
    """Network updates the study trained, in full trainings and as a fraction of an exhaustive study.

    Counts the finished trials (:func:`queue.finished_trials`): a completed
    one's networks at its point's schedule, a pruned one's up to the cycle it
    was pruned after (``pruning.LAST_RUNG``), a diverged one's up to the step
    of its reason; training lost with a killed worker is not counted. A full
    training is one network at the grid's longest schedule; the exhaustive
    study trains every point x the replicate budget (``max_seeds`` in a race,
    else ``n_seeds``).

    Returns
    -------
    decision.Compute
    """
    study_cfg = config.study
    updates = 0
    finished = queue.finished_trials(study)
    for t in finished:
        schedule = point_train_config(config.train, t.params, n_train)
        networks = len(t.user_attrs.get(NEW_REPLICATES, range(study_cfg.n_seeds)))
        updates += networks * _steps_trained(t, schedule)
    if study_cfg.kind == "fine":
        points = study_cfg.points
    else:
        points = [t.params for t in latest_trials(finished).values()]
    steps = [point_train_config(config.train, params, n_train).total_steps for params in points]
    budget = study_cfg.max_seeds if study_cfg.kind == "fine" and study_cfg.race else study_cfg.n_seeds
    return decision.compute_used(updates, max(steps, default=0), budget * sum(steps))


def _steps_trained(trial, schedule):
    """Update steps each network of ``trial`` trained, at its point's ``schedule`` (a TrainConfig)."""
    if trial.state == TrialState.COMPLETE:
        return schedule.total_steps
    if trial.state == TrialState.PRUNED:
        return int(trial.user_attrs.get(pruning.LAST_RUNG, 0)) * 2 * schedule.n_s
    found = re.search(r"update step (\d+)", trial.user_attrs.get("reason", ""))
    return int(found.group(1)) if found else 0


def notes(study, rows, compute, study_cfg):
    """Lines said after the table: the best set, the race's end and winner, how P(best) was drawn, the compute."""
    said = []
    members = [r for r in rows if r.get("best_set")]
    if members:
        dims = _dims(rows)
        said.append(f"best set (MCB, simultaneous {100 * (1 - study_cfg.alpha):g}%): "
                    + "; ".join(f"trial {r['trial']} ({_label(r, dims)}, P(best) {r['p_best']:.3f})" for r in members))
    end = race_end(study)
    if end:
        rule = ("KN screening, MCB stop" if end["rule"] == "kn" else "Holm-corrected t-tests")
        said.append(f"race ({rule}; δ {100 * study_cfg.delta:g} points, α {study_cfg.alpha:g}): stopped after "
                    f"round {end['round']} at {end['replicates']} replicates, {end['reason']}; "
                    f"{len(end['points'])} point(s) left, the winner is the largest mean among them")
    if any("p_best" in r for r in rows):
        said.append(f"P(best): Bayesian bootstrap over replicates, {decision.P_BEST_DRAWS} draws, "
                    f"numpy seed {decision.P_BEST_SEED}")
    said.append(f"compute: {compute.updates:,} network updates = {compute.full_equivalents:.1f} full trainings "
                f"= {100 * compute.fraction:.1f}% of an exhaustive study")
    return said


# The study run's metrics of its compute (decision.Compute's updates, full_equivalents, fraction).
COMPUTE_METRICS = ("network_updates", "full_training_equivalents", "fraction_of_exhaustive")


def study_metrics(rows, compute):
    """The study run's metrics of its decision and compute."""
    best = best_row(rows)
    return {**dict(zip(COMPUTE_METRICS, (compute.updates, compute.full_equivalents, compute.fraction))),
            "best_set_size": sum(bool(r.get("best_set")) for r in rows),
            "p_best_of_winner": best["p_best"] if best is not None and "p_best" in best else None}


def study_figures(study, rows, kind):
    """Figures logged on the study run: lambda ± 3σ (one per schedule of the grid), the paired differences,
    the race of a fine study, and Optuna's own."""
    figures = {}
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    if not complete:
        return figures
    dims = _dims(rows)
    groups = {}
    for r in complete:
        groups.setdefault(tuple(r[k] for k in dims), []).append(r)
    for key, group in groups.items():
        suffix = "".join(f"_{k}_{v}" for k, v in zip(dims, key))
        figures[f"lambda_search{suffix}"] = plots.lambda_search(
            [r["lam"] for r in group], [r["mean_val_accuracy"] for r in group],
            [r["std_val_accuracy"] for r in group], log_x=kind == "coarse",
            best_lam=next((r["lam"] for r in group if r["verdict"] == "best"), None),
            title=f"{kind} search{suffix.replace('_', ' ')}: mean validation accuracy ± 3σ",
            tied=[r["verdict"] == "tied" for r in group])
    if dims:
        figures["lambda_search"] = lambda_series_figure(groups, dims, kind)
    figures["paired_differences"] = plots.paired_differences(
        [_label(r, dims) for r in complete], [r["delta_vs_best"] for r in complete],
        [r["ci_low"] for r in complete], [r["ci_high"] for r in complete], [r["verdict"] for r in complete],
        title=f"{kind} search: paired difference to the best, 95% interval")
    if kind == "fine" and max(r["rounds"] for r in complete) > 1:
        figures["race"] = race_figure(study, rows, dims)
        figures["race_mcb"] = race_looks_figure(study, rows, dims)
    figures.update(plots.optuna_figures(study))
    return figures


def lambda_series_figure(groups, dims, kind):
    """λ ± 3σ of every schedule of the grid on one axes, the best set ringed, replicate counts written."""
    series, winner = [], None
    for key, group in groups.items():
        label = ", ".join(f"{k} {v}" for k, v in zip(dims, key))
        series.append((label, [r["lam"] for r in group], [r["mean_val_accuracy"] for r in group],
                       [r["std_val_accuracy"] for r in group], [r["replicates"] for r in group],
                       [bool(r.get("best_set")) for r in group]))
        winner = next(((label, r["lam"]) for r in group if r["verdict"] == "best"), winner)
    return plots.lambda_search_series(series, winner, f"{kind} search: mean validation accuracy ± 3σ")


def _label(row, dims):
    return ", ".join([f"λ {row[LAM]:.3g}"] + [f"{k} {row[k]}" for k in dims])


def race_figure(study, rows, dims):
    """Each point's mean after every round it took part in (see :func:`plots.race`)."""
    history = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        history.setdefault(t.user_attrs.get(POINT, t.number), []).append((t.user_attrs.get(ROUND, 1), t.value))
    rows = [r for r in rows if r["point"] in history]
    series = [sorted(history[r["point"]]) for r in rows]
    return plots.race([_label(r, dims) for r in rows], [[x for x, _ in s] for s in series],
                      [[y for _, y in s] for s in series],
                      [r["left_race"] if r["left_race"] != "" else None for r in rows])


def race_looks_figure(study, rows, dims):
    """The points alive at each look (round) of a race with their MCB intervals among them then
    (see :func:`plots.race_looks`), at the alpha and delta the race recorded."""
    end = race_end(study)
    alpha, delta = end.get("alpha", study.user_attrs.get("alpha", 0.05)), end.get("delta")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    labels = {r["point"]: _label(r, dims) for r in rows}
    looks, intervals = [], []
    for round_ in range(1, max((t.user_attrs.get(ROUND, 1) for t in complete), default=0) + 1):
        alive = {_point(t): replicate_accuracies(t) for t in complete if t.user_attrs.get(ROUND, 1) == round_}
        alive = {p: a for p, a in alive.items() if a and p in labels}
        if not alive:
            continue
        looks.append(max(len(a) for a in alive.values()))
        intervals.append({labels[p]: (i.low, i.high) for p, i in decision.mcb(alive, alpha).items()})
    return plots.race_looks(looks, list(labels.values()), intervals, delta)


def trial_records(outcome, config, splits):
    """What the tracking layer logs for the recorded trials of one population: a run per trial, and
    under it a run per replicate trained."""
    records = []
    for result in outcome.results:
        if not result.recorded:
            continue
        seeds = []
        for run in result.runs:
            block = outcome.blocks[run.block]
            seeds.append(tracking.SeedRecord(
                seed=run.replicate, val_accuracy=run.val_accuracy, history=block.training.history,
                member=run.member, val_true=block.val_true[run.member], val_pred=block.val_pred[run.member],
                class_names=splits.label_names, status=run.status, eval_times=tuple(block.eval_times),
                started=block.started, ended=member_ended(block, run.member),
                inputs=tracking.describe_block(splits, config.data, run.replicate)
                if isinstance(splits, Folds) else None))
        blocks = [outcome.blocks[run.block] for run in result.runs]
        records.append(tracking.TrialRecord(
            number=result.number, lam=result.lam, state=result.state, mean=result.mean, std=result.std,
            seeds=seeds, params=trial_params(result.params, config, splits.n_train), reason=result.reason,
            tags={"point": result.point, "round": result.round},
            seed_accuracies=dict(zip(result.replicates, result.accuracies)),
            searched=searched(result.params),
            started=min((b.started for b in blocks), default=None),
            ended=max((seed.ended for seed in seeds), default=None)))
    return records


def member_ended(block, member):
    """When a member of ``block`` stopped training: the time of its last evaluation point, which a member
    of a shorter schedule or a pruned one reaches before the block ends (the block's end if unknown)."""
    values = block.training.history.metrics["val_accuracy"][:, member]  # (P,), NaN once it stopped
    measured = np.flatnonzero(np.isfinite(values))
    if not measured.size or len(block.eval_times) != values.size:
        return block.ended
    return min(block.eval_times[measured[-1]], block.ended)


def trial_params(params, config, n_train):
    """A trial run's params: the study's protocol with the point's own schedule (its ``n_s``, ``cycles``,
    ``augment``), then the point's searched dimensions."""
    point = point_train_config(config.train, params, n_train)
    return {**protocol_params(config), "n_s": point.n_s, "cycles": point.cycles, "augment": point.augment,
            **params}


def searched(params):
    """The point's searched dimensions besides lambda, e.g. {"n_s_epochs": 4}: what names its trial run."""
    return {name: value for name, value in params.items() if name != LAM}


def log_lost_trials(study, config, parent, n_train):
    """Log again, from the study, the finished trials whose MLflow runs died with the process writing them.

    Their curves are lost; the trial run gets the values Optuna holds and the
    tag curves=lost. A trial counts as lost when it has no trial run and the
    process that told it is dead (:func:`processes.dead`, silent since it told the trial).
    """
    finished = queue.finished_trials(study)
    logged = tracking.logged_trials(config.study.experiment, config.study.name)
    lost = [t for t in finished if t.number not in logged and t.datetime_complete is not None
            and processes.dead(t.system_attrs.get(queue.WORKER_ATTR), t.datetime_complete.timestamp(),
                               config.timing.grace_seconds)]
    parent.log_trials([lost_record(t, config, n_train) for t in lost])


def lost_record(frozen, config, n_train):
    """A TrialRecord, without seed runs, of a finished trial as the study holds it."""
    return tracking.TrialRecord(
        number=frozen.number, lam=frozen.params[LAM], state=frozen.state.name,
        mean=frozen.value if frozen.value is not None else float("nan"),
        std=frozen.user_attrs.get("val_accuracy_std", float("nan")),
        params=trial_params(frozen.params, config, n_train), reason=frozen.user_attrs.get("reason", ""),
        tags={"curves": "lost", "point": frozen.user_attrs.get(POINT, frozen.number),
              "round": frozen.user_attrs.get(ROUND, 1)},
        seed_accuracies=replicate_accuracies(frozen), searched=searched(frozen.params))
