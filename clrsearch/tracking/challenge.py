"""Champion and challenger: a newly registered version against the ``@champion`` version, on the same test images.

Both versions predict the test images from their verified files
(:mod:`.verify`). On N images, let b be those the champion classifies right
and the new version wrong, and c the reverse; the other images count for
neither. Then

- the accuracy difference, new minus champion, is (c - b) / N, with a 95%
  interval: the paired t interval of the per-image differences of correctness
  (``scipy.stats.ttest_rel``), whose values are +1 (c of them), -1 (b) and 0;
- the exact McNemar test: if both versions are equally accurate, each of the
  b + c discordant images favours either one with probability 1/2, so b is
  Binomial(b + c, 1/2); p is the two-sided ``scipy.stats.binomtest`` of b.
  (b = 1, c = 9: p = 2 (C(10,0) + C(10,1)) / 2^10 = 22/1024.)

The alias ``champion`` moves to the new version when it is not significantly
worse (p >= alpha, or it is the better one) and at least as accurate
(c >= b); as the second condition implies the first, a new version takes the
alias exactly when it classifies at least as many test images right. Otherwise
it gets the alias ``challenger``. ``promote`` (``python -m clrsearch.fine
--promote``) moves the alias whatever the comparison says, and the version's
tag ``forced_promotion`` and description record it. The first version of a
registered model becomes champion. Each decision is written into both
versions' descriptions (accuracies, difference and interval, b, c, p) and
into the new version's tags ``champion_decision`` (the alias it got, see
:func:`settle`), ``champion_reason`` (why, one line), ``compared_with_version``,
``mcnemar_p``, ``accuracy_difference``.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..errors import UsageError
from .verify import load_verified

CHALLENGER = "challenger"
# The new version's tags (see the module docstring).
DECISION_TAG, REASON_TAG, FORCED_TAG = "champion_decision", "champion_reason", "forced_promotion"
COMPARED_TAG, MCNEMAR_P_TAG, DIFFERENCE_TAG = "compared_with_version", "mcnemar_p", "accuracy_difference"
ALPHA = 0.05  # level of the McNemar test
CONFIDENCE = 0.95  # of the interval of the accuracy difference


@dataclass(frozen=True)
class Comparison:
    """Two classifiers on the same N images; accuracies and differences are fractions 0..1.

    Attributes
    ----------
    n : int, images
    champion_accuracy, challenger_accuracy : float
    b : int, images only the champion classifies right; c : int, only the challenger
    difference : float, challenger minus champion accuracy, (c - b) / n
    low, high : float, its 95% interval
    p_value : float, exact two-sided McNemar test of b against b + c at 1/2 (1 when b + c = 0)
    """

    n: int
    champion_accuracy: float
    challenger_accuracy: float
    b: int
    c: int
    difference: float
    low: float
    high: float
    p_value: float

    def promotes(self, alpha: float = ALPHA) -> bool:
        """Not significantly worse (p >= alpha, or better) and at least as accurate."""
        return (self.p_value >= alpha or self.c > self.b) and self.c >= self.b


def compare(labels, champion_pred, challenger_pred) -> Comparison:
    """The champion's and the challenger's predictions (N,) of the same images, labels (N,)."""
    labels = np.asarray(labels)
    right_champion = np.asarray(champion_pred) == labels  # (N,) bool
    right_challenger = np.asarray(challenger_pred) == labels  # (N,) bool
    n = labels.size
    b = int(np.sum(right_champion & ~right_challenger))
    c = int(np.sum(right_challenger & ~right_champion))
    difference = (c - b) / n
    if b + c == 0:  # identical correctness: no spread, nothing to test
        low = high = 0.0
        p_value = 1.0
    else:
        test = stats.ttest_rel(right_challenger.astype(float), right_champion.astype(float))
        interval = test.confidence_interval(CONFIDENCE)
        low, high = float(interval.low), float(interval.high)
        if math.isnan(low):  # one image, or every image discordant the same way: no spread either
            low = high = difference
        p_value = float(stats.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)
    return Comparison(n, float(np.mean(right_champion)), float(np.mean(right_challenger)), b, c, difference,
                      low, high, p_value)


@dataclass(frozen=True)
class TestImages:
    """The test images both versions predict: raw rows (N, 3072) uint8, labels (N,), and the new version's
    predictions (N,), made from its verified files."""

    __test__ = False  # not a pytest class

    rows: np.ndarray
    labels: np.ndarray
    challenger_pred: np.ndarray


def settle(client, name: str, version: str, test: TestImages, alias: str, promote: bool = False) -> str:
    """Give the new ``version`` of ``name`` the alias ``alias`` (champion) or ``challenger``, as described in the
    module docstring; returns the alias it got.

    Raises
    ------
    UsageError
        The champion's files fail verification, and ``promote`` is not set: the new version is left as
        challenger, and the message says how to proceed.
    """
    current = _aliased(client, name, alias)
    if current is None or current == version:
        client.set_registered_model_alias(name, alias, version)
        _tag(client, name, version, {DECISION_TAG: f"{alias} (first version)",
                                     REASON_TAG: f"the first version of {name}, nothing to compare with"})
        return alias
    if test.rows is None:
        raise ValueError("comparing a version with the champion needs the raw test rows (FinalModel.test_rows)")
    try:
        with tempfile.TemporaryDirectory(prefix="clrsearch-champion-") as folder:
            _, model = load_verified(f"models:/{name}/{current}", folder, client)
            champion_pred = np.asarray(model.predict(test.rows), dtype=np.int64)  # (N,)
    except UsageError as error:
        return _unverified_champion(client, name, (current, version), alias, promote, error)
    comparison = compare(test.labels, champion_pred, test.challenger_pred)
    wins = comparison.promotes()
    winner = alias if wins or promote else CHALLENGER
    client.set_registered_model_alias(name, winner, version)
    decision = alias if wins else f"{alias} (forced)" if promote else CHALLENGER
    verdict = _verdict(comparison, current, version, alias, promote)
    tags = {DECISION_TAG: decision, REASON_TAG: verdict.replace("`", ""), COMPARED_TAG: current,
            MCNEMAR_P_TAG: f"{comparison.p_value:.4g}", DIFFERENCE_TAG: f"{comparison.difference:+.4f}"}
    if promote and not wins:
        tags[FORCED_TAG] = "true"
    _tag(client, name, version, tags)
    _append(client, name, version, f"**Against the {alias}, version {current}**: "
                                    f"{describe(comparison, version, current)} {verdict}")
    _append(client, name, current, f"**Challenged by version {version}**: "
                                   f"{describe(comparison, version, current)} {verdict}")
    return winner


@dataclass(frozen=True)
class Settled:
    """What :func:`settle` made of a version: the aliases it holds (``champion``, ``challenger``; "" for none, once
    another version took its alias) and why, in one line (its tag ``champion_reason``)."""

    alias: str
    reason: str


def settled(client, name: str, version: str) -> Settled:
    """The alias and the reason :func:`settle` gave ``version`` of ``name``, as the registry holds them."""
    found = client.get_model_version(name, version)
    return Settled(", ".join(sorted(found.aliases)), found.tags.get(REASON_TAG, ""))


def describe(comparison: Comparison, version: str, champion: str) -> str:
    """One Markdown paragraph: accuracies, difference with its interval, b, c and the McNemar p-value."""
    k = comparison
    return (f"on {k.n} test images, version {version} {100 * k.challenger_accuracy:.2f} %, version {champion} "
            f"{100 * k.champion_accuracy:.2f} %; difference {100 * k.difference:+.2f} points, 95% interval "
            f"[{100 * k.low:+.2f}, {100 * k.high:+.2f}] (paired t); they disagree on {k.b + k.c} images: "
            f"b = {k.b} right by version {champion} only, c = {k.c} right by version {version} only; exact "
            f"McNemar p = {k.p_value:.4g} (two-sided binomial test of b out of b + c at 1/2).")


def _verdict(comparison: Comparison, champion: str, version: str, alias: str, promote: bool) -> str:
    k = comparison
    if k.promotes():
        why = "significantly more accurate" if k.c > k.b and k.p_value < ALPHA else "at least as accurate"
        return f"Version {version} is {why} and became `{alias}`, replacing version {champion}."
    why = (f"significantly less accurate (p < {ALPHA})" if k.p_value < ALPHA
           else "less accurate, though not significantly")
    if promote:
        return (f"Version {version} is {why}, but became `{alias}` anyway: promotion forced with --promote "
                f"(version {champion} held `{alias}` before).")
    return f"Version {version} is {why}: it is `{CHALLENGER}`, and version {champion} stays `{alias}`."


def _unverified_champion(client, name, versions, alias, promote, error) -> str:
    """The champion's files fail verification: with ``promote`` the alias moves all the same, else the new
    version becomes challenger and UsageError says why."""
    current, version = versions
    if promote:
        client.set_registered_model_alias(name, alias, version)
        _tag(client, name, version, {
            DECISION_TAG: f"{alias} (forced)", FORCED_TAG: "true", COMPARED_TAG: current,
            REASON_TAG: f"promotion forced with --promote, not compared with the {alias}, version {current}, whose "
                        f"files fail verification"})
        _append(client, name, version, f"**Promotion forced with --promote**: not compared with the {alias}, "
                                       f"version {current}, whose files fail verification ({error}).")
        return alias
    client.set_registered_model_alias(name, CHALLENGER, version)
    _tag(client, name, version, {DECISION_TAG: CHALLENGER, COMPARED_TAG: current,
                                 REASON_TAG: f"not compared: the {alias}, version {current}, fails verification"})
    _append(client, name, version, f"**Not compared**: the {alias}, version {current}, fails verification "
                                   f"({error}); version {version} is `{CHALLENGER}`.")
    raise UsageError(f"version {version} of {name} is registered as {CHALLENGER}: it could not be compared with "
                     f"the {alias}, version {current}, whose files fail verification ({error}); check the store, "
                     f"or make version {version} the {alias} with --promote") from error


def _tag(client, name, version, tags: dict):
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def _aliased(client, name, alias) -> str | None:
    versions = client.get_registered_model(name).aliases  # alias -> version
    return str(versions[alias]) if alias in versions else None


def _append(client, name, version, paragraph: str):
    """Add ``paragraph`` to the description of ``version``."""
    before = client.get_model_version(name, version).description or ""
    client.update_model_version(name, version, description=f"{before}\n\n{paragraph}".strip())
