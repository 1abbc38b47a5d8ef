"""The registered model's own code: raw CIFAR-10 rows in, class indices out, with NumPy alone.

MLflow logs this file as the model ("models from code", saved as
``cifar_classifier.py``) beside its one artifact, ``weights.npz``; loading or
serving the model needs numpy, pandas and mlflow, not clrsearch::

    model = mlflow.pyfunc.load_model("models:/clrsearch-cifar10@champion")
    labels = model.predict(rows)  # rows (N, 3072) uint8 pixels 0..255 -> (N,) int64

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

D = 3072  # values per image: 1024 red, then 1024 green, then 1024 blue, each channel row-major
WEIGHTS = "weights"  # the key of weights.npz in the model's artifacts
_CHUNK = 256  # images normalised at a time: (D, 256) float64 is 6 MB


def raw_rows(model_input) -> np.ndarray:
    """``model_input`` (array, DataFrame, or one image of D values) as an (N, D) array of pixel values.

    Raises ValueError when the input is not N images of D values.
    """
    rows = model_input.to_numpy() if hasattr(model_input, "to_numpy") else np.asarray(model_input)
    if rows.ndim == 1 and rows.shape[0] == D:
        rows = rows[None, :]
    if rows.ndim != 2 or rows.shape[1] != D:
        raise ValueError(f"expected CIFAR-10 rows of shape (N, {D}), got {rows.shape}")
    return rows


def normalise(rows, mean, std, dtype) -> np.ndarray:
    """X (D, N) of ``dtype``, Fortran order: pixels 0..255 of ``rows`` (N, D) scaled to [0, 1], standardised.

    Computed in float64 whatever the dtype of ``rows``, then stored in ``dtype``.
    """
    raw = rows.T  # (D, N)
    scale = 1 / (255 * std)  # (D, 1)
    shift = mean / std  # (D, 1)
    X = np.empty(raw.shape, dtype=dtype, order="F")  # (D, N)
    for j in range(0, raw.shape[1], _CHUNK):
        block = np.multiply(raw[:, j:j + _CHUNK], scale, dtype=np.float64)  # (D, chunk)
        block -= shift
        X[:, j:j + _CHUNK] = block
    return X


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

    def predict(self, context, model_input, params=None):
        """Labels (N,) int64 of raw rows (N, D), pixel values 0..255 of any dtype."""
        X = normalise(raw_rows(model_input), self.mean, self.std, self.dtype)  # (D, N)
        P = sum(probabilities(net, X) for net in self.networks) / len(self.networks)  # (C, N)
        return np.argmax(P, axis=0).astype(np.int64)


mlflow.models.set_model(CifarClassifier())
