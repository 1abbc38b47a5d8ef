"""The registered model: raw CIFAR-10 rows in, predicted class indices out.

``CifarClassifier`` is the ``mlflow.pyfunc.PythonModel`` that
:func:`clrsearch.tracking.registry.log_final_model` logs and registers. It is logged as
code: the model's code file is `MODEL_CODE`, three lines that import this
module, and its one artifact, ``weights.npz`` (see `Classifier.save`), holds
the networks, the normalisation statistics of the training split, the class
names and the dtype the networks compute in. Loading the model needs the
clrsearch package installed and nothing else::

    model = mlflow.pyfunc.load_model("models:/clrsearch-cifar10@champion")
    labels = model.predict(rows)  # rows (N, 3072) pixels 0..255 -> (N,) int64

Rows are images in the official CIFAR-10 layout (1024 red, then green, then
blue values), uint8 or float, as a NumPy array or a pandas DataFrame: the
model's signature declares 3072 columns of doubles, which MLflow fills from
any of these (a tensor signature would accept one dtype only). Predictions are ``network.predict(params, normaliser.apply(rows.T, dtype))``
exactly; several networks (a snapshot ensemble) average their class
probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

from ..data.cifar10 import D
from ..data.splits import Normaliser
from ..nn import network

WEIGHTS_ARTIFACT = "weights"  # key of the weights file in the model's artifacts
MODEL_CODE = '''"""clrsearch CIFAR-10 classifier; its weights are the model's "weights" artifact."""
import mlflow.models

from clrsearch.tracking.pyfunc import CifarClassifier

mlflow.models.set_model(CifarClassifier())
'''


def predict_labels(networks, X):
    """Labels predicted for normalised images by one network or an ensemble.

    Parameters
    ----------
    networks : list of dicts ``W1`` (M, D), ``b1`` (M, 1), ``W2`` (C, M), ``b2`` (C, 1)
    X : (D, N) normalised pixels

    Returns
    -------
    (N,) int64; for several networks, the argmax of their mean class probabilities
    """
    return network.ensemble_predict(networks, X)


@dataclass(frozen=True, eq=False)
class Classifier:
    """Everything a prediction needs: networks, normalisation, class names, dtype.

    Attributes
    ----------
    networks : tuple of dicts ``W1`` (M, D), ``b1`` (M, 1), ``W2`` (C, M), ``b2`` (C, 1)
    normaliser : Normaliser of the training split
    class_names : tuple of C str
    dtype : "float32" or "float64", the precision the networks compute in
    """

    networks: tuple
    normaliser: Normaliser
    class_names: tuple
    dtype: str

    def __post_init__(self):
        if not self.networks:
            raise ValueError("a classifier needs at least one network")
        for params in self.networks:
            if params["W1"].ndim != 2:
                raise ValueError(f"expected one network per dict, W1 of shape (M, D), got {params['W1'].shape}")

    def predict(self, rows) -> np.ndarray:
        """Class indices (N,) int64 of raw rows (N, D), pixel values 0..255."""
        X = self.normaliser.apply(rows.T, np.dtype(self.dtype))  # (D, N)
        return predict_labels(self.networks, X)

    def save(self, path) -> Path:
        """Write the classifier as one ``.npz`` file (no pickles)."""
        path = Path(path)
        stacked = network.stack(self.networks)  # leading axis K
        np.savez(path, **stacked, mean=self.normaliser.mean, std=self.normaliser.std,
                 class_names=np.array(self.class_names, dtype=str), dtype=np.array(self.dtype))
        return path

    @classmethod
    def load(cls, path) -> Classifier:
        """Read a file written by `save`."""
        with np.load(path, allow_pickle=False) as f:
            stacked = {name: f[name] for name in network.PARAM_NAMES}
            normaliser = Normaliser(mean=f["mean"], std=f["std"])
            class_names = tuple(str(name) for name in f["class_names"])
            dtype = str(f["dtype"])
        networks = tuple(network.member(stacked, k) for k in range(stacked["W1"].shape[0]))
        return cls(networks, normaliser, class_names, dtype)


def raw_rows(model_input) -> np.ndarray:
    """``model_input`` as a (N, D) array of pixel values; one image (D,) becomes (1, D).

    Raises
    ------
    ValueError
        The input is not N images of D values.
    """
    rows = model_input.to_numpy() if hasattr(model_input, "to_numpy") else np.asarray(model_input)
    if rows.ndim == 1 and rows.shape[0] == D:
        rows = rows[None, :]
    if rows.ndim != 2 or rows.shape[1] != D:
        raise ValueError(f"expected CIFAR-10 rows of shape (N, {D}), got {rows.shape}")
    return rows


class CifarClassifier(mlflow.pyfunc.PythonModel):
    """The pyfunc model: ``predict(context, rows)`` -> (N,) int64 class indices."""

    def __init__(self, classifier: Classifier | None = None):
        self.classifier = classifier

    def load_context(self, context):
        self.classifier = Classifier.load(context.artifacts[WEIGHTS_ARTIFACT])

    # The model's column signature hands every input over as a DataFrame of floats;
    # called directly, a NumPy array works too.
    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        return self.classifier.predict(raw_rows(model_input))


def write_model_code(folder) -> Path:
    """Write `MODEL_CODE` into ``folder``; its path is what ``python_model`` takes."""
    path = Path(folder) / "cifar_classifier.py"
    path.write_text(MODEL_CODE)
    return path
