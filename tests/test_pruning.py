"""Pruning inside a population (clrsearch.search.pruning): the rule against thresholds worked out by hand,
the trials before a judged one read from a study made by hand, and a population on tiny data whose pruned
trials are exactly those the rule picks from the cycle-1 accuracies of networks trained alone."""

import subprocess
import threading
import time
from dataclasses import replace

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from clrsearch import processes
from clrsearch.config import DataConfig, SearchConfig, StudyConfig, TrainConfig
from clrsearch.data import load_splits
from clrsearch.nn import network
from clrsearch.nn.trainer import train
from clrsearch.search import population, pruning, queue, study
from clrsearch.search.pruning import PruningRule
from helpers import dead_pid, write_tiny_cifar

# ----------------------------------------------------------------------------- the rule


def test_the_median_rule_prunes_below_the_median_minus_the_margin():
    rule = PruningRule("median", margin=0.01, warmup=5)
    values = [0.50, 0.52, 0.48, 0.51, 0.40]  # sorted: 0.40 0.48 0.50 0.51 0.52, median 0.50
    assert rule.threshold(values) == 0.50
    assert rule.prunes(0.40, values)  # 0.40 < 0.50 - 0.01
    assert not rule.prunes(0.495, [0.495, 0.49, 0.50, 0.51, 0.52])  # median 0.50: 0.495 >= 0.49
    assert rule.prunes(0.485, [0.485, 0.49, 0.50, 0.51, 0.52])  # median 0.50: 0.485 < 0.49
    # six values: the median is the mean of the middle two, (0.48 + 0.50) / 2 = 0.49
    assert rule.threshold([0.40, 0.48, 0.50, 0.51, 0.52, 0.30]) == pytest.approx(0.49)
    assert rule.threshold(values[:4]) is None and not rule.prunes(0.0, [0.0, 0.5, 0.5, 0.5])  # before warm-up


def test_successive_halving_keeps_the_best_third():
    rule = PruningRule("halving", margin=0.0, warmup=3, eta=3)
    values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]  # ceil(7 / 3) = 3: the third largest, 0.5, is the threshold
    assert rule.threshold(values) == 0.5
    assert [v for v in values if rule.prunes(v, values)] == [0.1, 0.2, 0.3, 0.4]
    assert rule.threshold([0.3, 0.1, 0.2]) == 0.3  # ceil(3 / 3) = 1: only the best stays


def test_each_pruner_flag_has_its_rule_and_bad_settings_are_refused():
    assert pruning.rule_of("none") is None
    assert pruning.rule_of("median") == PruningRule("median", margin=0.01, warmup=5)
    assert pruning.rule_of("hyperband") == PruningRule("halving", margin=0.0, warmup=5, eta=3)
    for bad in ({"kind": "mean"}, {"margin": -0.1}, {"warmup": 0}, {"eta": 1}):
        with pytest.raises(ValueError):
            PruningRule(**bad)


# ----------------------------------------------------------------------------- the trials before a judged one


LAM = FloatDistribution(0.0, 1.0)


def add(made, slot, state, rung_values=None, **attrs):
    """A first-round trial of ``slot`` (lambda slot / 100) with intermediate values rung -> value."""
    made.add_trial(create_trial(state=state, params={"lam": slot / 100}, distributions={"lam": LAM},
                                value=0.5 if state == TrialState.COMPLETE else None,
                                intermediate_values=rung_values or {},
                                user_attrs={"slot": slot, "point": slot, "round": 1, **attrs}))


def every_schedule(params):
    return True


def new_shared(url):
    """A TrialQueue of a new study in the storage ``url``."""
    with queue.study_lock(url):
        storage = queue.open_storage(url)
        return queue.TrialQueue(optuna.create_study(storage=storage, direction="maximize"), storage, url)


def test_the_trials_before_a_slot_that_reached_the_rung_are_its_reference(study_url):
    shared = new_shared(study_url)
    made = shared.study
    add(made, 0, TrialState.COMPLETE, {1: 0.50, 2: 0.52})
    add(made, 1, TrialState.PRUNED, {1: 0.30})
    add(made, 2, TrialState.FAIL, {1: 0.45})  # lost with its worker after the rung: its copy would report the same
    add(made, 2, TrialState.COMPLETE, {1: 0.45, 2: 0.47})
    add(made, 3, TrialState.FAIL, {}, final_failure=True)  # diverged before the rung
    add(made, 4, TrialState.COMPLETE, {1: 0.60}, round=2)  # a race round: not a reference
    add(made, 5, TrialState.COMPLETE, {1: 0.40})  # the judged slot itself
    add(made, 6, TrialState.COMPLETE, {1: 0.40})  # after it
    assert pruning.earlier_values(shared, 5, 1, every_schedule) == {0: 0.50, 1: 0.30, 2: 0.45}
    assert pruning.earlier_values(shared, 5, 2, every_schedule) == {0: 0.52, 2: 0.47}
    # another schedule: lambda 0.01 and 0.02 train on it
    assert pruning.earlier_values(shared, 5, 1, lambda p: p["lam"] in (0.01, 0.02)) == {1: 0.30, 2: 0.45}


def running(shared, slot, worker, rung_values):
    """A first-round trial of ``slot`` enqueued, claimed and handed to ``worker``, with its rung values so far."""
    shared.study.enqueue_trial({"lam": slot / 100}, user_attrs={"slot": slot, "point": slot, "round": 1})
    with shared.lock():
        trial = shared.study.ask()
    shared.storage.set_trial_system_attr(shared.trial_id(trial.number), queue.WORKER_ATTR, worker)
    for rung, value in rung_values.items():
        trial.report(value, step=rung)
    return trial


def test_a_trial_before_that_trains_elsewhere_is_waited_for_and_a_lost_one_raises(study_url):
    shared = new_shared(study_url)
    made = shared.study
    add(made, 0, TrialState.COMPLETE, {1: 0.50, 2: 0.52})
    other = subprocess.Popen(["sleep", "60"])  # a live process of this host: another worker
    try:
        slow = running(shared, 1, processes.identity(other.pid), {1: 0.44})
        pruned = running(shared, 2, processes.identity(other.pid), {1: 0.30})
        pruned.set_user_attr(pruning.LAST_RUNG, 1)  # pruned at rung 1, told only when its population is done
        threading.Timer(0.5, lambda: slow.report(0.46, step=2)).start()
        started = time.perf_counter()
        assert pruning.earlier_values(shared, 3, 2, every_schedule) == {0: 0.52, 1: 0.46}
        assert time.perf_counter() - started >= 0.5  # slot 1 was waited for, slot 2 was not
        # slot 1's worker dies before rung 3: no value will come unless its copy is trained first
        shared.storage.set_trial_system_attr(shared.trial_id(slow.number), queue.WORKER_ATTR,
                                             processes.identity(dead_pid()))
        with pytest.raises(pruning.EarlierTrialLost) as lost:
            pruning.earlier_values(shared, 3, 3, every_schedule)
        assert (lost.value.slots, lost.value.rung, str(lost.value)) == ((1,), 3, "slot 1 lost before rung 3")
        # recovered, it is a failed trial and a waiting copy: still lost
        shared.recover()
        with pytest.raises(pruning.EarlierTrialLost):
            pruning.earlier_values(shared, 3, 3, every_schedule)
    finally:
        other.kill()
        other.wait()


# ----------------------------------------------------------------------------- a population on tiny data

# Six lambdas: five that learn, one (3) that keeps the network near chance. Slots follow the sorted grid, so
# lambda 3 is slot 5 and is judged against all six values at cycle 1.
GRID = (0.0, 0.0001, 0.001, 0.003, 0.01, 3.0)
# 32 hidden units: from 24 rows of W1 on, a member's values do not depend on the population it trains in
# (docs/RELIABILITY.md), so compacting the population when a member stops leaves the others' numbers alone.
TINY = TrainConfig(n_batch=20, cycles=2, n_s=10, hidden=32, dtype="float64", shuffle_seed=10, evals_per_cycle=1)


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    folder = write_tiny_cifar(tmp_path_factory.mktemp("data"), n_per_batch=100, n_test=20)
    return load_splits(DataConfig("batch1", data_dir=str(folder)), dtype=np.float64)


def search_config(pruner="median", grid=GRID):
    return SearchConfig(StudyConfig(kind="fine", name="pruned", sampler="grid", grid=grid, n_seeds=2, race=False,
                                    trials_per_population=len(grid), pruner=pruner),
                        DataConfig("batch1"), TINY)


def claimed_study(url, config):
    with queue.study_lock(url):
        storage = queue.open_storage(url)
        config = study.resolve_grid(config, storage)
        shared = queue.TrialQueue(study.create_or_load(config, storage), storage, url)
    return config, shared, shared.claim(config)


def alone(splits, lam, replicate, cycles):
    """Validation accuracy of replicate ``replicate`` at ``lam`` trained by itself for ``cycles`` cycles."""
    config = replace(TINY, cycles=cycles, shuffle_seed=TINY.shuffle_seed + replicate)
    result = train(splits, config, [lam], [replicate])
    return float(np.mean(network.predict(network.member(result.params, 0), splits.val.X) == splits.val.y))


def at_cycle_1(splits, lam):
    """The replicates' mean validation accuracy at the end of cycle 1, from networks trained alone: cycle 1 of a
    2-cycle schedule is the whole of a 1-cycle one (the same learning rates, the same mini-batches)."""
    return float(np.mean([alone(splits, lam, r, cycles=1) for r in (0, 1)]))


def test_a_population_prunes_the_trials_the_rule_picks_from_networks_trained_alone(study_url, splits):
    config, shared, trials = claimed_study(study_url, search_config())
    cycle_1 = [at_cycle_1(splits, lam) for lam in GRID]
    # the median rule by hand: slot s against slots 0..s, from the fifth value on
    expected = {GRID[s] for s in range(4, len(GRID)) if cycle_1[s] < np.median(cycle_1[:s + 1]) - 0.01}
    assert expected == {3.0}  # the premise: lambda 3 is far below the median, the others are not

    outcome = population.train_population(shared, trials, config, splits)
    by_lam = {r.lam: r for r in outcome.results}
    assert {lam for lam, r in by_lam.items() if r.state == "PRUNED"} == expected
    hopeless = by_lam[3.0]
    assert hopeless.reason == f"pruned after cycle 1: validation accuracy {100 * cycle_1[5]:.2f}%"
    [block] = outcome.blocks
    for run in hopeless.runs:  # both replicates left the population at the end of cycle 1
        assert run.status == "stopped" and block.training.stopped_at[run.member] == 2 * TINY.n_s
    for lam in GRID[:5]:  # the others as if nothing had been pruned
        assert by_lam[lam].state == "COMPLETE"
        assert by_lam[lam].accuracies == [alone(splits, lam, r, cycles=2) for r in (0, 1)]

    population.tell(shared, outcome)
    for t in shared.study.get_trials():
        s = t.user_attrs["slot"]
        if GRID[s] in expected:
            assert t.state == TrialState.PRUNED
            assert t.intermediate_values == {1: cycle_1[s]} and t.value == cycle_1[s]
            assert t.user_attrs[pruning.LAST_RUNG] == 1
        else:
            assert t.state == TrialState.COMPLETE
            assert t.intermediate_values == {1: cycle_1[s], 2: t.value}


def test_without_a_pruner_nothing_is_reported(study_url, splits):
    config, shared, trials = claimed_study(study_url, search_config(pruner="none"))
    outcome = population.train_population(shared, trials, config, splits)
    assert all(r.state == "COMPLETE" for r in outcome.results)
    population.tell(shared, outcome)
    assert all(t.intermediate_values == {} for t in shared.study.get_trials())


def test_a_population_that_needs_a_lost_trial_is_given_back_and_its_trials_enqueued_again(study_url, splits):
    config, shared, trials = claimed_study(study_url, search_config())
    shared.give_back(trials[:1])  # slot 0 lost: its copy waits
    outcome = population.train_population(shared, trials[1:], config, splits)
    assert all(not r.recorded and r.state == "FAIL" for r in outcome.results)
    assert outcome.results[0].reason == "given back: slot 0 lost before rung 1"
    assert population.tell(shared, outcome) == outcome.results
    states = {}
    for t in shared.study.get_trials():
        states.setdefault(t.user_attrs["slot"], []).append(t.state)
    assert states == {s: [TrialState.FAIL, TrialState.WAITING] for s in range(len(GRID))}
    # the copies train as one population, the lost slot first, and prune what an uninterrupted run prunes
    again = shared.claim(config)
    assert sorted(t.user_attrs["slot"] for t in again) == list(range(len(GRID)))
    outcome = population.train_population(shared, again, config, splits)
    assert {r.lam for r in outcome.results if r.state == "PRUNED"} == {3.0}
