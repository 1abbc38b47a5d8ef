"""The champion serves anywhere (clrsearch.tracking.registry, .model_code): a fresh virtual environment
with only the model's own requirements (no clrsearch) loads it and predicts the package's labels, and
``mlflow models serve`` in that environment answers raw rows posted as ``{"inputs": ...}`` with them
and normalised pixels with HTTP 400 and what it expected.
The champion is the tiny ensemble of ``conftest.tiny_ensemble``."""

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from clrsearch import tracking
from clrsearch.nn import network
from helpers import post_json, serve_model

pytestmark = pytest.mark.slow

CHAMPION = f"models:/{tracking.REGISTERED_NAME}@{tracking.ALIAS}"
SERVE_SECONDS = 180  # the server's start, in the fresh environment, on a busy machine


@pytest.fixture(scope="module")
def champion(store, tiny_ensemble):
    """The tiny ensemble of two networks registered as the champion; the raw test rows and the package's labels."""
    splits, nets, rows, labels = tiny_ensemble.splits, tiny_ensemble.nets, tiny_ensemble.rows, tiny_ensemble.labels
    expected = network.ensemble_predict(nets, splits.normaliser.apply(rows.T, np.float32))  # (N,)
    final = tracking.FinalModel(
        run_name="final:portable", params={"lam": 0.01}, history=tiny_ensemble.result.history, member=0,
        val_accuracy=0.3, test_accuracy=float(np.mean(expected == labels)), test_true=labels, test_pred=expected,
        class_names=splits.label_names, networks=nets, normaliser=splits.normaliser, dtype="float32",
        input_example=rows[:2], inputs=tracking.describe_splits(splits, tiny_ensemble.data), study_name="portable")
    tracking.log_final_model(final, "portable")
    return {"rows": rows, "expected": expected, "uri": os.environ["MLFLOW_TRACKING_URI"]}


@pytest.fixture(scope="module")
def model_dir(champion, tmp_path_factory):
    return Path(mlflow.artifacts.download_artifacts(CHAMPION, dst_path=str(tmp_path_factory.mktemp("model"))))


@pytest.fixture(scope="module")
def fresh_env(model_dir, tmp_path_factory):
    """A virtual environment without system site packages holding the model's requirements.txt, nothing else."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(model_dir / "requirements.txt")],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


def fresh_env_vars(champion):
    """The environment of a process in the fresh venv: the test store, no path to the package."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, "MLFLOW_TRACKING_URI": champion["uri"], "MLFLOW_DISABLE_TELEMETRY": "true"}


def test_the_model_is_small_declares_its_output_and_needs_no_clrsearch(model_dir):
    assert (model_dir / "MLmodel").stat().st_size < 10_000
    requirements = [line.split("==")[0] for line in (model_dir / "requirements.txt").read_text().split()]
    assert sorted(requirements) == ["mlflow", "numpy", "pandas"]
    info = mlflow.models.get_model_info(CHAMPION)
    assert info.signature.inputs is None  # the model checks its input itself: MLflow neither refuses nor casts
    assert info.signature.outputs.to_dict() == [{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": (-1,)}}]
    code = (model_dir / "cifar_classifier.py").read_text()
    assert "import clrsearch" not in code and "from clrsearch" not in code


def test_rows_of_any_dtype_and_data_frames_in_this_process_and_normalised_ones_refused(champion):
    model = mlflow.pyfunc.load_model(CHAMPION)
    rows, expected = champion["rows"], champion["expected"]
    for given in (rows, rows.astype(np.int64), rows.astype(np.float64), pd.DataFrame(rows)):
        np.testing.assert_array_equal(model.predict(given), expected)
    with pytest.raises(mlflow.exceptions.MlflowException, match="pixel values look normalised; send raw 0-255"):
        model.predict(rows / 255)


def test_a_fresh_environment_without_clrsearch_loads_the_champion_and_predicts_the_packages_labels(
        champion, fresh_env, tmp_path):
    np.save(tmp_path / "rows.npy", champion["rows"])
    script = ("import importlib.util, numpy, mlflow.pyfunc\n"
              "assert importlib.util.find_spec('clrsearch') is None, 'clrsearch is importable'\n"
              f"model = mlflow.pyfunc.load_model({CHAMPION!r})\n"
              "numpy.save('labels.npy', model.predict(numpy.load('rows.npy')))\n")
    done = subprocess.run([str(fresh_env / "bin" / "python"), "-c", script], cwd=tmp_path,
                          env=fresh_env_vars(champion), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), champion["expected"])


@pytest.fixture
def server(champion, fresh_env, tmp_path):
    """``mlflow models serve`` of the champion in the fresh environment; yields its URL."""
    with serve_model(fresh_env / "bin" / "mlflow", CHAMPION, tmp_path, fresh_env_vars(champion),
                     SERVE_SECONDS) as url:
        yield url


def test_the_served_champion_answers_raw_rows_with_the_packages_labels_and_refuses_normalised_ones(
        champion, server):
    rows, expected = champion["rows"], champion["expected"]
    assert post_json(f"{server}/invocations", {"inputs": rows.tolist()}) == (200, {"predictions": expected.tolist()})
    # Whole pixel values written as floats are the same pixels.
    answer = post_json(f"{server}/invocations", {"inputs": rows[:5].astype(np.float64).tolist()})
    assert answer == (200, {"predictions": expected[:5].tolist()})
    status, body = post_json(f"{server}/invocations", {"inputs": (rows[:5] / 255).tolist()})
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "pixel values look normalised" in body["message"] and "send raw 0-255" in body["message"]
