"""The paired comparison against hand-worked values: a t statistic with 2 degrees of freedom,
whose distribution function has the closed form F(t) = 1/2 + t / (2 sqrt(t² + 2))."""
import math

import pytest

from clrsearch.search.compare import compare_to_best, holm

T_975_DF2 = 4.302652729911275  # two-sided 95% quantile of Student's t with 2 degrees of freedom (tables: 4.303)


def test_worked_example_with_three_replicates():
    # best: 52, 53, 51 %; trial: 50, 52, 50 % -> differences -2, -1, -1 points.
    # mean -4/3 points; s = sqrt(((-2 + 4/3)² + 2 (-1 + 4/3)²) / 2) = sqrt(1/3); se = s / sqrt(3) = 1/3 point;
    # t = (-4/3) / (1/3) = -4 exactly.
    result = compare_to_best({"best": {0: 0.52, 1: 0.53, 2: 0.51}, "trial": {0: 0.50, 1: 0.52, 2: 0.50}})
    trial = result["trial"]
    assert result["best"].verdict == "best"
    assert trial.n == 3
    assert trial.delta == pytest.approx(-0.04 / 3)
    p_closed_form = 0.5 + (-4) / (2 * math.sqrt(16 + 2))  # F(-4) for 2 degrees of freedom = 0.028595
    assert trial.p_raw == pytest.approx(p_closed_form, rel=1e-9)
    assert trial.p == pytest.approx(p_closed_form, rel=1e-9)  # one comparison: Holm changes nothing
    assert trial.ci_low == pytest.approx(-0.04 / 3 - T_975_DF2 * 0.01 / 3, rel=1e-6)
    assert trial.ci_high == pytest.approx(-0.04 / 3 + T_975_DF2 * 0.01 / 3, rel=1e-6)
    assert trial.verdict == "worse"


def test_only_common_replicates_are_paired():
    # the trial lacks replicate 2; on 0 and 1 the differences are -1 and +1 point: mean 0, tied.
    result = compare_to_best({"best": {0: 0.52, 1: 0.53, 2: 0.60}, "trial": {0: 0.51, 1: 0.54}})
    assert result["trial"].n == 2
    assert result["trial"].delta == pytest.approx(0.0, abs=1e-12)
    assert result["trial"].p_raw == pytest.approx(0.5)
    assert result["trial"].verdict == "tied"


def test_equal_differences_are_decided_by_their_sign():
    result = compare_to_best({"a": {0: 0.5, 1: 0.6}, "b": {0: 0.49, 1: 0.59}, "c": {0: 0.5, 1: 0.6}})
    assert result["a"].verdict == "best"  # a and c tie on the mean: the smaller key is the best
    assert result["b"].p_raw == 0.0 and result["b"].verdict == "worse"
    assert result["c"].p_raw == 1.0 and result["c"].verdict == "tied"


def test_a_single_replicate_cannot_be_tested():
    result = compare_to_best({"a": {0: 0.5}, "b": {0: 0.4}})
    assert result["b"].verdict == "tied"
    assert math.isnan(result["b"].p)
    assert result["b"].delta == pytest.approx(-0.1)


def test_holm_worked_example():
    # sorted 0.01, 0.03, 0.04 with m = 3: 3 x 0.01 = 0.03; max(0.03, 2 x 0.03) = 0.06; max(0.06, 1 x 0.04) = 0.06
    assert holm({"x": 0.01, "y": 0.04, "z": 0.03}) == pytest.approx({"x": 0.03, "y": 0.06, "z": 0.06})
    assert holm({"x": 0.6, "y": float("nan")})["x"] == 0.6
    assert holm({"x": 0.5, "y": 0.9}) == {"x": 1.0, "y": 1.0}  # capped at 1


def test_holm_correction_can_turn_worse_into_tied():
    # two trials each at raw p = 0.028595 (t = -4, df 2): Holm doubles the smaller one to 0.057 >= 0.05.
    best = {0: 0.52, 1: 0.53, 2: 0.51}
    trial = {0: 0.50, 1: 0.52, 2: 0.50}
    result = compare_to_best({"best": best, "t1": trial, "t2": dict(trial)})
    assert result["t1"].p == pytest.approx(2 * (0.5 - 4 / (2 * math.sqrt(18))))
    assert {result["t1"].verdict, result["t2"].verdict} == {"tied"}
