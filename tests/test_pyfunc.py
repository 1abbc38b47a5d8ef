"""The model that is registered (clrsearch.tracking.pyfunc), without MLflow: raw CIFAR-10 rows in,
the labels of the network functions out, the same after a round trip through its weights file."""

import ast
import importlib.util

import numpy as np
import pandas as pd
import pytest

from clrsearch.data import D
from clrsearch.data.splits import Normaliser
from clrsearch.nn import network
from clrsearch.tracking import pyfunc
from helpers import random_network, read_raw_batch, write_tiny_cifar


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


@pytest.mark.parametrize("shape", [(5, D - 1), (D - 1,), (2, 3, D)])
def test_rows_of_the_wrong_shape_are_refused(shape):
    with pytest.raises(ValueError, match="expected CIFAR-10 rows"):
        model_code_module().raw_rows(np.zeros(shape, np.uint8))


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
