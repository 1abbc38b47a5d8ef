"""The registered model: raw CIFAR-10 rows in, predicted class indices out.

The model that :func:`clrsearch.tracking.registry.log_final_model` logs and
registers is code, :mod:`.model_code` (NumPy only, written into the model as
``cifar_classifier.py`` by `write_model_code`), and one artifact,
``weights.npz`` (`Classifier.save`): the networks, the normalisation
statistics of the training split, the class names and the dtype the networks
compute in. Loading it needs numpy, pandas and mlflow, not clrsearch::

    model = mlflow.pyfunc.load_model("models:/clrsearch-cifar10@champion")
    labels = model.predict(rows)  # rows (N, 3072) pixels 0..255, any dtype -> (N,) int64

Rows are images in the official CIFAR-10 layout (1024 red, then green, then
blue values): whole pixel values 0..255 in any integer or float dtype (uint8
as CIFAR-10 stores them, int64 or float64 as JSON brings them), as an array,
a DataFrame or nested lists. The model checks them itself and refuses anything
else, normalised pixels in [0, 1] among them, with a one-line MlflowException
(INVALID_PARAMETER_VALUE: HTTP 400 when served) that says what it expected.
So the signature (`signature`) declares the output alone, labels (-1,) of
int64: a declared input tensor would make MLflow refuse every other dtype than
its own in Python (it checks a tensor's dtype exactly) and cast served JSON to
it (pixels 0.5 read as uint8 are 0). Predictions are
``network.ensemble_predict(networks, normaliser.apply(rows.T, dtype))``
exactly (`Classifier.predict`, the package's reference, which the model code
repeats with NumPy alone).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from ..data.splits import Normaliser
from ..nn import network

WEIGHTS_ARTIFACT = "weights"  # key of the weights file in the model's artifacts
MODEL_FILE = Path(__file__).with_name("model_code.py")  # the model's code, logged as a file
MODEL_CODE = MODEL_FILE.read_text()


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
        return network.ensemble_predict(self.networks, X)  # (N,) int64

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


def signature() -> ModelSignature:
    """The output alone, labels (-1,) of int64; the model checks its input itself (see the module's docstring)."""
    return ModelSignature(outputs=Schema([TensorSpec(np.dtype(np.int64), (-1,))]))


def write_model_code(folder) -> Path:
    """Write `MODEL_CODE` into ``folder`` as ``cifar_classifier.py``; its path is what ``python_model`` takes."""
    path = Path(folder) / "cifar_classifier.py"
    path.write_text(MODEL_CODE)
    return path
