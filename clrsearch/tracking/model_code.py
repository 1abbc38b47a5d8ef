"""The registered model's own code: raw CIFAR-10 rows in, class indices out, with NumPy alone.

MLflow logs this file as the model ("models from code", saved as
``cifar_classifier.py``) beside its one artifact, ``weights.npz``; loading or
serving the model needs numpy, pandas and mlflow, not clrsearch::

    model = mlflow.pyfunc.load_model("models:/clrsearch-cifar10@champion")
    labels = model.predict(rows)  # rows (N, 3072) pixels 0..255, any dtype -> (N,) int64

The model checks its input itself (`pixel_rows`): N rows of exactly D whole
pixel values 0..255, in any integer or float dtype, as an array, a DataFrame or
nested lists; anything else is refused with an MlflowException
(INVALID_PARAMETER_VALUE, which ``mlflow models serve`` answers with HTTP 400)
that says what was expected. Its signature declares no input, so that MLflow
neither refuses rows whose dtype is not the declared one nor casts them to it;
``predict`` carries the type hint ``np.ndarray``, from which MLflow infers no
schema. Rows are scored `CHUNK` at a time: beyond the input, memory does not
grow with the number of rows.

It imports nothing of clrsearch, and the package does not import it: MLflow
runs it as a file of its own when it loads the model. Its
arithmetic is that of ``clrsearch.data.splits.Normaliser.apply``
followed by ``clrsearch.nn.network.ensemble_predict``, step for step and in the
same dtype, so that the model predicts the package's labels exactly
(``tests/test_portable_model.py`` checks it in an environment without clrsearch).

``weights.npz`` holds the networks stacked on a leading axis K, ``W1`` (K, M, D),
``b1`` (K, M, 1), ``W2`` (K, C, M), ``b2`` (K, C, 1), the normalisation
statistics of the training split, ``mean`` and ``std`` (D, 1) of pixels
scaled to [0, 1], the class names and the dtype the networks compute in.
"""
import mlflow.models
import mlflow.pyfunc
import numpy as np
from mlflow.exceptions import MlflowException

D = 3072  # values per image: 1024 red, then 1024 green, then 1024 blue, each channel row-major
WEIGHTS = "weights"  # the key of weights.npz in the model's artifacts
CHUNK = 1024  # images scored at a time: their (D, 1024) float64 block is 25 MB
EXPECTED = f"expected raw CIFAR-10 rows (N, {D}) of whole pixel values 0-255"


def refuse(problem):
    """The MlflowException (INVALID_PARAMETER_VALUE, HTTP 400 when served) for input that is not raw rows."""
    return MlflowException.invalid_parameter_value(f"{EXPECTED}; {problem}")


def pixel_rows(model_input) -> np.ndarray:
    """``model_input`` (array, DataFrame or nested lists of N images, or one image of D values) as (N, D).

    Integers of any dtype and floats with whole values are taken as they are; nothing is cast or copied
    but a DataFrame's or a list's values.

    Raises
    ------
    MlflowException (INVALID_PARAMETER_VALUE)
        Not N rows of D numbers; NaN or infinite values; floats no larger than 1 (normalised pixels);
        values outside 0..255; floats that are not whole numbers.
    """
    try:
        rows = model_input.to_numpy() if hasattr(model_input, "to_numpy") else np.asarray(model_input)
    except (TypeError, ValueError) as error:  # ragged lists
        raise refuse(f"got input that is no array ({error})") from None
    if rows.ndim == 1 and rows.shape[0] == D:
        rows = rows[None, :]
    if rows.ndim != 2 or rows.shape[1] != D:
        raise refuse(f"got shape {rows.shape}")
    if rows.dtype.kind not in "uif":
        raise refuse(f"got values of dtype {rows.dtype}")
    if rows.size == 0 or rows.dtype == np.uint8:
        return rows
    lo, hi = rows.min(), rows.max()  # NaN if any value is NaN
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise refuse("got NaN or infinite values")
    if rows.dtype.kind == "f" and hi <= 1.0:
        raise refuse(f"pixel values look normalised; send raw 0-255 (largest value {hi:g})")
    if lo < 0 or hi > 255:
        raise refuse(f"got values from {lo:g} to {hi:g}")
    if rows.dtype.kind == "f":
        for j in range(0, rows.shape[0], CHUNK):
            block = rows[j:j + CHUNK]
            fractional = block[block != np.floor(block)]
            if fractional.size:
                raise refuse(f"got a value that is not a whole number, {fractional[0]:g}")
    return rows


def normalise(rows, mean, std, dtype) -> np.ndarray:
    """X (D, n) of ``dtype``, Fortran order: pixels 0..255 of ``rows`` (n, D) scaled to [0, 1], standardised.

    Computed in float64 whatever the dtype of ``rows``, then stored in ``dtype``.
    """
    block = np.multiply(rows.T, 1 / (255 * std), dtype=np.float64)  # (D, n)
    block -= mean / std
    return np.asarray(block, dtype=dtype, order="F")


def probabilities(net, X) -> np.ndarray:
    """P (C, N): the softmax of one network's class scores for the columns of X (D, N)."""
    H = np.maximum(net["W1"] @ X + net["b1"], 0)  # (M, N)
    S = net["W2"] @ H + net["b2"]  # (C, N)
    E = np.subtract(S, S.max(axis=-2, keepdims=True))
    np.exp(E, out=E)
    E /= E.sum(axis=-2, keepdims=True)
    return E


class CifarClassifier(mlflow.pyfunc.PythonModel):
    """``predict(context, rows)`` -> (N,) int64: the argmax of the networks' mean class probabilities."""

    def __init__(self):
        self.networks, self.mean, self.std, self.dtype, self.class_names = [], None, None, None, ()

    def load_context(self, context):
        self.load(context.artifacts[WEIGHTS])

    def load(self, path):
        """Read the networks and the normalisation from ``weights.npz`` at ``path``."""
        with np.load(path, allow_pickle=False) as f:
            stacked = {name: f[name] for name in ("W1", "b1", "W2", "b2")}
            self.mean, self.std = f["mean"], f["std"]  # (D, 1) each
            self.class_names = tuple(str(name) for name in f["class_names"])
            self.dtype = np.dtype(str(f["dtype"]))
        self.networks = [{name: values[k].copy() for name, values in stacked.items()}
                         for k in range(stacked["W1"].shape[0])]
        return self

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        """Labels (N,) int64 of raw rows (N, D) of pixel values 0..255 (see `pixel_rows`), `CHUNK` rows at a time."""
        rows = pixel_rows(model_input)  # (N, D)
        labels = np.empty(rows.shape[0], dtype=np.int64)  # (N,)
        for j in range(0, rows.shape[0], CHUNK):
            X = normalise(rows[j:j + CHUNK], self.mean, self.std, self.dtype)  # (D, n)
            P = sum(probabilities(net, X) for net in self.networks) / len(self.networks)  # (C, n)
            labels[j:j + CHUNK] = np.argmax(P, axis=0)
        return labels


mlflow.models.set_model(CifarClassifier())
