"""Which point is best, with a stated guarantee: pure functions on dict point -> dict replicate -> accuracy.

Accuracies are fractions 0..1, larger is better. Replicate r of every point
shares a block (common random numbers: the same initial weights and
mini-batches, see :mod:`.population`), so points are compared on the
differences of their replicates.

- :func:`kn_screen`: Kim & Nelson's fully sequential procedure KN (2001, "A
  fully sequential procedure for indifference-zone selection in simulation",
  ACM TOMACS 11(3)). With n0 first-stage replicates and k points,
  eta = ((2 alpha / (k - 1))^(-2 / (n0 - 1)) - 1) / 2 and h2 = 2 eta (n0 - 1);
  S2_il is the sample variance (ddof 1) of X_i - X_l over the first n0
  replicates. At every r >= n0 a point i stays iff
  mean_i(r) >= mean_l(r) - W_il(r) for every l still in, with
  W_il(r) = max(0, delta / (2 r) * (h2 S2_il / delta^2 - r)). If the best
  point is at least ``delta`` better than every other, it survives to the end
  with probability >= 1 - alpha (normal, independent blocks; no truncation).
- :func:`mcb`: Hsu's multiple comparisons with the best in the paired form
  with a Bonferroni critical value (Nelson & Matejcik 1995): simultaneous
  intervals for mu_i - max_{j != i} mu_j; the points whose upper bound is
  > 0 form the *best set*, which holds the true best with probability
  >= 1 - alpha.
- :func:`p_best`: each point's probability of being the best under a
  Bayesian bootstrap over whole blocks.
- :func:`compute_used`: network updates trained, against an exhaustive study.
"""

import math
from dataclasses import dataclass

import numpy as np

P_BEST_DRAWS = 4000  # Bayesian-bootstrap draws of P(best)
P_BEST_SEED = 0  # seed of their numpy Generator


def kn_eta(k, n0, alpha):
    """KN's eta = ((2 alpha / (k - 1))^(-2 / (n0 - 1)) - 1) / 2 for k points and n0 first-stage replicates."""
    if k < 2 or n0 < 2:
        raise ValueError(f"KN needs k >= 2 points and n0 >= 2 first-stage replicates, not k={k}, n0={n0}")
    return 0.5 * ((2 * alpha / (k - 1)) ** (-2 / (n0 - 1)) - 1)


def kn_h2(k, n0, alpha):
    """KN's h^2 = 2 eta (n0 - 1)."""
    return 2 * kn_eta(k, n0, alpha) * (n0 - 1)


def kn_width(s2, r, h2, delta):
    """KN's W_il(r) = max(0, delta / (2 r) * (h2 S2_il / delta^2 - r)): how far below another a point may be."""
    return max(0.0, delta / (2 * r) * (h2 * s2 / delta ** 2 - r))


def _first(accuracies, point, r):
    """The accuracies of ``point``'s first ``r`` replicates (by replicate id), as an array (r,)."""
    values = accuracies[point]
    return np.array([values[key] for key in sorted(values)[:r]], dtype=float)


@dataclass(frozen=True)
class Screening:
    """What KN's screening kept, up to some replicate count."""

    survivors: tuple  # points still in, sorted
    eliminated: dict  # point -> the replicate count r at which it left
    k: int  # points that entered (those with at least n0 replicates)
    h2: float  # KN's h^2 (NaN when k < 2)


def kn_screen(accuracies, n0, delta, alpha, upto):
    """KN's screening at r = n0, n0 + 1, ..., ``upto`` in turn, from the start (a function of the data alone).

    Parameters
    ----------
    accuracies : dict point -> dict replicate -> accuracy; a point's replicates in the order of their ids
    n0 : int >= 2, first-stage replicates (the first round's)
    delta : float > 0, the indifference zone, as a fraction
    alpha : float in (0, 1)
    upto : int, the last replicate count screened at

    A point with fewer than n0 replicates does not enter; a point still in
    without r replicates at step r leaves at r.
    """
    entered = sorted(p for p, values in accuracies.items() if len(values) >= n0)
    eliminated = {p: n0 for p in accuracies if p not in entered}
    if len(entered) < 2:
        return Screening(tuple(entered), eliminated, len(entered), float("nan"))
    h2 = kn_h2(len(entered), n0, alpha)
    first = {p: _first(accuracies, p, n0) for p in entered}  # p -> (n0,)
    s2 = {(i, l): float(np.var(first[i] - first[l], ddof=1)) for i in entered for l in entered if i != l}
    alive = entered
    for r in range(n0, upto + 1):
        missing = [p for p in alive if len(accuracies[p]) < r]
        eliminated.update({p: r for p in missing})
        alive = [p for p in alive if p not in missing]
        means = {p: float(_first(accuracies, p, r).mean()) for p in alive}
        keep = [i for i in alive if all(means[i] >= means[l] - kn_width(s2[i, l], r, h2, delta)
                                        for l in alive if l != i)]
        eliminated.update({p: r for p in alive if p not in keep})
        alive = keep
        if len(alive) < 2:
            break
    return Screening(tuple(alive), eliminated, len(entered), h2)


@dataclass(frozen=True)
class Interval:
    """MCB's simultaneous interval for mu_i - max_{j != i} mu_j, accuracies as fractions."""

    low: float  # <= 0
    high: float  # >= 0
    margin: float = math.inf  # min_j (D_ij + w_ij) before the clipping at 0; >= 0: the point is in the best set


def mcb(accuracies, alpha):
    """Hsu's constrained MCB intervals, paired, Bonferroni critical value, on each pair's common replicates.

    For points i, j with n common replicates: D_ij = mean of X_i - X_j, S_ij
    its standard deviation (ddof 1), w_ij = t_{1 - alpha / (k - 1), n - 1}
    S_ij / sqrt(n) (``scipy.stats.t``; infinite when n < 2). Point i's
    interval is [-(min_j (D_ij - w_ij))^-, (min_j (D_ij + w_ij))^+], with
    x^- = max(0, -x) and x^+ = max(0, x).

    Returns
    -------
    dict point -> Interval; a lone point gets [0, inf)
    """
    # the best set is {i: upper bound > 0}; :func:`best_set` takes margin >= 0, the same but for points tied
    # exactly with no spread (upper bound 0), which it keeps
    from scipy import stats  # imported here: scipy is slow to load

    points = sorted(accuracies)
    k = len(points)
    if k == 1:
        return {points[0]: Interval(0.0, math.inf)}
    lows, highs = {i: math.inf for i in points}, {i: math.inf for i in points}
    critical = {}  # n -> t_{1 - alpha / (k - 1), n - 1}
    for i in points:
        for j in points:
            if i == j:
                continue
            common = sorted(set(accuracies[i]) & set(accuracies[j]))
            d = np.array([accuracies[i][r] - accuracies[j][r] for r in common], dtype=float)  # (n,)
            n = len(common)
            mean = float(d.mean()) if n else 0.0
            if n >= 2 and n not in critical:
                critical[n] = float(stats.t.ppf(1 - alpha / (k - 1), n - 1))
            w = critical[n] * float(d.std(ddof=1)) / math.sqrt(n) if n >= 2 else math.inf
            lows[i] = min(lows[i], mean - w)
            highs[i] = min(highs[i], mean + w)
    return {i: Interval(-max(0.0, -lows[i]), max(0.0, highs[i]), highs[i]) for i in points}


def best_set(intervals):
    """The points whose MCB upper bound is > 0, sorted: they hold the true best with probability >= 1 - alpha.

    Points tied exactly with the largest mean and no spread (upper bound 0, ``margin`` 0) are kept as well.
    """
    return tuple(sorted(p for p, interval in intervals.items() if interval.high > 0 or interval.margin >= 0))


def all_within(intervals, delta):
    """Whether every point is within ``delta`` of the best by MCB: every lower bound >= -delta."""
    return all(interval.low >= -delta for interval in intervals.values())


def p_best(accuracies, draws=P_BEST_DRAWS, seed=P_BEST_SEED):
    """Each point's probability of being the best under a Bayesian bootstrap over whole blocks.

    A draw gives the blocks (replicate ids) Dirichlet(1, ..., 1) weights. Two
    points are compared, as the race compares them, on the blocks both have:
    i beats j when the weighted mean of X_i - X_j over those blocks (the
    weights renormalised over them) is > 0, and a difference of exactly 0 is
    half a win. The best of a draw is the point with the most wins (every
    other point beaten, when one does), the points tied for most sharing it.
    Comparing on common blocks matters in a race: blocks differ in difficulty
    (their validation folds), and a point that left early has only the first
    blocks. With every point on the same blocks this is the point with the
    largest weighted mean. ``numpy.random.default_rng(seed)``.

    Returns
    -------
    dict point -> probability; the values sum to 1
    """
    points = sorted(accuracies)
    if not points:
        return {}
    blocks = sorted(set().union(*(accuracies[p] for p in points)))
    index = {b: c for c, b in enumerate(blocks)}
    values = np.zeros((len(points), len(blocks)))  # (P, B)
    has = np.zeros((len(points), len(blocks)))  # (P, B) 1 where the point has the block
    for i, p in enumerate(points):
        for b, a in accuracies[p].items():
            values[i, index[b]], has[i, index[b]] = a, 1.0
    weights = np.random.default_rng(seed).dirichlet(np.ones(len(blocks)), size=draws)  # (D, B)
    wins = np.zeros((draws, len(points)))  # (D, P)
    for i in range(len(points)):
        for j in range(i + 1, len(points)):
            common = has[i] * has[j]  # (B,)
            if not common.any():
                wins[:, [i, j]] += 0.5
                continue
            diff = (weights @ ((values[i] - values[j]) * common)) / (weights @ common)  # (D,)
            diff[np.isclose(diff, 0.0, rtol=0.0, atol=1e-12)] = 0.0
            wins[:, i] += (diff > 0) + 0.5 * (diff == 0)
            wins[:, j] += (diff < 0) + 0.5 * (diff == 0)
    top = wins == wins.max(axis=1, keepdims=True)  # (D, P)
    share = (top / top.sum(axis=1, keepdims=True)).mean(axis=0)  # (P,)
    return {p: float(s) for p, s in zip(points, share)}


@dataclass(frozen=True)
class Compute:
    """Network updates a study trained, against an exhaustive study."""

    updates: int  # sum over trained networks of the update steps each trained
    full_equivalents: float  # updates / the grid's longest schedule: networks trained in full
    exhaustive: int  # updates of every point x the replicate budget
    fraction: float  # updates / exhaustive


def compute_used(updates, longest, exhaustive):
    """A Compute from the updates trained, the longest schedule (steps) and the exhaustive study's updates."""
    return Compute(int(updates), updates / longest if longest else float("nan"), int(exhaustive),
                   updates / exhaustive if exhaustive else float("nan"))
