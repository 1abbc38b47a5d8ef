"""The ``python -m clrsearch.train`` command (:mod:`clrsearch.cli.train`, :mod:`clrsearch.nn.experiment`)
on a tiny CIFAR-10 copy: its JSON summary, its plots, and one line with exit status 2 on bad input."""

import json
import os
import runpy
import subprocess
import sys
import warnings

import numpy as np
import pytest

from clrsearch import train as command
from clrsearch.config import DataConfig, Experiment, TrainConfig
from clrsearch.data import download, load_splits
from clrsearch.nn import network
from clrsearch.nn.experiment import run_experiment
from helpers import write_tiny_cifar

SMALL = ["--n-s", "10", "--n-batch", "20", "--hidden", "8", "--quiet", "--no-mlflow"]
PLOTS = ("learning_curves", "eta", "confusion_test", "class_distribution")
# A proxy on a closed local port: a download attempt fails at once instead of reaching the network.
NO_NETWORK = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
              "http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
              "no_proxy": "", "NO_PROXY": ""}


def run_main(argv, capsys):
    """Exit status, stdout and stderr of ``python -m clrsearch.train`` run in this process."""
    try:
        status = command.main(argv)
    except SystemExit as stop:
        status = stop.code
    out, err = capsys.readouterr()
    return status, out, err


def test_json_summary_and_plots(tiny_cifar, tmp_path, capsys):
    out_dir = tmp_path / "plots"
    status, out, err = run_main(["--preset", "fig3", "--data-dir", str(tiny_cifar), *SMALL, "--seed", "2",
                                 "--json", "--out", str(out_dir)], capsys)
    assert status == 0, err
    summary = json.loads(out)  # the whole of stdout is one JSON object
    for split in ("train", "val", "test"):
        assert 0.0 <= summary[f"{split}_accuracy"] <= 1.0
    # 200 images of 10 well-separated classes: far above the 10% of chance.
    assert summary["test_accuracy"] > 0.3
    assert summary["status"] == "finished" and summary["preset"] == "fig3" and summary["seed"] == 2
    train = summary["config"]["train"]
    assert (train["n_s"], train["n_batch"], train["hidden"], train["shuffle_seed"]) == (10, 20, 8, 2)
    assert summary["config"]["lam"] == 0.01
    for stem in PLOTS:
        png = out_dir / f"{stem}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", stem
    assert sorted(summary["plots"]) == sorted(str(out_dir / f"{stem}.png") for stem in PLOTS)


BAD_INPUT = {
    "eta_min >= eta_max": (["--eta-min", "0.1", "--eta-max", "0.01"], "eta_min"),
    "n_s = 0": (["--n-s", "0"], "--n-s"),
    "cycles = 0": (["--cycles", "0"], "--cycles"),
    "n_batch = 0": (["--n-batch", "0"], "--n-batch"),
    "n_batch > training set": (["--n-batch", "500"], "n_batch"),
    "negative lambda": (["--lam", "-0.5"], "--lam"),
    "unknown preset": (["--preset", "fig5"], "--preset"),
}


def test_run_experiment_measures_the_trained_network_on_every_split(tiny_cifar):
    splits = load_splits(DataConfig("batch1", data_dir=str(tiny_cifar)))
    experiment = Experiment(DataConfig("batch1"), TrainConfig(n_batch=20, n_s=10, hidden=8), lam=0.01, seed=3)
    outcome = run_experiment(experiment, splits)
    net = network.member(outcome.result.params, 0)
    predictions = np.argmax(network.forward(net, splits.test.X), axis=0)
    np.testing.assert_array_equal(outcome.test_predictions, predictions)
    assert outcome.test_accuracy == np.mean(predictions == splits.test.y)
    for split in ("train", "val"):
        s = getattr(splits, split)
        expected = np.mean(np.argmax(network.forward(net, s.X), axis=0) == s.y)
        assert getattr(outcome, f"{split}_accuracy") == expected, split
    assert outcome.summary() == {"train_accuracy": outcome.train_accuracy, "val_accuracy": outcome.val_accuracy,
                                 "test_accuracy": outcome.test_accuracy, "status": "finished", "lam": 0.01, "seed": 3}
    assert outcome.result.seeds == (3,) and outcome.result.history.eta.size == 2 * 10


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_exits_2_with_one_line(case, tiny_cifar, tmp_path, capsys, offline):
    flags, name = BAD_INPUT[case]
    argv = ["--data-dir", str(tiny_cifar), "--out", str(tmp_path / "plots"), "--n-s", "2", "--quiet", "--no-mlflow",
            *flags]
    status, out, err = run_main(argv, capsys)
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and name in err, err
    assert out == ""
    assert not (tmp_path / "plots").exists()


def test_missing_data_directory_exits_2_with_one_line(tmp_path, capsys, offline):
    missing = tmp_path / "nowhere"
    status, out, err = run_main(["--data-dir", str(missing), *SMALL, "--out", str(tmp_path / "plots")], capsys)
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and "nowhere" in err, err


def test_incomplete_data_directory_exits_2_without_downloading(tmp_path, capsys, monkeypatch):
    def fail(url, timeout):
        raise AssertionError("an existing data folder must not trigger a download")

    monkeypatch.setattr(download, "_open_url", fail)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    status, out, err = run_main(["--data-dir", str(folder), *SMALL], capsys)
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and "data_batch_1" in err, err


@pytest.fixture(scope="module")
def commands(tmp_path_factory):
    """Bad invocations of the real command, run side by side: name -> CompletedProcess-like."""
    root = tmp_path_factory.mktemp("commands")
    tiny = write_tiny_cifar(root / "data", n_per_batch=20, n_test=20)
    cases = {
        "missing data directory": ["--data-dir", str(root / "missing")],
        "eta_min >= eta_max": ["--data-dir", str(tiny), "--eta-min", "0.5", "--eta-max", "0.1"],
    }
    env = {**os.environ, **NO_NETWORK, "CLRSEARCH_DATA": str(root / "unused")}
    running = {name: subprocess.Popen([sys.executable, "-m", "clrsearch.train", "--quiet", *argv], cwd=root,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name, argv in cases.items()}
    results = {}
    for name, process in running.items():
        out, err = process.communicate(timeout=60)
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return results


@pytest.mark.slow
@pytest.mark.parametrize("case, names", [("missing data directory", "missing"), ("eta_min >= eta_max", "eta_min")])
def test_command_exits_2_with_one_line_and_no_traceback(commands, case, names):
    result = commands[case]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ") and names in result.stderr, result.stderr
    assert result.stdout == ""


@pytest.mark.slow
def test_python_m_train_exits_1_when_training_diverged(tiny_cifar, tmp_path, monkeypatch, capsys):
    # Runs the module as ``python -m clrsearch.train`` does, in this process.
    argv = ["--data-dir", str(tiny_cifar), *SMALL, "--eta-max", "1e8", "--out", str(tmp_path / "plots")]
    monkeypatch.setattr(sys, "argv", ["clrsearch.train", *argv])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: clrsearch.train is already imported
        try:
            runpy.run_module("clrsearch.train", run_name="__main__")
            status = 0
        except SystemExit as stop:
            status = stop.code
    assert "diverged" in capsys.readouterr().err
    assert status == 1, ("python -m clrsearch.train exits 0 although training diverged: clrsearch/train.py "
                         "ends with `main()`, which drops the status main() returns; it should be "
                         "`sys.exit(main())`")
