"""The race's decision (clrsearch.search.decision, race.next_step): KN's constants and screening, MCB intervals and
P(best), checked against values worked out by hand from the formulas, not against the implementation."""

import math

import numpy as np
import pytest

from clrsearch.config import StudyConfig
from clrsearch.search import decision, race


def test_kn_constants_worked_out_by_hand():
    # k = 16, n0 = 3, alpha = 0.05: eta = 0.5 * ((0.1 / 15) ** -1 - 1) = 0.5 * (150 - 1) = 74.5, h2 = 2 * 74.5 * 2
    assert decision.kn_eta(16, 3, 0.05) == pytest.approx(74.5)
    assert decision.kn_h2(16, 3, 0.05) == pytest.approx(298.0)
    # k = 2, n0 = 5: eta = 0.5 * (0.1 ** -0.5 - 1) = 0.5 * (3.16227766 - 1), h2 = 2 * eta * 4
    assert decision.kn_eta(2, 5, 0.05) == pytest.approx(1.08113883)
    assert decision.kn_h2(2, 5, 0.05) == pytest.approx(8.64911064)
    with pytest.raises(ValueError):
        decision.kn_eta(16, 1, 0.05)  # no variance from one replicate


def test_kn_width_worked_out_by_hand():
    # S2 = 1e-4, r = 3, h2 = 298, delta = 0.003: 298 * 1e-4 / 9e-6 = 3311.111; (3311.111 - 3) * 0.003 / 6 = 1.654056
    assert decision.kn_width(1e-4, 3, 298.0, 0.003) == pytest.approx(1.654056, abs=1e-6)
    # past r = h2 S2 / delta^2 = 3311.1 the width is 0
    assert decision.kn_width(1e-4, 4000, 298.0, 0.003) == 0.0


# k = 3, n0 = 3, alpha = 0.05: eta = 0.5 * (0.05 ** -1 - 1) = 9.5, h2 = 2 * 9.5 * 2 = 38; delta = 0.01
A = {0: 0.50, 1: 0.52, 2: 0.51, 3: 0.53}
B = {0: 0.45, 1: 0.46, 2: 0.47, 3: 0.48}  # A - B = 0.05, 0.06, 0.04, 0.05: S2_AB = (0 + 1e-4 + 1e-4) / 2 = 1e-4
C = {0: 0.497, 1: 0.519, 2: 0.508, 3: 0.52}  # A - C = 0.003, 0.001, 0.002: S2_AC = 1e-6
# B - C = -0.047, -0.059, -0.038: mean -0.048, S2_BC = (0.001^2 + 0.011^2 + 0.010^2) / 2 = 1.11e-4


def test_kn_screening_worked_out_by_hand():
    data = {"A": A, "B": B, "C": C}
    # r = 3: W_AC = max(0, 0.01 / 6 * (38 * 1e-6 / 1e-4 - 3)) = 0, and mean_C < mean_A by 0.002: C leaves.
    #        W_AB = 0.01 / 6 * (38 - 3) = 0.05833 > 0.05 = mean_A - mean_B: B stays;
    #        W_BC = 0.01 / 6 * (38 * 1.11 - 3) = 0.06530 > 0.048: B stays against C as well.
    at3 = decision.kn_screen(data, n0=3, delta=0.01, alpha=0.05, upto=3)
    assert at3.survivors == ("A", "B") and at3.eliminated == {"C": 3}
    assert at3.k == 3 and at3.h2 == pytest.approx(38.0)
    # r = 4: W_AB = 0.01 / 8 * (38 - 4) = 0.0425 < 0.05 = mean_A - mean_B over 4 replicates: B leaves.
    at4 = decision.kn_screen(data, n0=3, delta=0.01, alpha=0.05, upto=4)
    assert at4.survivors == ("A",) and at4.eliminated == {"C": 3, "B": 4}


def test_kn_a_point_without_the_replicate_leaves():
    data = {"A": A, "B": dict(list(B.items())[:3]), "C": {0: 0.4}}
    # delta 1e-6: W_AB(3) = 1e-6 / 6 * (18 * 1e-4 / 1e-12 - 3) = 300, nothing is screened out by the data
    result = decision.kn_screen(data, n0=3, delta=1e-6, alpha=0.05, upto=4)
    assert result.survivors == ("A",) and result.eliminated == {"C": 3, "B": 4}


# MCB, k = 3, alpha = 0.05, n = 3: t_{1 - 0.05 / 2, 2} = 4.302652729911275 (the t table's 4.303)
T = 4.302652729911275
X, Y, Z = {0: 0.50, 1: 0.52, 2: 0.54}, {0: 0.40, 1: 0.41, 2: 0.42}, {0: 0.49, 1: 0.53, 2: 0.535}


def test_mcb_worked_out_by_hand():
    # X - Y = 0.10, 0.11, 0.12: D = 0.11, S = 0.01
    w_xy = T * 0.01 / math.sqrt(3)  # 0.024841
    # X - Z = 0.01, -0.01, 0.005: D = 0.005 / 3, S^2 = (0.008333^2 + 0.011667^2 + 0.003333^2) / 2 = 1.08333e-4
    d_xz, w_xz = 0.005 / 3, T * math.sqrt(1.0833333e-4) / math.sqrt(3)  # 0.025855
    # Y - Z = -0.09, -0.12, -0.115: D = -0.108333, S^2 = (0.018333^2 + 0.011667^2 + 0.006667^2) / 2 = 2.58333e-4
    d_yz, w_yz = -0.325 / 3, T * math.sqrt(2.5833333e-4) / math.sqrt(3)  # 0.039928
    intervals = decision.mcb({"X": X, "Y": Y, "Z": Z}, 0.05)
    # X: low = min(0.11 - w_xy, d_xz - w_xz) = -0.024189, high = min(0.11 + w_xy, d_xz + w_xz) = 0.027522
    assert intervals["X"].low == pytest.approx(d_xz - w_xz, abs=1e-6)
    assert intervals["X"].high == pytest.approx(d_xz + w_xz, abs=1e-6)
    assert (intervals["X"].low, intervals["X"].high) == pytest.approx((-0.024189, 0.027522), abs=2e-6)
    # Y: low = min(-0.11 - w_xy, d_yz - w_yz) = -0.148261, high = (min(-0.11 + w_xy, d_yz + w_yz))^+ = 0
    assert intervals["Y"].low == pytest.approx(-0.148261, abs=2e-6) and intervals["Y"].high == 0.0
    # Z: low = min(-d_xz - w_xz, -d_yz - w_yz) = -0.027522, high = min(-d_xz + w_xz, -d_yz + w_yz) = 0.024189
    assert (intervals["Z"].low, intervals["Z"].high) == pytest.approx((-0.027522, 0.024189), abs=2e-6)
    assert decision.best_set(intervals) == ("X", "Z")
    assert decision.all_within(intervals, 0.03) is False  # Y is 14.8 points down at worst
    assert decision.all_within({p: intervals[p] for p in "XZ"}, 0.03) is True


def test_mcb_of_a_lone_point_and_of_a_pair_with_one_common_replicate():
    assert decision.mcb({"X": X}, 0.05) == {"X": decision.Interval(0.0, math.inf)}
    # two points tied exactly, no spread: upper bounds 0, both kept in the best set; a third 1 point down is not
    tied = decision.mcb({"a": X, "b": dict(X), "c": {r: v - 0.01 for r, v in X.items()}}, 0.05)
    assert (tied["a"].high, tied["b"].high) == (0.0, 0.0) and decision.best_set(tied) == ("a", "b")
    intervals = decision.mcb({"X": {0: 0.5}, "Y": {0: 0.4, 1: 0.45}}, 0.05)
    assert intervals["Y"].low == -math.inf and intervals["Y"].high == math.inf  # one common replicate: no spread


def test_p_best_of_a_point_better_in_every_block_is_one():
    chances = decision.p_best({"a": {0: 0.51, 1: 0.50, 2: 0.53}, "b": {0: 0.50, 1: 0.49, 2: 0.52}})
    assert chances == {"a": 1.0, "b": 0.0}


def test_p_best_of_two_identical_points_is_one_half_each():
    same = {0: 0.5, 1: 0.52, 2: 0.49, 3: 0.51}
    chances = decision.p_best({"a": same, "b": dict(same), "c": {r: a - 0.05 for r, a in same.items()}})
    assert chances["a"] == pytest.approx(0.5, abs=1e-9) and chances["b"] == pytest.approx(0.5, abs=1e-9)
    assert chances["c"] == 0.0


def test_p_best_is_seeded_and_splits_a_close_race():
    data = {"a": {0: 0.50, 1: 0.53, 2: 0.51}, "b": {0: 0.52, 1: 0.50, 2: 0.515}}
    first = decision.p_best(data)
    assert first == decision.p_best(data) and 0.0 < first["a"] < 1.0 and sum(first.values()) == pytest.approx(1.0)


def test_p_best_compares_points_on_the_blocks_both_have():
    # blocks 3..6 are harder folds: "early" left the race after blocks 0..2, where "late" beat it every time;
    # over each point's own blocks "early" has the larger mean (74.5 against 68.6), on the common ones it loses
    early = {0: 0.695, 1: 0.805, 2: 0.72}
    late = {0: 0.70, 1: 0.81, 2: 0.725, 3: 0.64, 4: 0.64, 5: 0.685, 6: 0.595}
    assert decision.p_best({"early": early, "late": late}) == {"early": 0.0, "late": 1.0}


def test_p_best_on_equal_blocks_is_the_largest_weighted_mean():
    # the same draws by hand: the point with the largest Dirichlet-weighted mean wins each one
    data = {"a": {0: 0.50, 1: 0.53, 2: 0.51}, "b": {0: 0.52, 1: 0.50, 2: 0.515}, "c": {0: 0.51, 1: 0.515, 2: 0.52}}
    weights = np.random.default_rng(decision.P_BEST_SEED).dirichlet(np.ones(3), size=decision.P_BEST_DRAWS)
    means = weights @ np.array([[data[p][r] for p in "abc"] for r in range(3)])  # (D, 3)
    expected = np.bincount(means.argmax(axis=1), minlength=3) / decision.P_BEST_DRAWS
    chances = decision.p_best(data)
    assert [chances[p] for p in "abc"] == pytest.approx(list(expected))


def test_compute_used():
    # 3 points x 2 replicates at 100 steps, one pruned network at 40: 640 updates; longest 100; exhaustive 3 x 4 x 100
    used = decision.compute_used(640, 100, 1200)
    assert (used.updates, used.full_equivalents, used.exhaustive) == (640, 6.4, 1200)
    assert used.fraction == pytest.approx(640 / 1200)


def fine(**changes):
    return StudyConfig(kind="fine", name="fine", sampler="grid", grid=(0.0, 0.001, 0.002), **changes)


def test_the_kn_race_goes_on_with_the_survivors_then_stops_at_one():
    cfg = fine(n_seeds=3, delta=0.01, max_seeds=12)
    data = {"A": A, "B": B, "C": C}
    three = {p: {r: a for r, a in v.items() if r < 3} for p, v in data.items()}
    assert race.next_step(three, set(three), 3, cfg) == race.Step(("A", "B"), "")  # MCB: B is 5 points down
    assert race.next_step(data, {"A", "B"}, 4, cfg) == race.Step(("A",), race.ONE_LEFT)


def test_the_kn_race_stops_when_all_are_within_delta_or_at_the_budget():
    close = {"a": {0: 0.5015, 1: 0.5085, 2: 0.5206}, "b": {0: 0.500, 1: 0.510, 2: 0.520}}
    # a - b = 0.0015, -0.0015, 0.0006: D = 0.0002, S2 = (0.0013^2 + 0.0017^2 + 0.0004^2) / 2 = 2.37e-6.
    # KN, k = 2, n0 = 3: eta = 0.5 * (0.1 ** -1 - 1) = 4.5, h2 = 18; delta = 0.003:
    # W(3) = 0.003 / 6 * (18 * 2.37e-6 / 9e-6 - 3) = 0.00087 > 0.0002, both stay.
    # MCB, t_{0.95, 2} = 2.919986: w = 2.919986 * sqrt(2.37e-6) / sqrt(3) = 0.0025954; b's low bound
    # -0.0002 - 0.0025954 = -0.0027954 >= -0.003, a's -0.0023954: all within delta
    assert race.next_step(close, {"a", "b"}, 3, fine(n_seeds=3, delta=0.003)) == race.Step(("a", "b"),
                                                                                        race.WITHIN_DELTA)
    # delta 0.002: W(3) = 0.002 / 6 * (18 * 2.37e-6 / 4e-6 - 3) = 0.00256 > 0.0002, both stay; b's low bound
    # -0.0028 < -0.002: not all within; the budget of 3 ends the race
    assert race.next_step(close, {"a", "b"}, 3, fine(n_seeds=3, delta=0.002, max_seeds=3)) == race.Step(
        ("a", "b"), race.BUDGET)
    # ... which with a budget of 12 goes on
    assert race.next_step(close, {"a", "b"}, 3, fine(n_seeds=3, delta=0.002)) == race.Step(("a", "b"), "")


def test_the_holm_rule_is_todays_race():
    data = {"a": {0: 0.50, 1: 0.52, 2: 0.54}, "b": {0: 0.40, 1: 0.41, 2: 0.42}, "c": {0: 0.49, 1: 0.53, 2: 0.535}}
    assert race.next_step(data, set(data), 3, fine(race_rule="holm")) == race.Step(("a", "c"), "")
    assert race.next_step(data, set(data), 12, fine(race_rule="holm")).end == race.BUDGET
