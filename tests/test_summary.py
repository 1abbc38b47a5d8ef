"""What a finished study shows (clrsearch.search.summary): the trials table of a study made by hand,
its paired verdicts worked out by hand, the printed table and the wall-time ledger."""

import math
import time

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from clrsearch.search import queue, summary

LAM = {"lam": FloatDistribution(0.0, 0.1)}


def add(study, lam, accuracies=(), state=TrialState.COMPLETE, point=None, round_=1, **attrs):
    user_attrs = {"replicates": list(range(len(accuracies))), "val_accuracies": list(accuracies),
                  "val_accuracy_std": float(np.std(accuracies)) if accuracies else float("nan"), **attrs}
    if point is not None:
        user_attrs.update({queue.POINT: point, queue.ROUND: round_})
    study.add_trial(create_trial(params={"lam": lam}, distributions=LAM, state=state, user_attrs=user_attrs,
                                 value=float(np.mean(accuracies)) if state == TrialState.COMPLETE else None))


@pytest.fixture
def study():
    """Points 0 .. 4: the best (mean 0.52), one clearly worse, one tied, a pruned and a diverged one."""
    made = optuna.create_study(direction="maximize")
    add(made, 0.001, (0.50, 0.52, 0.54), point=0)
    add(made, 0.004, (0.40, 0.41, 0.42), point=1)  # 0.10, 0.11, 0.12 below the best on every replicate
    add(made, 0.002, (0.49, 0.53, 0.535), point=2)  # -0.01, +0.01, -0.005: no evidence either way
    add(made, 0.003, state=TrialState.PRUNED, point=3, reason="pruned after cycle 1: validation accuracy 9.00%")
    add(made, 0.09, state=TrialState.FAIL, point=4, reason="diverged at step 3", final_failure=True)
    add(made, 0.05, state=TrialState.FAIL, point=5, reason="worker died")  # not a result: its copy is
    return made


def test_the_table_has_one_row_per_finished_point_sorted_by_lambda(study):
    rows = summary.trials_table(study, alpha=0.05)
    assert [(r["trial"], r["lam"], r["state"]) for r in rows] == [
        (0, 0.001, "COMPLETE"), (2, 0.002, "COMPLETE"), (3, 0.003, "PRUNED"), (1, 0.004, "COMPLETE"),
        (4, 0.09, "FAIL")]
    by_trial = {r["trial"]: r for r in rows}
    assert by_trial[0]["mean_val_accuracy"] == pytest.approx(0.52)
    assert by_trial[0]["val_accuracies"] == "0.5000 0.5200 0.5400" and by_trial[0]["replicates"] == 3
    assert math.isnan(by_trial[3]["mean_val_accuracy"]) and by_trial[3]["reason"].startswith("pruned after cycle 1")
    assert by_trial[4]["reason"] == "diverged at step 3" and by_trial[0]["reason"] == ""


def t2_cdf(t):
    """CDF of Student's t with 2 degrees of freedom, in closed form."""
    return 0.5 + t / (2 * math.sqrt(2 + t * t))


def test_verdicts_are_the_paired_comparisons_worked_out_by_hand(study):
    rows = {r["trial"]: r for r in summary.trials_table(study, alpha=0.05)}
    assert [rows[k]["verdict"] for k in (0, 1, 2, 3, 4)] == ["best", "worse", "tied", "", ""]
    # Trial 1: differences -0.10, -0.11, -0.12, mean -0.11, s = 0.01, t = -0.11 / (0.01 / sqrt 3);
    # its 95% interval is -0.11 -+ q 0.01 / sqrt 3 with q = 0.95 / sqrt(2 x 0.975 x 0.025), t(2)'s quantile.
    worse = rows[1]
    assert worse["delta_vs_best"] == pytest.approx(-0.11)
    half = 0.95 / math.sqrt(2 * 0.975 * 0.025) * 0.01 / math.sqrt(3)
    assert (worse["ci_low"], worse["ci_high"]) == (pytest.approx(-0.11 - half), pytest.approx(-0.11 + half))
    p_worse = t2_cdf(-0.11 / (0.01 / math.sqrt(3)))  # 0.00137
    # Trial 2: differences -0.01, +0.01, -0.005, mean -0.005 / 3, s = sqrt(sum of squared deviations / (n - 1)).
    s2 = math.sqrt(((-0.01 + 0.005 / 3) ** 2 + (0.01 + 0.005 / 3) ** 2 + (-0.005 + 0.005 / 3) ** 2) / 2)
    p_tied = t2_cdf(-0.005 / 3 / (s2 / math.sqrt(3)))  # 0.404
    # Holm over the two: the smaller p doubled, the larger as it is (and no smaller than the first).
    assert worse["p_vs_best"] == pytest.approx(2 * p_worse)
    assert rows[2]["delta_vs_best"] == pytest.approx(-0.005 / 3) and rows[2]["p_vs_best"] == pytest.approx(p_tied)
    assert summary.best_row(list(rows.values()))["trial"] == 0
    verdicts = summary.verdicts(list(rows.values()))
    assert set(verdicts) == {"0", "1", "2"}
    assert {k: verdicts["0"][k] for k in ("delta_vs_best", "p_vs_best", "verdict")} == {
        "delta_vs_best": 0.0, "p_vs_best": None, "verdict": "best"}
    # MCB, k = 3, t_{1 - 0.025, 2} = 4.3027: point 1 is 0.11 +- 0.0248 below point 0 (sd 0.01 of 0.10, 0.11, 0.12),
    # out of the best set; points 0 and 2 in it (see test_decision.py for the whole interval)
    assert verdicts["0"]["best_set"] and verdicts["2"]["best_set"] and not verdicts["1"]["best_set"]
    assert verdicts["1"]["p_best"] == 0.0  # below point 0 on every replicate: never the best in any draw
    assert verdicts["0"]["p_best"] + verdicts["2"]["p_best"] == pytest.approx(1.0)


def test_a_later_round_of_a_point_stands_for_it(study):
    add(study, 0.001, (0.50, 0.52, 0.54, 0.56), point=0, round_=2)
    rows = summary.trials_table(study)
    assert [r["trial"] for r in rows if r["point"] == 0] == [6]
    assert [r["replicates"] for r in rows if r["point"] == 0] == [4]


def test_the_printed_table_ends_with_the_best_point(study):
    text = summary.format_table(summary.trials_table(study))
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["trial", "lambda"]
    assert len(lines) == 1 + 5 + 1
    assert lines[-1] == "best: trial 0, lambda 0.001, validation accuracy 52.00 ± 1.63 % (3 replicates)"
    assert "pruned after cycle 1" in lines[3] and "diverged at step 3" in lines[5]
    assert summary.best_row([]) is None


def test_the_timer_adds_up_the_time_of_each_activity():
    timer = summary.Timer()
    timer.add("data", 1.5)
    timer.add("data", 0.25)
    with timer.timed("training"):
        time.sleep(0.01)
    assert timer.seconds["data"] == 1.75
    assert 0.01 <= timer.seconds["training"] < 1.0


def test_compute_used_counts_what_each_trial_trained():
    from clrsearch.config import DEFAULT_SEARCH, StudyConfig
    from dataclasses import replace

    made = optuna.create_study(direction="maximize")
    add(made, 0.001, (0.5, 0.5, 0.5), point=0, new_replicates=[0, 1, 2])
    add(made, 0.001, (0.5,) * 5, point=0, round_=2, new_replicates=[3, 4])
    add(made, 0.002, state=TrialState.PRUNED, point=1, new_replicates=[0, 1, 2], last_rung=1)
    add(made, 0.003, state=TrialState.FAIL, point=2, new_replicates=[0, 1, 2], final_failure=True,
        reason="diverged: NaN or inf in the cost at update step 7 (replicate 0, eta_max 0.1)")
    config = replace(DEFAULT_SEARCH["fine"], study=StudyConfig(kind="fine", name="f", sampler="grid",
                                                               grid=(0.001, 0.002, 0.003), max_seeds=6))
    config = replace(config, train=replace(config.train, n_s=10, cycles=2))  # 40 steps a network
    used = summary.compute_used(made, config, n_train=1000)
    # 5 networks x 40 + 3 pruned after cycle 1 x 20 + 3 diverged at step 7 x 7 = 200 + 60 + 21
    assert (used.updates, used.full_equivalents, used.exhaustive) == (281, 281 / 40, 3 * 6 * 40)
    assert used.fraction == pytest.approx(281 / 720)
