"""Pruning in whole studies on tiny data: the same trials pruned, with the same values, however many workers
train them and after a worker is killed in the middle of a population; and pruning by cycles with the race's
elimination by replicates in one fine study.

The reference is always the same study run once, uninterrupted, by one worker: a slot's state, value and
intermediate values (its rungs) must be exactly those of the reference.
"""

import os
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from clrsearch import coarse, fine

pytestmark = pytest.mark.slow  # whole studies, several times each

# 32 hidden units: from 24 rows of W1 on, a member's values do not depend on the population it trains in
# (docs/RELIABILITY.md), whatever members were pruned or how the trials were split between workers.
TINY = ["--replicates", "paired", "--n-s", "10", "--n-batch", "20", "--hidden", "32", "--eval-train-size", "100",
        "--val-size", "200", "--evals-per-cycle", "2", "--cycles", "2", "--dtype", "float64", "--quiet"]
# Eight lambdas up to 30: the largest keep the network near chance and are pruned after cycle 1.
COARSE = ["--n-trials", "8", "--n-seeds", "2", "--lam-min", "1e-4", "--lam-max", "30", "--pruner", "median"]
STORAGE = "sqlite:///studies/clrsearch.db"

# python -m clrsearch.coarse that dies (as under SIGKILL) right after its N-th call of Trial.report, or right
# after it marks its first pruned trial (N = 0).
DIE_AT_REPORT = """\
import os, sys
import optuna
from clrsearch import coarse

n = int(sys.argv.pop(1))
report, set_user_attr = optuna.trial.Trial.report, optuna.trial.Trial.set_user_attr
calls = []

def report_then_die(self, value, step):
    report(self, value, step)
    calls.append(step)
    if len(calls) == n:
        os._exit(137)

def mark_then_die(self, key, value):
    set_user_attr(self, key, value)
    if n == 0 and key == "last_rung":
        os._exit(137)

optuna.trial.Trial.report, optuna.trial.Trial.set_user_attr = report_then_die, mark_then_die
sys.exit(coarse.main(sys.argv[1:]))
"""


def slots(name):
    """slot -> (state, value, intermediate values) of the trial that is the slot's result."""
    study = optuna.load_study(study_name=name, storage=STORAGE)
    done = [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len({t.user_attrs["slot"] for t in done}) == len(done)  # one result per slot
    return {t.user_attrs["slot"]: (t.state.name, t.value, t.intermediate_values) for t in done}


def pruned(result):
    return sorted(slot for slot, (state, _, _) in result.items() if state == "PRUNED")


def test_two_workers_prune_what_one_prunes_with_the_same_values(tracked_tiny_cifar):
    args = ["--data-dir", str(tracked_tiny_cifar), *TINY, *COARSE]
    assert coarse.main([*args, "--study-name", "one"]) == 0
    reference = slots("one")
    if not pruned(reference) or len(pruned(reference)) == len(reference):
        raise RuntimeError(f"the reference study prunes none or all of its trials: {reference}")
    # one worker trains the 8 trials as one population; two train 4 each, the second waiting at cycle 1 for the
    # first's values
    assert coarse.main([*args, "--study-name", "two", "--workers", "2"]) == 0
    assert slots("two") == reference


# Populations of 3 trials (slots 0-2, 3-5, 6-7); a slot is judged from slot 4 on (the warm-up of 5 values).
# 0: dies once slot 7 is pruned. 3: once slots 0-2 reported cycle 1. 7: once slot 3 reported cycle 1, before
# slots 4 and 5 did: the resumed worker claims slots 6, 7 and a copy of 3 first, finds 4 and 5 lost at cycle 1,
# gives that population back, and trains the copies of 4 and 5 before it.
KILLS = {"after the first prune": 0, "after the first rung": 3, "before slots 4 and 5 reach their rung": 7}


@pytest.mark.parametrize("die_at", KILLS.values(), ids=KILLS.keys())
def test_a_worker_killed_mid_population_resumes_into_the_same_pruning(tracked_tiny_cifar, die_at):
    args = ["--data-dir", str(tracked_tiny_cifar), *TINY, *COARSE, "--trials-per-population", "3"]
    assert coarse.main([*args, "--study-name", "reference"]) == 0
    reference = slots("reference")
    if not pruned(reference):
        raise RuntimeError(f"the reference study prunes nothing: {reference}")

    died = subprocess.run([sys.executable, "-c", DIE_AT_REPORT, str(die_at), *args, "--study-name", "killed"],
                          env=dict(os.environ), capture_output=True, text=True, check=False)
    if died.returncode != 137:
        raise RuntimeError(f"the killed start ended with status {died.returncode}: {died.stderr[-2000:]}")
    study = optuna.load_study(study_name="killed", storage=STORAGE)
    if not [t for t in study.get_trials() if t.state == TrialState.RUNNING]:
        raise RuntimeError("the killed start left no trial running")

    assert coarse.main([*args, "--study-name", "killed"]) == 0
    assert slots("killed") == reference
    given_back = [t for t in optuna.load_study(study_name="killed", storage=STORAGE).get_trials()
                  if t.user_attrs.get("reason") == "interrupted"]
    assert bool(given_back) == (die_at == 7)


def race(name):
    """point -> [(round, state, new replicates, value, intermediate values)] of its trials with a result."""
    study = optuna.load_study(study_name=name, storage=STORAGE)
    points = {}
    for t in sorted(study.get_trials(), key=lambda t: (t.user_attrs["round"], t.number)):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            points.setdefault(t.user_attrs["point"], []).append(
                (t.user_attrs["round"], t.state.name, t.user_attrs["new_replicates"], t.value, t.intermediate_values))
    left = {int(point): round_ for point, round_ in study.user_attrs.get("race_left", {}).items()}
    return points, left


def test_a_point_pruned_by_cycles_leaves_the_race_and_race_rounds_are_never_pruned(tracked_tiny_cifar):
    # lambda 3 keeps the network near chance; the five small lambdas stay close and race
    args = ["--data-dir", str(tracked_tiny_cifar), *TINY, "--grid", "0,0.0001,0.0002,0.0005,0.001,3", "--n-seeds", "3",
            "--race-seeds", "2", "--max-seeds", "7", "--augment", "none", "--no-final", "--race-rule", "holm"]
    assert fine.main([*args, "--study-name", "unpruned"]) == 0
    assert fine.main([*args, "--study-name", "pruned", "--pruner", "median"]) == 0
    unpruned, unpruned_left = race("unpruned")
    points, left = race("pruned")
    if max(round_ for trials in points.values() for round_, *_ in trials) < 2:
        raise RuntimeError(f"the race ended after its first round: {points}")

    # the hopeless point: one trial, pruned after cycle 1, and no later round
    [(round_, state, replicates, value, rungs)] = points[5]
    assert (round_, state, replicates, list(rungs)) == (1, "PRUNED", [0, 1, 2], [1]) and value == rungs[1]
    assert 5 not in left  # not a point the race compared: the summary shows it as PRUNED
    # without pruning, the race's paired test drops it after round 1 all the same
    assert [trial[0] for trial in unpruned[5]] == [1] and unpruned_left[5] == 1

    for point in range(5):
        first, *later = points[point]
        assert first[1] == "COMPLETE" and list(first[4]) == [1, 2]  # round 1 reports both cycle ends
        assert all(state == "COMPLETE" and rungs == {} for _, state, _, _, rungs in later)  # race rounds: no rungs
        # the race among the completed points is the one the unpruned study ran
        assert [trial[:4] for trial in points[point]] == [trial[:4] for trial in unpruned[point]]
    assert left == {p: r for p, r in unpruned_left.items() if p != 5}
