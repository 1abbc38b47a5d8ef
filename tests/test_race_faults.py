"""A race killed while it enqueues its next round must resume into the race an uninterrupted run gives.

``race.advance`` enqueues the next round's trials one ``enqueue_trial`` at a
time. A process that dies between two of them (SIGKILL, or Ctrl-C) leaves the
round with some of its points only. Here the process dies (``os._exit``, as
under SIGKILL) right after the first trial of round 2 is enqueued; the study
is then resumed by the plain command and compared, point by point, with the
same race run uninterrupted.

Before the study recorded its decided rounds (``race_rounds``), the resumed
race trained the one enqueued point, counted the points left out as having
left after round 1, and ended with a winner the uninterrupted race does not
pick. A failure of the preconditions (the reference must race, the killed
start must die after one enqueue) is a RuntimeError, not an AssertionError.
"""

import os
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from clrsearch import fine

pytestmark = pytest.mark.slow  # two fine studies, one of them started twice

# 32 hidden units: from 24 rows of W1 on, a trial's values do not depend on the trials it trains with
# (docs/RELIABILITY.md), so a point trained alone after the crash gives the same numbers as in company.
TINY = ["--n-s", "10", "--n-batch", "20", "--hidden", "32", "--eval-train-size", "100", "--val-size", "200",
        "--evals-per-cycle", "2", "--cycles", "1", "--dtype", "float64", "--quiet"]
# lambda 3 leaves after round 1; 0 and 1e-4 stay tied up to 7 replicates: rounds 2 and 3 hold two points each.
RACE = ["--grid", "0,0.0001,3", "--n-seeds", "3", "--race-seeds", "2", "--max-seeds", "7", "--augment", "none",
        "--no-final"]
STORAGE = "sqlite:///studies/clrsearch.db"

# python -m clrsearch.fine that dies right after the race enqueues the first trial of a round after the first.
DIE_MID_ENQUEUE = """\
import os, sys
import optuna
from clrsearch import fine

enqueue = optuna.Study.enqueue_trial

def enqueue_then_die(self, params=None, user_attrs=None, **kwargs):
    enqueue(self, params, user_attrs=user_attrs, **kwargs)
    if (user_attrs or {}).get("round", 1) >= 2:
        os._exit(137)

optuna.Study.enqueue_trial = enqueue_then_die
sys.exit(fine.main(sys.argv[1:]))
"""


def race_points(name):
    """point -> (rounds, new replicates per round, replicates, val_accuracies, value, round it left after)."""
    study = optuna.load_study(study_name=name, storage=STORAGE)
    left = {int(point): round_ for point, round_ in study.user_attrs.get("race_left", {}).items()}
    trials = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.user_attrs["round"])
    points = {}
    for t in trials:
        points.setdefault(t.user_attrs["point"], []).append(t)
    return {point: (tuple(t.user_attrs["round"] for t in ts), tuple(tuple(t.user_attrs["new_replicates"]) for t in ts),
                    ts[-1].user_attrs["replicates"], ts[-1].user_attrs["val_accuracies"], ts[-1].value,
                    left.get(point))
            for point, ts in points.items()}


def test_a_race_killed_between_two_enqueues_of_a_round_resumes_into_the_same_race(tracked_tiny_cifar):
    args = ["--data-dir", str(tracked_tiny_cifar), *TINY, *RACE]
    assert fine.main([*args, "--study-name", "reference"]) == 0
    reference = race_points("reference")
    if sum(1 for rounds, *_ in reference.values() if 2 in rounds) < 2:
        raise RuntimeError(f"the reference race has fewer than 2 points in round 2: {reference}")

    died = subprocess.run([sys.executable, "-c", DIE_MID_ENQUEUE, *args, "--study-name", "killed"],
                          env=dict(os.environ), capture_output=True, text=True, check=False)
    if died.returncode != 137:
        raise RuntimeError(f"the killed start ended with status {died.returncode}: {died.stderr[-2000:]}")
    study = optuna.load_study(study_name="killed", storage=STORAGE)
    if sum(1 for t in study.get_trials() if t.user_attrs.get("round") == 2) != 1:
        raise RuntimeError("the killed start did not die after enqueueing one trial of round 2")

    assert fine.main([*args, "--study-name", "killed"]) == 0
    assert race_points("killed") == reference
