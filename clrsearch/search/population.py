"""A population: several trials trained together, every seed of every trial one member.

Trial i of a population of T trials owns the members ``i * n_seeds ..
(i + 1) * n_seeds - 1``; all members share one mini-batch order. At each
cycle end a pruner, when the study has one, judges every trial on the mean
validation accuracy of its members. Results are recorded in the study under
the study lock, as :class:`TrialResult`\\ s.
"""

import time
from dataclasses import dataclass, replace

import numpy as np
import optuna
from optuna.trial import TrialState

from ..config import SearchConfig
from ..nn import network
from ..nn.trainer import TrainResult, train
from . import queue
from .study import LAM


@dataclass(frozen=True)
class TrialResult:
    """One trial of a population, as trained and as recorded in the study."""

    number: int  # Optuna trial number
    lam: float
    state: str  # "COMPLETE" | "PRUNED" | "FAIL"
    reason: str  # why pruned or failed; "" when complete
    members: range  # columns of the trial's seeds in the population
    accuracies: tuple  # final validation accuracy per seed, fractions 0..1
    recorded: bool = True  # False: another worker took the trial for dead and its copy runs elsewhere

    @property
    def mean(self):
        return float(np.mean(self.accuracies))

    @property
    def std(self):
        return float(np.std(self.accuracies))


@dataclass
class PopulationOutcome:
    """One trained population: its trials, the training result and the final validation predictions."""

    trials: list  # optuna Trials, in population order
    results: list  # TrialResult per trial, in population order
    training: TrainResult
    val_pred: np.ndarray  # (K, N_val)


def suggest_lam(trial, study_cfg):
    """Lambda of a trial: log-uniform for the coarse study, the grid's range for the fine one."""
    if study_cfg.kind == "fine":
        return trial.suggest_float(LAM, min(study_cfg.grid), max(study_cfg.grid))
    return trial.suggest_float(LAM, study_cfg.lam_min, study_cfg.lam_max, log=True)


class _Pruning:
    """``on_eval`` of the trainer: reports each trial's mean accuracy at cycle ends and stops pruned trials."""

    def __init__(self, trials, config: SearchConfig):
        self.trials, self.config = trials, config
        self.n_seeds = config.study.n_seeds
        self.pruned = {}  # trial index -> reason

    def __call__(self, point):
        if not point.cycle_end or self.config.study.pruner == "none":
            return []
        stop = []
        cycle = round(point.step / (2 * self.config.train.n_s))
        for i, trial in enumerate(self.trials):
            members = range(i * self.n_seeds, (i + 1) * self.n_seeds)
            if i in self.pruned or not any(m in point.active for m in members):
                continue
            accuracy = float(np.nanmean(point.metrics["val_accuracy"][list(members)]))
            try:
                trial.report(accuracy, step=cycle)
                prune = cycle < self.config.train.cycles and trial.should_prune()
            except optuna.exceptions.UpdateFinishedTrialError:  # another worker took it for dead
                self.pruned[i] = "taken over by another worker"
                stop.extend(members)
                continue
            if prune:
                self.pruned[i] = f"pruned after cycle {cycle}: validation accuracy {100 * accuracy:.2f}%"
                stop.extend(members)
        return stop


def train_population(trials, config: SearchConfig, splits, progress=None, timer=None):
    """Train every seed of every trial as one population; report cycle ends to the pruner.

    Returns
    -------
    PopulationOutcome
    """
    n_seeds = config.study.n_seeds
    lams = [suggest_lam(t, config.study) for t in trials]
    member_lams = np.repeat(lams, n_seeds)  # (K,)
    member_seeds = np.tile(config.study.seeds, len(trials))  # (K,)
    pruning = _Pruning(trials, config)

    started = time.perf_counter()
    result = train(splits.train, splits.val, config.train, member_lams, member_seeds, on_eval=pruning,
                   progress=progress)
    evaluation = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore"):
        val_pred = network.predict(result.params, splits.val.X)  # (K, N_val)
    if timer is not None:
        timer.add("evaluation", result.eval_seconds + time.perf_counter() - evaluation)
        timer.add("training", evaluation - started - result.eval_seconds)

    results = []
    for i, (trial, lam) in enumerate(zip(trials, lams)):
        members = range(i * n_seeds, (i + 1) * n_seeds)
        diverged = [m for m in members if result.status[m] == "diverged"]
        if diverged:
            m = diverged[0]
            state, reason = "FAIL", (f"diverged: NaN or inf in the cost at update step {result.stopped_at[m]} "
                                     f"(seed {member_seeds[m]}, eta_max {config.train.eta_max:g})")
        elif i in pruning.pruned:
            state, reason = "PRUNED", pruning.pruned[i]
        else:
            state, reason = "COMPLETE", ""
        accuracies = tuple(float(np.mean(val_pred[m] == splits.val.y)) for m in members)
        results.append(TrialResult(trial.number, lam, state, reason, members, accuracies))
    return PopulationOutcome(list(trials), results, result, val_pred)


def tell(study, outcome: PopulationOutcome):
    """Record every trial of a population in the study; returns the TrialResults, ``recorded`` set.

    A trial is not recorded when it is no longer this worker's: another
    worker took it for dead (its heartbeat stalled past the grace period) and
    a copy of it runs or ran elsewhere.
    """
    with queue.study_lock(queue.url_of(study)):
        return [_tell_one(study, trial, result) for trial, result in zip(outcome.trials, outcome.results)]


def _tell_one(study, trial, result: TrialResult):
    try:
        trial.set_user_attr("val_accuracies", list(result.accuracies))
        trial.set_user_attr("val_accuracy_std", result.std)
        if result.state == "COMPLETE":
            study.tell(trial, result.mean)
        else:
            trial.set_user_attr("reason", result.reason)
            trial.set_user_attr("final_failure", result.state == "FAIL")
            study.tell(trial, state=TrialState.PRUNED if result.state == "PRUNED" else TrialState.FAIL)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
        if study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
            raise
        return replace(result, recorded=False)
    return result
