"""Coarse and fine lambda searches as Optuna studies.

A trial is one lambda; its value is the mean validation accuracy of
``n_seeds`` networks trained from different initial weights on the same
mini-batch order. Several trials train together as one population.

- coarse, ``random`` sampler: the first ``n_trials`` draws of a seeded
  log-uniform ``RandomSampler`` over [lam_min, lam_max] are enqueued up front
  (draw k always lands in slot k), so resumed and distributed studies try
  exactly the lambdas an uninterrupted run would;
- coarse, ``tpe`` sampler: trials are asked population by population;
- fine, ``grid`` sampler: the grid points are enqueued up front. A grid given
  as ``--grid`` is used as is; otherwise it is derived from the coarse study
  (see :func:`derive_grid`).

Workers claim enqueued trials atomically (:mod:`clrsearch.storage`), so with
several workers every point is evaluated once.
"""

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import optuna
from optuna.trial import TrialState

from . import network, storage
from .config import Experiment, SearchConfig
from .errors import UsageError
from .train import train

LAM = "lam"  # the name of lambda in Optuna


@dataclass
class Timer:
    """Wall time per activity, in seconds."""

    seconds: dict = field(default_factory=dict)

    def add(self, name, seconds):
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds


# ----------------------------------------------------------------------------- study


def create_or_load(config: SearchConfig, study_storage, grid=None):
    """The study of ``config``, created and filled with its queued points if needed.

    Runs under :func:`storage.study_lock`, so concurrent workers create it once.
    """
    study_cfg = config.study
    try:
        study = optuna.create_study(study_name=study_cfg.name, storage=study_storage, direction="maximize",
                                    sampler=make_sampler(config, grid), pruner=make_pruner(config),
                                    load_if_exists=True)
    except optuna.exceptions.OptunaError as error:
        raise UsageError(f"cannot open study {study_cfg.name!r}: {error}") from None
    attrs = study.user_attrs
    if not attrs:
        study.set_user_attr("kind", study_cfg.kind)
        study.set_user_attr("sampler", study_cfg.sampler)
        study.set_user_attr("seeds", list(study_cfg.seeds))
        study.set_user_attr("protocol", protocol_params(config))
        if grid:
            study.set_user_attr("grid", list(grid))
    else:
        _check_same_study(study, config, grid)
    if study_cfg.sampler == "random":
        storage.enqueue_missing(study, planned_lambdas(study_cfg))
    elif study_cfg.sampler == "grid":
        storage.enqueue_missing(study, grid)
    return study


def _check_same_study(study, config, grid):
    """A study resumed under the same name must keep its kind, sampler, seeds, protocol and grid."""
    attrs, study_cfg = study.user_attrs, config.study
    wanted = {"kind": study_cfg.kind, "sampler": study_cfg.sampler, "seeds": list(study_cfg.seeds),
              "protocol": protocol_params(config)}
    if grid:
        wanted["grid"] = list(grid)
    for key, value in wanted.items():
        if attrs.get(key) != value:
            raise UsageError(f"study {study.study_name!r} already exists with another {key} "
                             f"({attrs.get(key)!r}, not {value!r}); pick a new --study-name or the same settings")


def make_sampler(config, grid=None):
    study_cfg = config.study
    if study_cfg.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=study_cfg.seed, constant_liar=True)
    if study_cfg.sampler == "grid":
        return optuna.samplers.GridSampler({LAM: list(grid)}, seed=study_cfg.seed)
    return optuna.samplers.RandomSampler(seed=study_cfg.seed)


def make_pruner(config):
    name = config.study.pruner
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.train.cycles)
    return optuna.pruners.NopPruner()


def lam_distribution(study_cfg):
    return optuna.distributions.FloatDistribution(study_cfg.lam_min, study_cfg.lam_max, log=True)


def planned_lambdas(study_cfg):
    """The first ``n_trials`` lambdas a seeded RandomSampler draws, log-uniform in [lam_min, lam_max].

    Draw k does not depend on ``n_trials``, so raising it extends the list.
    """
    scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=study_cfg.seed))
    distribution = lam_distribution(study_cfg)
    return [scratch.ask({LAM: distribution}).params[LAM] for _ in range(study_cfg.n_trials)]


def derive_grid(coarse, points):
    """A linear grid of ``points`` lambdas from the best coarse trials.

    Rule: take the three best completed coarse trials by mean validation
    accuracy; the grid runs linearly from 0 to twice the largest of their
    lambdas, rounded to two significant digits (the original study: best
    coarse values near 1e-3 gave the grid 0, 0.001, ..., 0.007).
    """
    done = [t for t in coarse.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not done:
        raise UsageError(f"coarse study {coarse.study_name!r} has no completed trials; run "
                         f"python -m clrsearch.coarse first, or give the grid with --grid 0,0.001,0.002")
    best = sorted(done, key=lambda t: t.value, reverse=True)[:3]
    top = 2 * max(t.params[LAM] for t in best)
    step = float(f"{top / (points - 1):.2g}") if points > 1 else top
    return tuple(round(i * step, 12) for i in range(points))


def protocol_params(config):
    """What makes two trials comparable: data, training protocol, seeds."""
    d, t = config.data, config.train
    return {"split": d.split, "val_size": d.val_size, "split_seed": d.split_seed, "n_train": d.n_train,
            "n_batch": t.n_batch, "cycles": t.cycles, "n_s": t.n_s, "eta_min": t.eta_min, "eta_max": t.eta_max,
            "clr_mode": t.clr_mode, "gamma": t.gamma, "hidden": t.hidden, "dtype": t.dtype,
            "shuffle_seed": t.shuffle_seed}


# ----------------------------------------------------------------------------- trials


def finished_trials(study):
    """Trials that count as done: completed, pruned, or failed for a reason of their own (e.g. diverged)."""
    return [t for t in study.get_trials(deepcopy=False) if storage.is_final(t)]


def next_trials(study, config):
    """Claim the next population of trials for this process; [] when nothing is left to start.

    Runs under :func:`storage.study_lock`: WAITING trials (enqueued points,
    copies of dead workers' trials) are claimed first; an adaptive sampler is
    then asked for as many new trials as the study still lacks.
    """
    limit = config.study.trials_per_population
    with storage.study_lock(storage.url_of(study)):
        claimed = storage.claim_waiting(study, limit)
        if config.study.sampler in ("random", "grid"):
            return claimed
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))) - len(claimed)
        missing = config.study.n_trials - len(finished_trials(study)) - running - len(claimed)
        return claimed + storage.ask(study, max(0, min(limit - len(claimed), missing)))


def others_running(study):
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


@dataclass
class PopulationOutcome:
    """One population: its trials, the training result and the final validation predictions."""

    trials: list  # optuna Trials, in population order
    lams: list  # lambda of each trial
    result: object  # clrsearch.train.TrainResult
    val_pred: np.ndarray  # (K, N_val)
    states: list  # per trial: "COMPLETE" | "PRUNED" | "FAIL"
    reasons: list  # per trial: why pruned or failed


def suggest_lam(trial, study_cfg, grid=None):
    """Lambda of a trial: log-uniform for the coarse study, the grid's range for the fine one."""
    if grid:
        return trial.suggest_float(LAM, min(grid), max(grid))
    return trial.suggest_float(LAM, study_cfg.lam_min, study_cfg.lam_max, log=True)


def train_population(trials, config: SearchConfig, splits, grid=None, progress=None, timer=None):
    """Train every seed of every trial as one population; report cycle ends to the pruner."""
    n_seeds = config.study.n_seeds
    lams = [suggest_lam(t, config.study, grid) for t in trials]
    member_lams = np.repeat(lams, n_seeds)  # (K,)
    member_seeds = np.tile(config.study.seeds, len(trials))  # (K,)
    pruned = {}

    def on_eval(point):
        if not point.cycle_end or config.study.pruner == "none":
            return []
        stop = []
        cycle = round(point.step / (2 * config.train.n_s))
        for i, trial in enumerate(trials):
            members = range(i * n_seeds, (i + 1) * n_seeds)
            if i in pruned or not any(m in point.active for m in members):
                continue
            accuracy = float(np.nanmean(point.metrics["val_accuracy"][list(members)]))
            try:
                trial.report(accuracy, step=cycle)
                prune = cycle < config.train.cycles and trial.should_prune()
            except optuna.exceptions.UpdateFinishedTrialError:  # another worker took it for dead
                pruned[i] = "taken over by another worker"
                stop.extend(members)
                continue
            if prune:
                pruned[i] = f"pruned after cycle {cycle}: validation accuracy {100 * accuracy:.2f}%"
                stop.extend(members)
        return stop

    started = time.perf_counter()
    result = train(splits.train, splits.val, config.train, member_lams, member_seeds, on_eval=on_eval,
                   progress=progress)
    evaluation = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore"):
        val_pred = network.predict(result.params, splits.val.X)  # (K, N_val)
    if timer is not None:
        timer.add("evaluation", result.eval_seconds + time.perf_counter() - evaluation)
        timer.add("training", evaluation - started - result.eval_seconds)

    states, reasons = [], []
    for i in range(len(trials)):
        members = range(i * n_seeds, (i + 1) * n_seeds)
        diverged = [m for m in members if result.status[m] == "diverged"]
        if diverged:
            m = diverged[0]
            states.append("FAIL")
            reasons.append(f"diverged: NaN or inf in the cost at update step {result.stopped_at[m]} "
                           f"(seed {member_seeds[m]}, eta_max {config.train.eta_max:g})")
        elif i in pruned:
            states.append("PRUNED")
            reasons.append(pruned[i])
        else:
            states.append("COMPLETE")
            reasons.append("")
    return PopulationOutcome(list(trials), lams, result, val_pred, states, reasons)


def tell(study, outcome: PopulationOutcome, splits, n_seeds):
    """Record every trial of a population in the study.

    Returns per trial (mean, std, accuracies), or None for a trial that is no
    longer this worker's: another worker took it for dead (its heartbeat
    stalled past the grace period) and a copy of it runs or ran elsewhere.
    """
    with storage.study_lock(storage.url_of(study)):
        return [_tell_one(study, outcome, i, trial, splits, n_seeds) for i, trial in enumerate(outcome.trials)]


def _tell_one(study, outcome, i, trial, splits, n_seeds):
    members = list(range(i * n_seeds, (i + 1) * n_seeds))
    accuracies = [float(np.mean(outcome.val_pred[m] == splits.val.y)) for m in members]
    mean, std = float(np.mean(accuracies)), float(np.std(accuracies))
    state = outcome.states[i]
    try:
        trial.set_user_attr("val_accuracies", accuracies)
        trial.set_user_attr("val_accuracy_std", std)
        if state == "COMPLETE":
            study.tell(trial, mean)
        else:
            trial.set_user_attr("reason", outcome.reasons[i])
            trial.set_user_attr("final_failure", state == "FAIL")
            study.tell(trial, state=TrialState.PRUNED if state == "PRUNED" else TrialState.FAIL)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
        if study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
            raise
        return None
    return mean, std, accuracies


# ----------------------------------------------------------------------------- summaries


def trials_table(study):
    """One row per finished trial, sorted by lambda."""
    rows = []
    for t in finished_trials(study):
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


def final_experiment(config: SearchConfig, lam):
    """The final model of a fine study: best lambda, ``final_cycles`` cycles, curves per epoch."""
    final_train = replace(config.train, cycles=config.study.final_cycles, evals_per_cycle=None,
                          eval_train_size=None, snapshots=True)
    return Experiment(config.data, final_train, lam=float(lam), seed=config.study.first_seed)
