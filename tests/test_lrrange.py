"""LR range test: the suggestion rule on hand-made curves, a ramp on tiny data, and the command
logging its run to a temporary MLflow store."""

import json

import numpy as np
import pytest
from PIL import Image

from clrsearch import lrrange as command
from clrsearch.config import DataConfig, RangeTest, TrainConfig
from clrsearch.data import load_splits
from clrsearch.nn import lrrange
from helpers import write_tiny_cifar


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
    splits = load_splits(DataConfig("batch1", data_dir=str(write_tiny_cifar(tmp_path, n_per_batch=200, n_test=50))))
    test = RangeTest(eta_low=1e-4, eta_high=0.5, epochs=3, points=6, n_seeds=2)
    result = lrrange.run_range_test(splits, TrainConfig(n_batch=20, hidden=8), test)
    # 3 epochs of 200 / 20 = 10 updates: a ramp of 30 steps, measured at the start and every 30 / 6 = 5 steps.
    # eta rises by (0.5 - 1e-4) / 30 per step, so the points lie on the line from 1e-4 to 0.5 in 6 equal steps.
    line = 1e-4 + (0.5 - 1e-4) * np.array([0, 5, 10, 15, 20, 25, 30]) / 30
    np.testing.assert_allclose(result.etas, line, rtol=1e-12)
    assert result.accuracy.shape == result.loss.shape == (7,)
    assert np.all((0 <= result.accuracy) & (result.accuracy <= 1)) and np.all(np.isfinite(result.loss))
    assert (result.eta_min, result.eta_max) == lrrange.suggest(result.etas, result.accuracy, test.rise, test.smooth)
    assert 1e-4 <= result.eta_min < result.eta_max <= 0.5


def test_command_logs_the_suggestion_the_curve_and_the_plot(store, tmp_path, capsys):
    folder = write_tiny_cifar(tmp_path / "data", n_per_batch=100, n_test=20)
    plot = tmp_path / "range.png"
    assert command.main(["--data-dir", str(folder), "--split", "batch1", "--epochs", "2", "--points", "5",
                         "--n-batch", "20", "--hidden", "8", "--n-seeds", "2", "--eta-low", "0.001",
                         "--eta-high", "0.2", "--experiment", "range", "--out", str(plot), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    # 2 epochs of 100 / 20 = 5 updates: a ramp of 10 steps, measured at the start and every 10 / 5 = 2 steps.
    np.testing.assert_allclose(printed["etas"], 0.001 + 0.199 * np.array([0, 2, 4, 6, 8, 10]) / 10, rtol=1e-12)
    run = store.get_run(printed["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["kind"] == "lr_range_test"
    assert run.data.metrics["suggested_eta_min"] == pytest.approx(printed["eta_min"])
    assert run.data.metrics["suggested_eta_max"] == pytest.approx(printed["eta_max"])
    params = run.data.params
    assert (params["range.eta_low"], params["range.eta_high"], params["range.points"]) == ("0.001", "0.2", "5")
    assert (params["data.split"], params["train.n_batch"], params["train.hidden"]) == ("batch1", "20", "8")
    artifacts = {a.path for a in store.list_artifacts(run.info.run_id)}
    assert {"trials.csv", "lr_range.png"} <= artifacts
    # batch1: the 100 images of data_batch_1 train, the 100 of data_batch_2 validate
    inputs = {tuple(t.value for t in i.tags): int(json.loads(i.dataset.profile)["num_rows"])
              for i in run.inputs.dataset_inputs}
    assert inputs == {("training",): 100, ("validation",): 100}
    with Image.open(plot) as image:
        assert image.format == "PNG"
