"""LR range test: the suggestion rule on hand-made curves, and a ramp on tiny data."""

import numpy as np
import pytest

from clrsearch import lrrange
from clrsearch.config import TrainConfig
from clrsearch.data import load_splits
from conftest import write_tiny_cifar


def test_suggestion_is_the_rise_and_the_peak_of_the_accuracy():
    etas = np.linspace(0.0, 1.0, 11)
    accuracy = np.array([0.1, 0.1, 0.1, 0.3, 0.5, 0.7, 0.9, 0.8, 0.4, 0.2, 0.1])
    eta_min, eta_max = lrrange.suggest(etas, accuracy, rise=0.1, smooth=1)
    # start 0.1, peak 0.9 at eta 0.6; threshold 0.1 + 0.1 * 0.8 = 0.18, first reached at eta 0.3
    assert (eta_min, eta_max) == pytest.approx((0.3, 0.6))


def test_a_diverged_tail_counts_as_a_fall():
    etas = np.linspace(0.1, 1.0, 10)
    accuracy = np.array([0.1, 0.2, 0.4, 0.6, 0.5, np.nan, np.nan, np.nan, np.nan, np.nan])
    assert lrrange.suggest(etas, accuracy, smooth=1)[1] == pytest.approx(0.4)


def test_range_test_ramps_eta_linearly_on_tiny_data(tmp_path):
    splits = load_splits("batch1", write_tiny_cifar(tmp_path, n_per_batch=200, n_test=50))
    test = lrrange.RangeTest(eta_low=1e-4, eta_high=0.5, epochs=3, points=6, n_seeds=2)
    result = lrrange.run_range_test(splits, TrainConfig(n_batch=20, hidden=8), test)
    steps = 3 * (200 // 20)
    assert result.etas[0] == pytest.approx(1e-4) and result.etas[-1] == pytest.approx(1e-4 + (0.5 - 1e-4))
    assert len(result.etas) == 7  # the start and 6 points along the ramp
    assert np.all(np.diff(result.etas) > 0) and steps == 30
    assert 1e-4 <= result.eta_min < result.eta_max <= 0.5
