"""Paired comparison of trials with the best one, replicate by replicate.

Replicate r of every trial starts from the same initial weights and sees the
same mini-batches (see :mod:`.population`), so two trials' accuracies on
replicate r differ by their settings, not by luck of the draw. For each trial
the differences d_r = a_trial[r] - a_best[r] over the replicates both have give

- ``delta``: the mean paired difference, with its two-sided confidence
  interval mean ± t_{n-1} · s / sqrt(n);
- ``p_raw``: the one-sided p-value of the paired t-test (H1: the trial is
  worse than the best), ``scipy.stats.ttest_rel(..., alternative="less")``;
- ``p``: ``p_raw`` Holm-corrected over all comparisons of the study;
- ``verdict``: ``best``, ``worse`` (p < alpha) or ``tied``.

Why the t-test and not the Wilcoxon signed-rank test: with n replicates the
smallest one-sided p-value Wilcoxon can give is 1 / 2**n, i.e. 0.125 for
n = 3 and 0.0625 for n = 4, so at alpha = 0.05 it could never call a trial
worse with the default 3 replicates. The t-test needs roughly normal
differences, which accuracies averaged over thousands of validation images
have.

Edge cases: with fewer than 2 common replicates nothing can be tested (p is
NaN, the verdict ``tied``); when all differences are equal the spread is 0
and the test is decided by their sign (p = 0 if they are negative, else 1).
"""

import math
from dataclasses import dataclass

import numpy as np

PAIRED_TEST = "paired t-test (scipy.stats.ttest_rel, one-sided), Holm-corrected"


@dataclass(frozen=True)
class Comparison:
    """One trial against the best, on their common replicates; accuracies as fractions 0..1."""

    n: int  # common replicates
    delta: float  # mean paired difference trial - best (0 for the best)
    ci_low: float  # two-sided confidence interval of delta (NaN when n < 2)
    ci_high: float
    p_raw: float  # one-sided paired t-test, before the Holm correction (NaN: untested)
    p: float  # Holm-corrected
    verdict: str  # best | tied | worse


def best_key(accuracies):
    """The key whose replicates have the largest mean accuracy (the smallest key among equals)."""
    return max(sorted(accuracies), key=lambda key: np.mean(list(accuracies[key].values())))


def compare_to_best(accuracies, alpha=0.05, confidence=0.95, best=None):
    """Compare every entry with the best one.

    Parameters
    ----------
    accuracies : dict key -> dict replicate id -> accuracy; every entry needs at least one replicate
    alpha : float, level of the Holm-corrected test
    confidence : float, level of the intervals of ``delta``
    best : the key compared with, e.g. a race's winner (None: :func:`best_key`, the largest mean)

    Returns
    -------
    dict key -> Comparison (an empty dict for no entries)
    """
    if not accuracies:
        return {}
    best = best_key(accuracies) if best is None else best
    raw = {key: _paired(accuracies[key], accuracies[best], confidence) for key in accuracies if key != best}
    adjusted = holm({key: p for key, (_, _, _, _, p) in raw.items()})
    out = {best: Comparison(len(accuracies[best]), 0.0, 0.0, 0.0, float("nan"), float("nan"), "best")}
    for key, (n, delta, low, high, p_raw) in raw.items():
        p = adjusted[key]
        out[key] = Comparison(n, delta, low, high, p_raw, p, "worse" if p < alpha else "tied")
    return out


def holm(p_values):
    """Holm's step-down adjustment of a dict key -> p-value; NaN values are left out of the family.

    The i-th smallest of m p-values becomes max over j <= i of min(1, (m - j + 1) p_(j)).
    """
    finite = sorted((p, key) for key, p in p_values.items() if not math.isnan(p))
    m = len(finite)
    adjusted, running = {}, 0.0
    for i, (p, key) in enumerate(finite):
        running = max(running, min(1.0, (m - i) * p))
        adjusted[key] = running
    return {key: adjusted.get(key, float("nan")) for key in p_values}


def _paired(trial, best, confidence):
    """(n, mean difference, CI low, CI high, one-sided p) of ``trial`` - ``best`` on their common replicates."""
    from scipy import stats  # imported here: scipy is slow to load, and only a study's comparisons need it

    common = sorted(set(trial) & set(best))
    a = np.array([trial[r] for r in common], dtype=float)  # (n,)
    b = np.array([best[r] for r in common], dtype=float)  # (n,)
    n = len(common)
    d = a - b  # (n,)
    delta = float(d.mean()) if n else float("nan")
    if n < 2:
        return n, delta, float("nan"), float("nan"), float("nan")
    spread = float(d.std(ddof=1))
    if spread == 0.0:
        return n, delta, delta, delta, 0.0 if delta < 0 else 1.0
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * spread / math.sqrt(n)
    p = float(stats.ttest_rel(a, b, alternative="less").pvalue)
    return n, delta, delta - half, delta + half, p
