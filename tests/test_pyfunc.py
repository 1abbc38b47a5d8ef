"""The model that is registered (clrsearch.tracking.pyfunc, .model_code): raw CIFAR-10 rows in, the labels of
the network functions out, the same after a round trip through its weights file; saved and loaded by MLflow, it
takes the same pixels in any dtype and refuses anything else with what it expected, in Python and served."""

import ast
import importlib.util
import os
import sys
import tracemalloc
import warnings
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from clrsearch.data import D
from clrsearch.data.splits import Normaliser
from clrsearch.nn import network
from clrsearch.tracking import pyfunc
from helpers import post_json, random_network, read_raw_batch, serve_model, write_tiny_cifar


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """Two random networks of CIFAR-10 size, the normaliser of a tiny training batch, and test rows."""
    folder = write_tiny_cifar(tmp_path_factory.mktemp("data"), n_per_batch=50, n_test=40)
    train_rows, _ = read_raw_batch(folder / "data_batch_1")
    rows, _ = read_raw_batch(folder / "test_batch")  # (N, D) uint8
    rng = np.random.default_rng(0)
    nets = [{k: v.astype(np.float32) for k, v in random_network(rng, D, 8, 10).items()} for _ in range(2)]
    return nets, Normaliser.fit(train_rows), rows


def expected_labels(nets, normaliser, rows):
    """Argmax of the mean class probabilities, from the network functions and the normalisation written out."""
    X = ((rows.T / 255.0 - normaliser.mean) / normaliser.std).astype(np.float32)  # (D, N)
    P = sum(network.forward(net, X) for net in nets) / len(nets)  # (C, N)
    return np.argmax(P, axis=0)


def test_classifier_predicts_from_raw_rows_what_the_networks_predict(parts):
    nets, normaliser, rows = parts
    names = tuple(f"class {k}" for k in range(10))
    for members in (nets[:1], nets):
        classifier = pyfunc.Classifier(tuple(members), normaliser, names, "float32")
        predictions = classifier.predict(rows)
        assert predictions.dtype == np.int64 and predictions.shape == (rows.shape[0],)
        np.testing.assert_array_equal(predictions, expected_labels(members, normaliser, rows))
    single = pyfunc.Classifier(tuple(nets[:1]), normaliser, names, "float32").predict(rows)
    assert not np.array_equal(single, pyfunc.Classifier(tuple(nets[1:]), normaliser, names, "float32").predict(rows))


def test_classifier_file_round_trip_keeps_predictions_names_and_dtype(parts, tmp_path):
    nets, normaliser, rows = parts
    names = tuple(f"class {k}" for k in range(10))
    classifier = pyfunc.Classifier(tuple(nets), normaliser, names, "float32")
    loaded = pyfunc.Classifier.load(classifier.save(tmp_path / "weights.npz"))
    assert (loaded.class_names, loaded.dtype, len(loaded.networks)) == (names, "float32", 2)
    assert loaded.networks[0]["W1"].dtype == np.float32
    for k in range(2):
        for name in network.PARAM_NAMES:
            np.testing.assert_array_equal(loaded.networks[k][name], nets[k][name], err_msg=f"network {k} {name}")
    np.testing.assert_array_equal(loaded.normaliser.mean, normaliser.mean)
    np.testing.assert_array_equal(loaded.predict(rows), classifier.predict(rows))


def model_code_module():
    """The model's code file (clrsearch.tracking.model_code) run as MLflow runs it: as a file of its own."""
    spec = importlib.util.spec_from_file_location("cifar_classifier", pyfunc.MODEL_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_python_model_accepts_arrays_of_any_dtype_data_frames_and_one_image(parts, tmp_path):
    nets, normaliser, rows = parts
    weights = pyfunc.Classifier(tuple(nets), normaliser, tuple("abcdefghij"), "float32").save(tmp_path / "w.npz")
    model = model_code_module().CifarClassifier().load(weights)
    expected = expected_labels(nets, normaliser, rows)
    for given in (rows, rows.astype(np.float32), rows.astype(np.float64), pd.DataFrame(rows),
                  pd.DataFrame(rows.astype(np.float64))):
        np.testing.assert_array_equal(model.predict(None, given), expected)
    np.testing.assert_array_equal(model.predict(None, rows[0]), expected[:1])


def test_the_model_code_leaves_mlflow_nothing_to_say_about_type_hints():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model_code_module()
    assert not [w for w in caught if "type hint" in str(w.message)], [str(w.message) for w in caught]


def test_rows_are_scored_a_chunk_at_a_time_with_the_same_labels(parts, tmp_path, monkeypatch):
    nets, normaliser, rows = parts
    module = model_code_module()
    model = module.CifarClassifier().load(
        pyfunc.Classifier(tuple(nets), normaliser, tuple("abcdefghij"), "float32").save(tmp_path / "w.npz"))
    monkeypatch.setattr(module, "CHUNK", 7)  # 40 rows: five chunks of 7 and one of 5
    np.testing.assert_array_equal(model.predict(None, rows), expected_labels(nets, normaliser, rows))


def test_memory_does_not_grow_with_the_number_of_rows(parts, tmp_path, monkeypatch):
    nets, normaliser, _ = parts
    module = model_code_module()
    model = module.CifarClassifier().load(
        pyfunc.Classifier(tuple(nets), normaliser, tuple("abcdefghij"), "float32").save(tmp_path / "w.npz"))
    monkeypatch.setattr(module, "CHUNK", 16)
    rows = np.random.default_rng(1).integers(0, 256, (1000, D)).astype(np.float64)  # 25 MB of input
    tracemalloc.start()
    try:
        model.predict(None, rows)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A chunk: 16 rows of float64 checked and normalised, a few (D, 16) arrays of 400 kB; all rows at once would be
    # (D, 1000) float64 and float32, 37 MB.
    assert peak < 4_000_000, f"peak {peak / 1e6:.1f} MB for 1000 rows"


def one_bad_value(rows, value, dtype=np.float64):
    """``rows`` as ``dtype`` with pixel (1, 5) set to ``value``."""
    bad = rows.astype(dtype)
    bad[1, 5] = value
    return bad


REFUSED = {  # what is sent -> what the refusal says
    "normalised": (lambda rows: rows / 255.0, "pixel values look normalised; send raw 0-255"),
    "NaN": (lambda rows: one_bad_value(rows, np.nan), "got NaN or infinite values"),
    "infinite": (lambda rows: one_bad_value(rows, np.inf), "got NaN or infinite values"),
    "256": (lambda rows: one_bad_value(rows, 256, np.int64), " to 256"),
    "-1": (lambda rows: one_bad_value(rows, -1), "got values from -1 to "),
    "2.5": (lambda rows: one_bad_value(rows, 2.5), "not a whole number, 2.5"),
    "wide": (lambda rows: np.hstack([rows, rows[:, :1]]), f"got shape (40, {D + 1})"),
    "narrow": (lambda rows: rows[:, :-1], f"got shape (40, {D - 1})"),
    "3-d": (lambda rows: rows.reshape(40, 3, 1024), "got shape (40, 3, 1024)"),
    "text": (lambda rows: rows.astype(str), "got values of dtype <U"),
    "ragged": (lambda rows: [rows[0].tolist(), rows[1, :-1].tolist()], "got input that is no array"),
}


@pytest.fixture(scope="module")
def saved_model(parts, tmp_path_factory):
    """The model as MLflow saves it (its code, weights and signature) in a folder; its path."""
    nets, normaliser, rows = parts
    folder = tmp_path_factory.mktemp("model")
    weights = pyfunc.Classifier(tuple(nets), normaliser, tuple("abcdefghij"), "float32").save(folder / "weights.npz")
    path = folder / "model"
    mlflow.pyfunc.save_model(str(path), python_model=str(pyfunc.write_model_code(folder)),
                             artifacts={pyfunc.WEIGHTS_ARTIFACT: str(weights)}, signature=pyfunc.signature(),
                             input_example=rows[:2])
    return path


def test_mlflow_loads_a_model_that_takes_the_same_pixels_in_any_dtype(parts, saved_model):
    nets, normaliser, rows = parts
    model = mlflow.pyfunc.load_model(str(saved_model))
    expected = expected_labels(nets, normaliser, rows)
    for given in (rows, rows.astype(np.int64), rows.astype(np.int16), rows.astype(np.float64),
                  rows.astype(np.float32), pd.DataFrame(rows), pd.DataFrame(rows.astype(np.float64)), rows.tolist()):
        np.testing.assert_array_equal(model.predict(given), expected)
    np.testing.assert_array_equal(model.predict(rows[0]), expected[:1])


@pytest.mark.parametrize("case", REFUSED)
def test_mlflow_loads_a_model_that_refuses_anything_but_raw_pixels_saying_what_it_expects(parts, saved_model, case):
    _, _, rows = parts
    make, says = REFUSED[case]
    with pytest.raises(MlflowException) as raised:
        mlflow.pyfunc.load_model(str(saved_model)).predict(make(rows))
    assert raised.value.error_code == "INVALID_PARAMETER_VALUE"
    message = raised.value.message
    assert message.startswith(f"expected raw CIFAR-10 rows (N, {D}) of whole pixel values 0-255; ")
    assert says in message and "\n" not in message


@pytest.mark.slow
def test_the_served_model_answers_raw_pixels_and_refuses_others_with_400(parts, saved_model, tmp_path):
    nets, normaliser, rows = parts
    expected = expected_labels(nets, normaliser, rows).tolist()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    with serve_model(Path(sys.executable).with_name("mlflow"), saved_model, tmp_path, env) as url:
        assert post_json(f"{url}/invocations", {"inputs": rows.tolist()}) == (200, {"predictions": expected})
        answer = post_json(f"{url}/invocations", {"inputs": rows.astype(np.float64).tolist()})
        assert answer == (200, {"predictions": expected})
        for case in ("normalised", "256", "2.5", "narrow"):
            make, says = REFUSED[case]
            status, body = post_json(f"{url}/invocations", {"inputs": make(rows).tolist()})
            assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE", (case, status, body)
            assert says in body["message"], (case, body["message"])


def test_a_classifier_needs_one_network_per_dict(parts):
    nets, normaliser, _ = parts
    with pytest.raises(ValueError, match="at least one network"):
        pyfunc.Classifier((), normaliser, tuple("abcdefghij"), "float32")
    with pytest.raises(ValueError, match="one network per dict"):
        pyfunc.Classifier((network.stack(nets),), normaliser, tuple("abcdefghij"), "float32")


def test_the_model_code_loads_the_classifier_of_this_module(tmp_path):
    path = pyfunc.write_model_code(tmp_path)
    assert path == tmp_path / "cifar_classifier.py" and path.read_text() == pyfunc.MODEL_CODE
    imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.ImportFrom)}
    assert imported == {"mlflow", "numpy"}  # no clrsearch: the model loads where the package is not installed
