"""The final model's run and the registered model (clrsearch.tracking.registry), logged twice into a
temporary store: the alias follows the newest version, and what MLflow loads back predicts, from raw
rows in any of the accepted forms, exactly what the network functions predict."""

import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clrsearch import plots, tracking
from clrsearch.config import DataConfig, TrainConfig
from clrsearch.data import load_batch, load_splits
from clrsearch.errors import UsageError
from clrsearch.nn import network
from clrsearch.nn.trainer import train
from helpers import steps_and_values, write_tiny_cifar

NAME = tracking.REGISTERED_NAME


@pytest.fixture(scope="module")
def registered(store, tmp_path_factory):
    """Version 1: an ensemble of two networks; version 2, made champion with ``promote``: one network."""
    folder = write_tiny_cifar(tmp_path_factory.mktemp("data"), n_per_batch=100, n_test=60)
    splits = load_splits(DataConfig("batch1", data_dir=str(folder)))
    result = train(splits, TrainConfig(n_batch=20, cycles=1, n_s=10, hidden=8),
                   [0.01, 0.01], [1, 2])
    nets = [network.member(result.params, k) for k in range(2)]
    raw, labels = load_batch(folder / "test_batch")  # (N, D) uint8, (N,)
    X = splits.normaliser.apply(raw.T, np.float32)  # (D, N)
    with tracking.StudyRun("final", "fine:tiny", {}, {}) as parent:
        pass
    logged = []
    for version_nets, promote in ((nets, False), (nets[:1], True)):
        pred = network.ensemble_predict(version_nets, X)
        final = tracking.FinalModel(
            run_name="final:tiny", params={"lam": 0.01, "cycles": 1}, history=result.history, member=0,
            val_accuracy=0.25, test_accuracy=float(np.mean(pred == labels)), test_true=labels, test_pred=pred,
            class_names=splits.label_names, networks=version_nets, normaliser=splits.normaliser, dtype="float32",
            input_example=raw[:3], extra_metrics={"train_accuracy": 0.5},
            figures={"eta": plots.eta_curve(result.history.eta_of(0))}, test_rows=raw)
        logged.append(tracking.log_final_model(final, "final", parent_run_id=parent.run_id, promote=promote))
    return {"splits": splits, "result": result, "nets": nets, "raw": raw, "labels": labels, "X": X,
            "logged": logged, "parent": parent.run_id}


@pytest.mark.slow
def test_each_registration_adds_a_version_and_promote_moves_the_alias(store, registered):
    (run1, v1), (run2, v2) = registered["logged"]
    assert (v1, v2) == ("1", "2")
    assert str(store.get_model_version_by_alias(NAME, "champion").version) == "2"
    assert [store.get_model_version(NAME, v).run_id for v in (v1, v2)] == [run1, run2]


@pytest.mark.slow
def test_champion_predicts_what_the_network_predicts_from_raw_rows(store, registered):
    raw, X = registered["raw"], registered["X"]
    expected = network.predict(registered["nets"][0], X)  # (N,)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    predictions = model.predict(raw)
    assert isinstance(predictions, np.ndarray) and predictions.dtype == np.int64
    np.testing.assert_array_equal(predictions, expected)
    for rows in (pd.DataFrame(raw), raw[:1]):
        np.testing.assert_array_equal(model.predict(rows), expected[:len(rows)])
    # The tensor signature takes uint8 only; the model itself takes rows of any dtype.
    for rows in (raw.astype(np.float32), raw.astype(np.float64)):
        np.testing.assert_array_equal(model.unwrap_python_model().predict(None, rows), expected)


@pytest.mark.slow
def test_an_ensemble_version_averages_the_class_probabilities(store, registered):
    nets, X = registered["nets"], registered["X"]
    P = (network.forward(nets[0], X) + network.forward(nets[1], X)) / 2  # (C, N)
    predictions = mlflow.pyfunc.load_model(f"models:/{NAME}/1").predict(registered["raw"])
    np.testing.assert_array_equal(predictions, np.argmax(P, axis=0))


@pytest.mark.slow
def test_final_run_holds_accuracies_curves_confusion_matrix_and_the_model(store, registered):
    run_id, _ = registered["logged"][1]
    run = store.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == registered["parent"]
    assert run.data.params["lam"] == "0.01" and run.data.params["n_networks"] == "1"
    labels, X = registered["labels"], registered["X"]
    test_accuracy = np.mean(network.predict(registered["nets"][0], X) == labels)
    assert run.data.metrics["test_accuracy"] == pytest.approx(test_accuracy)
    # Final values named like a curve get the prefix final_; the curves keep their names.
    assert run.data.metrics["final_val_accuracy"] == 0.25 and run.data.metrics["final_train_accuracy"] == 0.5
    history = registered["result"].history
    steps, values = steps_and_values(store, run_id, "val_accuracy")
    assert steps == history.steps.tolist()
    np.testing.assert_allclose(values, history.metrics["val_accuracy"][:, 0])

    folder = Path(store.download_artifacts(run_id, ""))
    # MLflow's evaluation: per-class precision and recall, weighted F1, against counts made here.
    pred = network.predict(registered["nets"][0], X)
    names = list(registered["splits"].label_names)
    per_class = pd.read_csv(folder / "per_class_metrics.csv")
    assert per_class["positive_class"].tolist() == names
    tp = np.array([np.sum((pred == k) & (labels == k)) for k in range(len(names))])
    predicted, actual = np.bincount(pred, minlength=len(names)), np.bincount(labels, minlength=len(names))
    precision = np.divide(tp, predicted, out=np.zeros(len(names)), where=predicted > 0)
    recall = tp / actual
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(len(names)), where=precision + recall > 0)
    np.testing.assert_allclose(per_class["precision_score"], precision)
    np.testing.assert_allclose(per_class["recall_score"], recall)
    assert run.data.metrics["f1_score"] == pytest.approx(np.sum(f1 * actual) / labels.size)
    assert run.data.metrics["accuracy_score"] == run.data.metrics["test_accuracy"]
    for name in ("confusion_matrix.png", "eta.png"):
        with Image.open(folder / name) as image:
            assert image.format == "PNG"

    info = mlflow.models.get_model_info(f"models:/{NAME}/2")
    assert info.signature.inputs is None  # the model checks its input itself (tracking.pyfunc)
    assert info.saved_input_example_info is not None
    assert mlflow.get_logged_model(info.model_id).experiment_id == run.info.experiment_id


@pytest.mark.slow
def test_a_fresh_process_loads_the_champion_with_the_installed_package_only(store, registered, tmp_path):
    np.save(tmp_path / "rows.npy", registered["raw"])
    script = ("import sys, numpy, mlflow.pyfunc\n"
              "assert not any(p.endswith('tests') for p in sys.path)\n"
              f"model = mlflow.pyfunc.load_model('models:/{NAME}@champion')\n"
              "numpy.save('predictions.npy', model.predict(numpy.load('rows.npy')))\n")
    env = dict(os.environ)  # the temporary store's MLFLOW_TRACKING_URI, no PYTHONPATH
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    expected = network.predict(registered["nets"][0], registered["X"])
    np.testing.assert_array_equal(np.load(tmp_path / "predictions.npy"), expected)


@pytest.mark.slow
def test_a_single_network_given_as_a_dict_is_a_model_of_one_network(store, registered, tmp_path):
    raw, X = registered["raw"], registered["X"]
    net = registered["nets"][1]
    final = tracking.FinalModel(
        run_name="final:dict", params={}, history=registered["result"].history, member=1, val_accuracy=0.5,
        test_accuracy=0.5, test_true=registered["labels"], test_pred=network.predict(net, X),
        class_names=registered["splits"].label_names, networks=net, normaliser=registered["splits"].normaliser,
        dtype="float32", input_example=raw[:2])
    run_id, version = tracking.log_final_model(final, "final-dict", registered_name="clrsearch-dict", alias="only")
    assert store.get_run(run_id).data.params == {"n_networks": "1"}
    assert store.get_run(run_id).data.tags["registered_model"] == f"clrsearch-dict/{version}"
    assert str(store.get_model_version_by_alias("clrsearch-dict", "only").version) == version
    _, loaded = tracking.load_verified("models:/clrsearch-dict@only", tmp_path)
    np.testing.assert_array_equal(loaded.predict(raw), network.predict(net, X))
    assert str(store.get_model_version_by_alias(NAME, "champion").version) == "2"  # the champion stays


@pytest.mark.slow
def test_load_model_of_an_unknown_model_is_a_usage_error_naming_the_fix(store, registered, tmp_path):
    with pytest.raises(UsageError) as error:
        tracking.load_verified(f"models:/{NAME}@no-such-alias", tmp_path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"cannot load model models:/{NAME}@no-such-alias (")
    assert message.endswith("train and register one with python -m clrsearch.fine first")


def test_load_model_without_a_store_creates_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UsageError, match=re.escape(f"no MLflow store at {tmp_path}/mlflow.db to load")):
        tracking.verify_model(f"models:/{NAME}@champion", tmp_path / "copy")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_run_metrics_are_the_latest_values_and_empty_without_a_run(store, registered):
    run_id, _ = registered["logged"][1]
    metrics = tracking.run_metrics(run_id)
    assert metrics["final_val_accuracy"] == 0.25 and metrics["final_train_accuracy"] == 0.5
    assert metrics["val_accuracy"] == pytest.approx(registered["result"].history.metrics["val_accuracy"][-1, 0])
    assert tracking.run_metrics(None) == {} and tracking.run_metrics("0" * 32) == {}
