"""The registered model, logged twice into a temporary store: the alias follows the
newest version, and what MLflow loads back predicts, from raw rows in any of the
accepted forms, exactly what the network functions predict."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from conftest import write_tiny_cifar
from PIL import Image
from test_tracking import steps_and_values

from clrsearch import network, plots, tracking
from clrsearch.config import TrainConfig
from clrsearch.data import D, load_batch, load_splits
from clrsearch.model import Classifier, predict_labels, raw_rows
from clrsearch.train import train

NAME = tracking.REGISTERED_NAME


@pytest.fixture(scope="module")
def registered(store, tmp_path_factory):
    """Version 1: an ensemble of two networks; version 2, the champion: one network."""
    folder = write_tiny_cifar(tmp_path_factory.mktemp("data"), n_per_batch=100, n_test=60)
    splits = load_splits("batch1", folder)
    result = train(splits.train, splits.val, TrainConfig(n_batch=20, cycles=1, n_s=10, hidden=8),
                   [0.01, 0.01], [1, 2])
    nets = [network.member(result.params, k) for k in range(2)]
    raw, labels = load_batch(folder / "test_batch")  # (N, D) uint8, (N,)
    X = splits.normaliser.apply(raw.T, np.float32)  # (D, N)
    with tracking.StudyRun("final", "fine:tiny", {}, {}) as parent:
        pass
    logged = []
    for version_nets in (nets, nets[:1]):
        pred = predict_labels(version_nets, X)
        logged.append(tracking.log_final_model(
            experiment="final", run_name="final:tiny", params={"lam": 0.01, "cycles": 1},
            history=result.history, member=0, val_accuracy=0.25, test_accuracy=float(np.mean(pred == labels)),
            test_true=labels, test_pred=pred, class_names=splits.label_names, networks=version_nets,
            normaliser=splits.normaliser, dtype="float32", input_example=raw[:3], parent_run_id=parent.run_id,
            extra_metrics={"train_accuracy": 0.5}, figures={"eta": plots.eta_curve(result.history.eta)}))
    return {"splits": splits, "result": result, "nets": nets, "raw": raw, "labels": labels, "X": X,
            "logged": logged, "parent": parent.run_id}


def test_each_registration_adds_a_version_and_moves_the_alias(store, registered):
    (run1, v1), (run2, v2) = registered["logged"]
    assert (v1, v2) == ("1", "2")
    assert str(store.get_model_version_by_alias(NAME, "champion").version) == "2"
    assert [store.get_model_version(NAME, v).run_id for v in (v1, v2)] == [run1, run2]


def test_champion_predicts_what_the_network_predicts_from_raw_rows(store, registered):
    raw, X = registered["raw"], registered["X"]
    expected = network.predict(registered["nets"][0], X)  # (N,)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    predictions = model.predict(raw)
    assert isinstance(predictions, np.ndarray) and predictions.dtype == np.int64
    np.testing.assert_array_equal(predictions, expected)
    for rows in (raw.astype(np.float32), raw.astype(np.float64), pd.DataFrame(raw), raw[:1]):
        np.testing.assert_array_equal(model.predict(rows), expected[:len(rows)])


def test_an_ensemble_version_averages_the_class_probabilities(store, registered):
    nets, X = registered["nets"], registered["X"]
    P = (network.forward(nets[0], X) + network.forward(nets[1], X)) / 2  # (C, N)
    predictions = mlflow.pyfunc.load_model(f"models:/{NAME}/1").predict(registered["raw"])
    np.testing.assert_array_equal(predictions, np.argmax(P, axis=0))


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
    report = json.loads((folder / "confusion_test.json").read_text())
    assert report["class_names"] == list(registered["splits"].label_names)
    assert np.trace(report["confusion_matrix"]) == np.sum(network.predict(registered["nets"][0], X) == labels)
    for name in ("confusion_test.png", "eta.png"):
        with Image.open(folder / name) as image:
            assert image.format == "PNG"

    info = mlflow.models.get_model_info(f"models:/{NAME}/2")
    assert info.signature.inputs.to_dict()[0] == {"type": "double", "name": 0, "required": True}
    assert len(info.signature.inputs.inputs) == D
    assert info.saved_input_example_info is not None
    assert mlflow.get_logged_model(info.model_id).experiment_id == run.info.experiment_id


def test_a_fresh_process_loads_the_champion_with_the_installed_package_only(store, registered, tmp_path):
    np.save(tmp_path / "rows.npy", registered["raw"])
    script = ("import sys, numpy, mlflow.pyfunc\n"
              "assert not any(p.endswith('tests') for p in sys.path)\n"
              f"model = mlflow.pyfunc.load_model('models:/{NAME}@champion')\n"
              "numpy.save('predictions.npy', model.predict(numpy.load('rows.npy')))\n")
    env = dict(os.environ)  # the temporary store's MLFLOW_TRACKING_URI, no PYTHONPATH
    env.pop("PYTHONPATH", None)
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, check=True, capture_output=True)
    expected = network.predict(registered["nets"][0], registered["X"])
    np.testing.assert_array_equal(np.load(tmp_path / "predictions.npy"), expected)


def test_classifier_file_round_trip_keeps_predictions_names_and_dtype(registered, tmp_path):
    splits = registered["splits"]
    classifier = Classifier(tuple(registered["nets"]), splits.normaliser, splits.label_names, "float32")
    loaded = Classifier.load(classifier.save(tmp_path / "weights.npz"))
    assert (loaded.class_names, loaded.dtype, len(loaded.networks)) == (splits.label_names, "float32", 2)
    assert loaded.networks[0]["W1"].dtype == np.float32
    np.testing.assert_array_equal(loaded.predict(registered["raw"]), classifier.predict(registered["raw"]))


@pytest.mark.parametrize("shape", [(5, D - 1), (D - 1,), (2, 3, D)])
def test_rows_of_the_wrong_shape_are_refused(shape):
    with pytest.raises(ValueError, match="expected CIFAR-10 rows"):
        raw_rows(np.zeros(shape, np.uint8))
