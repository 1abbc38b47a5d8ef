"""Champion and challenger (clrsearch.tracking.challenge): the comparison on hand-worked tables (McNemar's exact
p-value as a sum of binomial coefficients, the paired t interval in closed form), the rule that moves the alias,
and, end to end in a temporary store, a worse second version left as challenger unless promoted, and a champion
whose files fail verification."""

import math
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from scipy import stats

from clrsearch import tracking
from clrsearch.errors import UsageError
from clrsearch.nn import network
from clrsearch.tracking import challenge


def predictions(n_both, n_neither, b, c):
    """Labels and two prediction vectors: both right on n_both, both wrong on n_neither, only the champion
    right on b, only the challenger right on c."""
    n = n_both + n_neither + b + c
    labels = np.zeros(n, int)
    champion = np.r_[np.zeros(n_both), np.ones(n_neither), np.zeros(b), np.ones(c)].astype(int)
    challenger = np.r_[np.zeros(n_both), np.ones(n_neither), np.ones(b), np.zeros(c)].astype(int)
    return labels, champion, challenger


def test_b1_c9_is_mcnemar_22_over_1024_and_a_paired_t_interval():
    labels, champion, challenger = predictions(n_both=6, n_neither=4, b=1, c=9)  # n = 20
    k = challenge.compare(labels, champion, challenger)
    assert (k.n, k.b, k.c) == (20, 1, 9)
    # Two-sided exact test: P(B <= 1) + P(B >= 9) for B ~ Binomial(10, 1/2) = 2 (C(10,0) + C(10,1)) / 2^10.
    assert k.p_value == pytest.approx(22 / 1024, rel=1e-12)
    assert (k.champion_accuracy, k.challenger_accuracy) == (7 / 20, 15 / 20)
    assert k.difference == pytest.approx(8 / 20)
    # Per-image differences: nine +1, one -1, ten 0; mean 0.4, sample variance (10 - 20 * 0.4^2) / 19.
    half = stats.t.ppf(0.975, 19) * math.sqrt((10 - 20 * 0.16) / 19 / 20)
    assert (k.low, k.high) == (pytest.approx(0.4 - half), pytest.approx(0.4 + half))
    assert k.promotes()


def test_the_other_way_round_is_significantly_worse_and_stays_challenger():
    labels, champion, challenger = predictions(n_both=6, n_neither=4, b=9, c=1)
    k = challenge.compare(labels, champion, challenger)
    assert k.p_value == pytest.approx(22 / 1024) and k.difference == pytest.approx(-0.4)
    assert not k.promotes()


@pytest.mark.parametrize("b, c, p, promotes", [
    (3, 2, 1.0, False),  # less accurate, not significantly: P(B<=2)+P(B>=3) of Binomial(5, 1/2) = 1
    (2, 2, 1.0, True),  # as accurate
    (0, 5, 2 / 32, True),  # better, not significantly: 2 C(5,0) / 2^5
    (0, 0, 1.0, True),  # identical correctness
])
def test_the_alias_moves_exactly_when_the_challenger_is_at_least_as_accurate(b, c, p, promotes):
    labels, champion, challenger = predictions(n_both=10, n_neither=5, b=b, c=c)
    k = challenge.compare(labels, champion, challenger)
    assert k.p_value == pytest.approx(p) and k.promotes() is promotes


def test_identical_correctness_has_an_empty_interval():
    labels, champion, challenger = predictions(n_both=3, n_neither=2, b=0, c=0)
    k = challenge.compare(labels, champion, challenger)
    assert (k.difference, k.low, k.high, k.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_the_description_names_both_accuracies_the_interval_b_c_and_p():
    labels, champion, challenger = predictions(n_both=6, n_neither=4, b=1, c=9)
    text = challenge.describe(challenge.compare(labels, champion, challenger), "3", "2")
    assert "version 3 75.00 %, version 2 35.00 %" in text and "difference +40.00 points" in text
    assert "b = 1 right by version 2 only, c = 9 right by version 3 only" in text and "p = 0.02148" in text


# ----------------------------------------------------------------------------- end to end, in a store


def log_version(tiny_ensemble, nets, name, promote=False):
    """Register ``nets`` as a new version of ``name``; returns its version number."""
    splits = tiny_ensemble.splits
    pred = network.ensemble_predict(nets, splits.test.X)
    final = tracking.FinalModel(
        run_name="final:challenge", params={"lam": 0.01}, history=tiny_ensemble.result.history, member=0,
        val_accuracy=0.25, test_accuracy=float(np.mean(pred == splits.test.y)), test_true=splits.test.y,
        test_pred=pred, class_names=splits.label_names, networks=nets, normaliser=splits.normaliser,
        dtype="float32", input_example=tiny_ensemble.rows[:2], test_rows=tiny_ensemble.rows)
    return tracking.log_final_model(final, "challenge", registered_name=name, promote=promote)[1]


def untrained(tiny_ensemble):
    """The first network with its output layer zeroed: it predicts class 0 for every image."""
    net = {key: value.copy() for key, value in tiny_ensemble.nets[0].items()}
    net["W2"][:] = 0
    net["b2"][:] = 0
    return net


def aliases(store, name):
    return {alias: str(version) for alias, version in store.get_registered_model(name).aliases.items()}


@pytest.mark.slow
def test_a_worse_second_version_is_challenger_and_promote_moves_the_alias(store, tiny_ensemble):
    name = "clrsearch-challenge"
    good, bad = tiny_ensemble.nets, untrained(tiny_ensemble)
    labels = tiny_ensemble.labels
    right_good = network.ensemble_predict(good, tiny_ensemble.splits.test.X) == labels
    right_bad = labels == 0
    b, c = int(np.sum(right_good & ~right_bad)), int(np.sum(right_bad & ~right_good))
    assert b > c  # the tiny ensemble beats a constant guess

    assert log_version(tiny_ensemble, good, name) == "1"
    assert aliases(store, name) == {"champion": "1"}
    assert store.get_model_version(name, "1").tags["champion_decision"] == "champion (first version)"

    assert log_version(tiny_ensemble, [bad], name) == "2"
    assert aliases(store, name) == {"champion": "1", "challenger": "2"}
    second = store.get_model_version(name, "2")
    assert second.tags["champion_decision"] == "challenger" and second.tags["compared_with_version"] == "1"
    p = stats.binomtest(b, b + c, 0.5).pvalue
    assert float(second.tags["mcnemar_p"]) == pytest.approx(p, rel=1e-3)
    assert f"b = {b} right by version 1 only, c = {c} right by version 2 only" in second.description
    assert "it is `challenger`, and version 1 stays `champion`" in second.description
    assert "**Challenged by version 2**" in store.get_model_version(name, "1").description

    assert log_version(tiny_ensemble, [bad], name, promote=True) == "3"
    assert aliases(store, name) == {"champion": "3", "challenger": "2"}
    third = store.get_model_version(name, "3")
    assert third.tags["forced_promotion"] == "true" and third.tags["champion_decision"] == "champion (forced)"
    assert "forced with --promote" in third.description and "compared_with_version" in third.tags


@pytest.mark.slow
def test_a_champion_whose_files_changed_is_not_trusted(store, tiny_ensemble, tmp_path):
    name = "clrsearch-tampered"
    assert log_version(tiny_ensemble, tiny_ensemble.nets, name) == "1"
    folder = Path(urlparse(store.get_model_version_download_uri(name, "1")).path)
    marker = tmp_path / "marker"
    with (folder / "cifar_classifier.py").open("a") as f:
        f.write(f"open({str(marker)!r}, 'w').write('ran')\n")
    with pytest.raises(UsageError, match="version 2 of clrsearch-tampered is registered as challenger: .* "
                                         "file cifar_classifier.py differs") as error:
        log_version(tiny_ensemble, tiny_ensemble.nets, name)
    assert "\n" not in str(error.value) and not marker.exists()
    assert aliases(store, name) == {"champion": "1", "challenger": "2"}
    assert log_version(tiny_ensemble, tiny_ensemble.nets, name, promote=True) == "3"
    assert aliases(store, name) == {"champion": "3", "challenger": "2"} and not marker.exists()
    assert store.get_model_version(name, "3").tags["forced_promotion"] == "true"


@pytest.mark.slow
def test_fine_leaves_a_worse_final_model_as_challenger_unless_promoted(tracked_tiny_cifar, study_url, capsys):
    from clrsearch import fine
    from helpers import TINY_FINE, TINY_STUDY

    from mlflow.tracking import MlflowClient

    args = ["--data-dir", str(tracked_tiny_cifar), "--storage", study_url, *TINY_STUDY, *TINY_FINE]
    name = tracking.REGISTERED_NAME

    def registered_line(version):
        """The line the command printed about the version it registered."""
        lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("registered as ")]
        assert len(lines) == 1 and lines[0].startswith(f"registered as models:/{name}/{version} (alias ")
        return lines[0]

    assert fine.main(args + ["--study-name", "good", "--grid", "0.01"]) == 0
    assert "(alias champion: the first version of clrsearch-cifar10, nothing to compare with)" in registered_line(1)
    assert fine.main(args + ["--study-name", "worse", "--grid", "5"]) == 0  # lambda 5: all weight decay
    client = MlflowClient()
    accuracy = {v: float(client.get_model_version(name, v).tags["test_accuracy"]) for v in ("1", "2")}
    assert accuracy["2"] < accuracy["1"]
    assert aliases(client, name) == {"champion": "1", "challenger": "2"}
    second = client.get_model_version(name, "2")
    reason = second.tags["champion_reason"]
    assert f"(alias challenger: {reason})" in registered_line(2) and "\n" not in reason
    assert reason.startswith("Version 2 is ") and reason.endswith("it is challenger, and version 1 stays champion.")
    assert reason in second.description.replace("`", "")
    assert fine.main(args + ["--study-name", "forced", "--grid", "5", "--promote"]) == 0
    assert aliases(client, name) == {"champion": "3", "challenger": "2"}
    assert client.get_model_version(name, "3").tags["forced_promotion"] == "true"
    assert "(alias champion: Version 3 is " in registered_line(3) and "promotion forced with --promote" in reason_of(
        client, name, "3")


def reason_of(client, name, version):
    return client.get_model_version(name, version).tags["champion_reason"]
