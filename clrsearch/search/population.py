"""Populations: the trials a worker claimed, trained together replicate by replicate, and told to the study.

A trial trains the replicates ``new_replicates`` of its point (0 .. n_seeds - 1
in the first round, more in later rounds of a race). Replicate r starts from
init seed ``first_seed + r``; under the ``blocks`` protocol (the default) it
is a *block*: it also fixes the mini-batch order (shuffle seed
``train.shuffle_seed + r``, the flips of ``augment`` with it) and the
validation fold (fold ``r mod F`` of :func:`clrsearch.data.load_folds`
validates, the other images train), identically for every trial of the
study, so that trials can be compared replicate by replicate
(:mod:`.compare`) and the race ranks points on F validation sets, not one.
Under ``paired`` replicate r fixes the init and the order on the one fixed
split; under ``init`` (the original report's seeds) all replicates share one
order and one split. The claimed trials train as one population, in which
the members of replicate r form one stream of mini-batches, over the images
of its block (see :mod:`clrsearch.nn.trainer`); a member trains exactly as it
would in a population of its replicate alone, and is scored on its block's
fold. Trials that differ in ``augment`` train in populations of their own.

With ``--pruner``, each trial of the first round is judged at its rungs (the
cycle ends before its last) by its replicates' mean validation accuracy
there, against the trials before it (:mod:`.pruning`); a pruned trial's
members leave the population at once. A population whose judgement needs a
trial lost with another worker is given back and trained again later.
"""

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import optuna
from optuna.trial import TrialState

from ..config import SearchConfig
from ..data import Folds
from ..nn import network
from ..nn.trainer import TrainResult, train
from . import pruning
from .compare import compare_to_best
from .queue import NEW_REPLICATES, POINT, ROUND, SLOT
from .study import (ACCURACIES, LAM, REPLICATES, latest_trials, point_train_config, replicate_accuracies,
                    suggest_params)


@dataclass(frozen=True)
class ReplicateRun:
    """One replicate of one trial: which block trained it, in which column, and how it ended."""

    replicate: int
    block: int  # index into PopulationOutcome.blocks
    member: int  # column of the block's population
    val_accuracy: float  # final, fraction 0..1
    status: str  # finished | diverged | stopped


@dataclass(frozen=True)
class TrialResult:
    """One trial of a population, as trained and as recorded in the study."""

    number: int  # Optuna trial number
    point: int  # the point of the study it evaluates (its slot in the first round)
    round: int  # round of the race, 1 for the first
    params: dict  # the point: lam, and any schedule dimension of the grid
    state: str  # "COMPLETE" | "PRUNED" | "FAIL"
    reason: str  # why pruned or failed; "" when complete
    runs: tuple  # ReplicateRun per replicate trained by this trial
    prior: dict = field(default_factory=dict)  # replicate -> accuracy of the point's earlier rounds
    recorded: bool = True  # False: another worker took the trial for dead and its copy runs elsewhere, or the
    #                        population was given back (see .pruning) and the trial's copy waits to be trained

    @property
    def lam(self):
        return self.params[LAM]

    @property
    def replicates(self):
        """Every replicate of the point so far, sorted."""
        return sorted({**self.prior, **{run.replicate: run.val_accuracy for run in self.runs}})

    @property
    def accuracies(self):
        """Final validation accuracies aligned with ``replicates``."""
        values = {**self.prior, **{run.replicate: run.val_accuracy for run in self.runs}}
        return [values[r] for r in self.replicates]

    @property
    def mean(self):
        return float(np.mean(self.accuracies))

    @property
    def std(self):
        return float(np.std(self.accuracies))


@dataclass
class Block:
    """One population of the claimed trials: who its members are and how they trained."""

    members: list  # (trial index, replicate) per member
    training: TrainResult
    val_pred: np.ndarray  # (K, N_val) final predictions
    val_true: np.ndarray  # (K, N_val) labels of each member's validation images (its block's fold)
    train_configs: list  # TrainConfig per member
    started: float = 0.0  # wall-clock time (s since the epoch) when the block began training
    ended: float = 0.0  # ... and when its last evaluation was done
    eval_times: list = field(default_factory=list)  # wall-clock time of each evaluation point of its history
    seconds: dict = field(default_factory=dict)  # "training" and "evaluation" seconds it took


@dataclass
class PopulationOutcome:
    """The claimed trials after training: their results and the blocks that trained them."""

    trials: list  # optuna Trials, in claim order
    results: list  # TrialResult per trial
    blocks: list = field(default_factory=list)


@dataclass(frozen=True)
class _Claimed:
    """What a claimed trial trains: its point, its replicates, its protocol."""

    trial: object  # optuna Trial
    point: int
    round: int
    params: dict
    replicates: tuple
    train_config: object  # TrainConfig of the point


def _claimed(trials, config, n_train):
    claimed = []
    for trial in trials:
        attrs = trial.user_attrs
        params = suggest_params(trial, config.study)
        replicates = tuple(attrs.get(NEW_REPLICATES, range(config.study.n_seeds)))
        claimed.append(_Claimed(trial, attrs.get(POINT, trial.number), attrs.get(ROUND, 1), params, replicates,
                                point_train_config(config.train, params, n_train)))
    return claimed


def plan_blocks(claimed, config: SearchConfig):
    """The blocks to train: lists of (trial index, replicate), one list per population.

    One block holds every (trial, replicate), trial by trial; trials that
    differ in ``augment`` train in blocks of their own (the trainer's streams
    share one augmentation).
    """
    by_block = {}
    for i, c in enumerate(claimed):
        by_block.setdefault(c.train_config.augment, []).extend((i, r) for r in c.replicates)
    return [by_block[key] for key in sorted(by_block)]


def total_steps(trials, config: SearchConfig, n_train):
    """Update steps of training the claimed trials, block after block: the length of a progress bar."""
    claimed = _claimed(trials, config, n_train)
    return sum(max(claimed[i].train_config.total_steps for i, _ in block) for block in plan_blocks(claimed, config))


@dataclass(frozen=True)
class _Judge:
    """What the rungs of one population are judged with: the rule, and where the trials before each one are."""

    rule: pruning.PruningRule
    shared: object  # queue.TrialQueue
    config: SearchConfig
    n_train: int

    def prunes(self, claimed, rung, value):
        """Whether ``claimed``, of ``value`` at ``rung``, is pruned; waits for the trials before it (see .pruning)."""
        slot = claimed.trial.user_attrs.get(SLOT, claimed.trial.number)
        if slot + 1 < self.rule.warmup:  # fewer trials before it than the warm-up needs: nothing to wait for
            return False
        earlier = pruning.earlier_values(self.shared, slot, rung, lambda params: claimed.train_config
                                         == point_train_config(self.config.train, params, self.n_train))
        return self.rule.prunes(value, [value, *earlier.values()])


class _Pruning:
    """``on_eval`` of the trainer: reports each judged trial's accuracy at its cycle ends and stops pruned trials.

    At one evaluation point every judged trial is reported before any is
    judged, so that a worker waiting at a rung has its own values there.
    """

    def __init__(self, claimed, members, judge: _Judge, pruned, judged):
        self.claimed, self.members, self.judge = claimed, members, judge
        self.pruned = pruned  # trial index -> reason, shared across blocks
        self.judged = judged  # indices of the trials this block reports
        self.last_rung = {}  # trial index -> last rung reported
        self.stopped = set()  # trials told to the study as reporting no further rung

    def __call__(self, point):
        stop, reported, by_trial = [], [], {}
        for m, (i, _) in enumerate(self.members):
            if i in self.judged and i not in self.pruned:
                by_trial.setdefault(i, []).append(m)
        for i, members in by_trial.items():
            c = self.claimed[i]
            if not any(m in point.active for m in members):
                self._stopped_reporting(i)  # diverged: no further rung will come
                continue
            if not any(m in point.active and m in point.cycle_end_members for m in members):
                continue
            cycle = round(point.step / (2 * c.train_config.n_s))
            accuracy = float(np.nanmean(point.metrics["val_accuracy"][members]))
            try:
                c.trial.report(accuracy, step=cycle)
            except optuna.exceptions.UpdateFinishedTrialError:  # another worker took it for dead
                self.pruned[i] = "taken over by another worker"
                stop.extend(members)
                continue
            self.last_rung[i] = cycle
            if cycle < c.train_config.cycles:
                reported.append((i, cycle, accuracy))
        for i, cycle, accuracy in reported:
            if self.judge.prunes(self.claimed[i], cycle, accuracy):
                self.pruned[i] = f"pruned after cycle {cycle}: validation accuracy {100 * accuracy:.2f}%"
                self._stopped_reporting(i)
                stop.extend(by_trial[i])
        return stop

    def _stopped_reporting(self, i):
        """Tell the study that trial i reports no rung after its last one (see pruning.LAST_RUNG)."""
        if i in self.stopped:
            return
        self.stopped.add(i)
        try:
            self.claimed[i].trial.set_user_attr(pruning.LAST_RUNG, self.last_rung.get(i, 0))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # taken over by another worker: its copy reports for it


def train_population(shared, trials, config: SearchConfig, splits, progress=None, timer=None, threads=1):
    """Train the new replicates of every trial ``shared`` (a queue.TrialQueue) claimed, block by block.

    Returns
    -------
    PopulationOutcome, its results not yet told (see :func:`tell`)
    """
    claimed = _claimed(trials, config, splits.n_train)
    rule = pruning.rule_of(config.study.pruner)
    judge = None if rule is None else _Judge(rule, shared, config, splits.n_train)
    pruned = {}
    blocks = []
    judged = set()  # the rule judges each trial of the first round in the first block it trains in
    try:
        for members in plan_blocks(claimed, config):
            members = [(i, r) for i, r in members if i not in pruned]
            if not members:
                continue
            first = {i for i, _ in members if claimed[i].round == 1} - judged
            judged |= first
            blocks.append(_train_block(claimed, members, config, splits, progress, threads,
                                       _Pruning(claimed, members, judge, pruned, first) if first and judge else None))
            if timer is not None:
                for name, seconds in blocks[-1].seconds.items():
                    timer.add(name, seconds)
    except pruning.EarlierTrialLost as lost:
        return _given_back(shared, trials, claimed, lost)
    results = []
    for i, c in enumerate(claimed):
        runs = tuple(ReplicateRun(r, b, m, float(np.mean(block.val_pred[m] == block.val_true[m])),
                                  block.training.status[m])
                     for b, block in enumerate(blocks) for m, (j, r) in enumerate(block.members) if j == i)
        state, reason = _state(c, runs, blocks, pruned.get(i))
        results.append(TrialResult(c.trial.number, c.point, c.round, c.params, state, reason, runs))
    return PopulationOutcome(list(trials), results, blocks)


def _train_block(claimed, members, config, splits, progress, threads, pruning):
    """Train one population: member k is replicate r of trial i for (i, r) = members[k]."""
    study_cfg = config.study
    configs = []
    for i, r in members:
        train_config = claimed[i].train_config
        if study_cfg.replicates in ("paired", "blocks"):
            train_config = replace(train_config, shuffle_seed=train_config.shuffle_seed + r)
        configs.append(train_config)
    replicates = list(dict.fromkeys(r for _, r in members))
    data = block_data(splits, replicates)  # replicate -> the images it trains and validates on
    streams = {configs[k].shuffle_seed: data[r] for k, (_, r) in enumerate(members)}  # one stream per replicate
    lams = [claimed[i].params[LAM] for i, _ in members]  # (K,)
    seeds = [study_cfg.first_seed + r for _, r in members]  # (K,)
    schedule = configs[0] if all(c == configs[0] for c in configs) else tuple(configs)
    eval_times = []

    def on_eval(point):
        eval_times.append(time.time())
        return pruning(point) if pruning is not None else []

    wall_started = time.time()
    started = time.perf_counter()
    result = train(streams if isinstance(splits, Folds) else splits, schedule, lams, seeds,
                   on_eval=on_eval, progress=progress, threads=threads)
    evaluation = time.perf_counter()
    val_pred, val_true = _validation_predictions(result.params, members, data)
    seconds = {"evaluation": result.eval_seconds + time.perf_counter() - evaluation,
               "training": evaluation - started - result.eval_seconds}
    return Block(list(members), result, val_pred, val_true, configs, wall_started, time.time(), eval_times, seconds)


def block_data(splits, replicates):
    """replicate -> the images it trains and validates on: block r of ``splits`` when they are
    :class:`clrsearch.data.Folds`, else the one fixed split for every replicate."""
    if isinstance(splits, Folds):
        return {r: splits.block(r) for r in replicates}
    return {r: splits for r in replicates}


def _validation_predictions(params, members, data):
    """(K, N_val) final predictions of every member on its replicate's validation images, and their labels."""
    K, n_val = len(members), next(iter(data.values())).val.n
    val_pred, val_true = np.empty((K, n_val), dtype=np.int64), np.empty((K, n_val), dtype=np.int64)
    groups = {}  # id of a replicate's images -> (the images, the members validated on them)
    for k, (_, r) in enumerate(members):
        groups.setdefault(id(data[r]), (data[r], []))[1].append(k)
    for images, rows in groups.values():
        val = images.val
        X = val.columns() if hasattr(val, "columns") else val.X  # (D, N_val): a fold gathered once
        with np.errstate(over="ignore", invalid="ignore"):
            val_pred[rows] = network.predict({name: value[rows] for name, value in params.items()}, X)
        val_true[rows] = val.y
    return val_pred, val_true


def _given_back(shared, trials, claimed, lost):
    """Give the population back, its trials to be trained again after the copies of the lost ones."""
    shared.give_back(trials)
    reason = f"given back: {lost}"
    return PopulationOutcome(list(trials), [TrialResult(c.trial.number, c.point, c.round, c.params, "FAIL", reason, (),
                                                        recorded=False) for c in claimed])


def _state(claimed, runs, blocks, pruned_reason):
    diverged = [run for run in runs if run.status == "diverged"]
    if diverged:
        run = diverged[0]
        training = blocks[run.block].training
        return "FAIL", (f"diverged: NaN or inf in the cost at update step {training.stopped_at[run.member]} "
                        f"(replicate {run.replicate}, eta_max {claimed.train_config.eta_max:g})")
    if pruned_reason is not None:
        return "PRUNED", pruned_reason
    return "COMPLETE", ""


def tell(shared, outcome: PopulationOutcome, alpha=0.05):
    """Record every claimed trial in the study; returns the TrialResults with ``prior`` and ``recorded`` set.

    A trial's value is the mean accuracy over all replicates of its point so
    far (this round's and the earlier rounds' of a race); its user attrs
    ``p_vs_best`` and ``verdict`` compare it with the best of the points
    finished by then (the summary compares all of them again at the end). A
    trial is not recorded when it is no longer this worker's: another worker
    took it for dead (its heartbeat stalled past the grace period) and a copy
    of it runs or ran elsewhere.
    """
    with shared.lock():
        complete = shared.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        results = []
        for result in outcome.results:  # each with the accuracies of its point's latest earlier round
            latest = latest_trials(complete, result.round).get(result.point)
            results.append(replace(result, prior=replicate_accuracies(latest) if latest is not None else {}))
        comparisons = _compare_with_study(complete, results, alpha)
        return [_tell_one(shared, trial, result, comparisons.get(("new", result.point))) if result.recorded
                else result for trial, result in zip(outcome.trials, results)]


def _compare_with_study(complete, results, alpha):
    """Comparisons of the completed points: the latest accuracies of the ``complete`` trials, these results
    in their place."""
    entries = {("study", point): replicate_accuracies(t) for point, t in latest_trials(complete).items()
               if t.user_attrs.get(REPLICATES)}
    for result in results:
        entries.pop(("study", result.point), None)
        if result.state == "COMPLETE":
            entries[("new", result.point)] = dict(zip(result.replicates, result.accuracies))
    return compare_to_best(entries, alpha)


def _tell_one(shared, trial, result: TrialResult, comparison):
    try:
        trial.set_user_attr(REPLICATES, result.replicates)
        trial.set_user_attr(ACCURACIES, result.accuracies)
        trial.set_user_attr("val_accuracy_std", result.std)
        if comparison is not None:
            trial.set_user_attr("delta_vs_best", comparison.delta)
            trial.set_user_attr("p_vs_best", None if math.isnan(comparison.p) else comparison.p)
            trial.set_user_attr("verdict", comparison.verdict)
        if result.state == "COMPLETE":
            shared.study.tell(trial, result.mean)
        else:
            trial.set_user_attr("reason", result.reason)
            trial.set_user_attr("final_failure", result.state == "FAIL")
            shared.study.tell(trial, state=TrialState.PRUNED if result.state == "PRUNED" else TrialState.FAIL)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
        if shared.storage.get_trial(shared.trial_id(trial.number)).state == TrialState.RUNNING:
            raise
        return replace(result, recorded=False)
    return result
