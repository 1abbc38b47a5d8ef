"""What the registry says about the final model (clrsearch.tracking.registry): the registered model's
description, each version's description and tags, the logged model's metrics linked to the test set, the
final run's times and dataset inputs; the tiny ensemble of ``conftest.tiny_ensemble`` logged into a
temporary MLflow store."""

import json

import mlflow
import numpy as np
import pytest

from clrsearch import tracking
from clrsearch.nn import network

NAME = "clrsearch-described"
STARTED = 1_700_000_000.0  # s since the epoch


@pytest.fixture(scope="module")
def version(store, tiny_ensemble):
    splits, nets, result = tiny_ensemble.splits, tiny_ensemble.nets, tiny_ensemble.result
    pred = network.ensemble_predict(nets, splits.test.X)
    inputs = tracking.describe_splits(splits, tiny_ensemble.data)
    with tracking.StudyRun("described", "fine:tiny", {}, {}) as parent:
        pass
    final = tracking.FinalModel(
        run_name="final:tiny", params={"lam": 0.01, "cycles": 1, "n_s": 10, "clr_mode": "triangular"},
        history=result.history, member=0, val_accuracy=0.25, test_accuracy=float(np.mean(pred == splits.test.y)),
        test_true=splits.test.y, test_pred=pred, class_names=splits.label_names, networks=nets,
        normaliser=splits.normaliser, dtype="float32", input_example=np.zeros((2, 3072), np.uint8),
        extra_metrics={"members_mean_test_accuracy": 0.2}, inputs=inputs, started=STARTED, ended=STARTED + 30.0,
        study_name="tiny")
    run_id, number = tracking.log_final_model(final, "described", parent_run_id=parent.run_id, registered_name=NAME)
    return {"run_id": run_id, "version": number, "final": final, "parent": parent.run_id, "inputs": inputs}


@pytest.mark.slow
def test_the_registered_model_says_what_goes_in_and_out_and_how_to_serve_it(store, version):
    description = store.get_registered_model(NAME).description
    assert "raw CIFAR-10 rows (N, 3072) of whole pixel values 0-255 in any integer or float dtype" in description and "0 airplane" in description and "9 truck" in description
    assert "mlflow models serve -m models:/clrsearch-cifar10@champion --env-manager local" in description


@pytest.mark.slow
def test_each_version_is_described_and_tagged_with_its_study_settings_and_accuracy(store, version):
    v = store.get_model_version(NAME, version["version"])
    final = version["final"]
    tags = dict(v.tags)
    assert "cifar_classifier.py" in json.loads(tags.pop("files_sha256"))  # tests/test_verify.py checks the digests
    assert tags == {"lam": "0.01", "cycles": "1", "n_s": "10", "clr_mode": "triangular",
                      "test_accuracy": f"{final.test_accuracy:.4f}", "members": "2", "study_name": "tiny",
                      "study_run_id": version["parent"], "run_id": version["run_id"],
                      "champion_decision": "champion (first version)",
                    "champion_reason": f"the first version of {NAME}, nothing to compare with"}
    assert v.run_id == version["run_id"]
    assert f"test accuracy **{100 * final.test_accuracy:.2f} %** on 60 test images" in v.description
    assert "study `tiny`" in v.description and "2 networks" in v.description
    assert "lam 0.01, cycles 1, n_s 10, clr_mode triangular" in v.description
    assert "tested on `cifar10-test-60`" in v.description and version["run_id"] in v.description


@pytest.mark.slow
def test_the_logged_model_carries_the_test_metrics_linked_to_the_test_set(store, version):
    model = mlflow.get_logged_model(mlflow.models.get_model_info(f"models:/{NAME}/{version['version']}").model_id)
    metrics = {m.key: m for m in model.metrics}
    test = version["inputs"].testing
    assert metrics["test_accuracy"].value == pytest.approx(version["final"].test_accuracy)
    assert (metrics["test_accuracy"].dataset_name, metrics["test_accuracy"].dataset_digest) == (test.name, test.digest)
    assert metrics["members_mean_test_accuracy"].dataset_name == test.name
    assert metrics["final_val_accuracy"].dataset_name == version["inputs"].validation.name


@pytest.mark.slow
def test_the_final_run_spans_its_training_and_holds_the_three_sets(store, version):
    run = store.get_run(version["run_id"])
    assert (run.info.start_time, run.info.end_time) == (1_700_000_000_000, 1_700_000_030_000)
    contexts = {i.dataset.name: [t.value for t in i.tags] for i in run.inputs.dataset_inputs}
    assert contexts == {"cifar10-batch1-train-100": ["training"], "cifar10-batch1-val-100": ["validation"],
                        "cifar10-test-60": ["testing"], "cifar10-test-60-predictions": []}  # MLflow's evaluation
    steps = sorted(store.get_metric_history(run.info.run_id, "val_accuracy"), key=lambda m: m.step)
    times = [m.timestamp for m in steps]  # no eval_times given: spread over the 30 s by step
    assert times[0] == 1_700_000_000_000 and times[-1] == 1_700_000_030_000 and times == sorted(times)
