"""The CIFAR-10 files in the official python layout: their names, where the folder is, and reading them.

The folder ``cifar-10-batches-py`` holds ``data_batch_1`` .. ``data_batch_5``,
``test_batch`` and ``batches.meta``. The command names where it is: at
``--data-dir``, else at ``$CLRSEARCH_DATA``, else in the per-user cache
(``$XDG_CACHE_HOME`` or ``~/.cache``, then ``clrsearch/cifar-10-batches-py``).
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from ..errors import UsageError

D, C = 3072, 10  # pixels per image (32 x 32 x 3), classes
CLASS_NAMES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

FOLDER_NAME = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
DATA_FILES = (*TRAIN_FILES, TEST_FILE, META_FILE)
ENV_VAR = "CLRSEARCH_DATA"
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

REPLACE = "replace it with an intact copy, or delete the folder to download it again"

# The only globals a CIFAR-10 batch needs to unpickle: numpy arrays and dtypes,
# and the bytes constructor of protocol-2 pickles written by Python 3.
_PICKLE_ALLOWED = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class DataError(UsageError):
    """A data folder or file that is missing, corrupt or not CIFAR-10."""


def resolve_data_dir(data_dir: str | os.PathLike) -> Path:
    """The ``cifar-10-batches-py`` folder to use; it need not exist yet.

    Parameters
    ----------
    data_dir : path
        The folder itself or its parent, as the command found it
        (``--data-dir``, ``$CLRSEARCH_DATA`` or the per-user cache).

    Returns
    -------
    Path
        The folder, absolute and with ``~`` expanded.
    """
    path = Path(data_dir).expanduser().absolute()
    if path.name == FOLDER_NAME or (path / TRAIN_FILES[0]).exists():
        return path
    return path / FOLDER_NAME


def where_to_put(folder: Path) -> str:
    return (f"put data_batch_1..5, {TEST_FILE} and {META_FILE} from {ARCHIVE_URL} "
            f"in {folder}, or point --data-dir or ${ENV_VAR} at a folder that has them")


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers, nothing that runs code."""

    def find_class(self, module, name):
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"unexpected global {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _BatchUnpickler(f, encoding="bytes").load()
    except FileNotFoundError as e:
        raise DataError(f"{path} is missing; {where_to_put(path.parent)}") from e
    except OSError as e:
        raise DataError(f"cannot read {path} ({e.strerror}); check its permissions") from e
    except Exception as e:
        reason = " ".join(f"{type(e).__name__}: {e}".split())
        raise DataError(f"{path} is not a readable CIFAR-10 pickle ({reason}); "
                        f"{REPLACE}") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, not a CIFAR-10 dict; "
                        f"{REPLACE}")
    return obj


def _get(batch: dict, key: str):
    """Value of `key`, stored as bytes by Python 2 pickles and as str by Python 3 ones."""
    if key.encode() in batch:
        return batch[key.encode()]
    return batch.get(key)


def load_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Raw images and labels of one pickled CIFAR-10 batch.

    Parameters
    ----------
    path : path
        A ``data_batch_*`` or ``test_batch`` file.

    Returns
    -------
    rows : ndarray of uint8, shape (N, D)
        One image per row: 1024 red, then green, then blue values.
    labels : ndarray of int64, shape (N,)

    Raises
    ------
    DataError
        The file is missing, truncated, not a pickle, or its contents are not
        N images of D pixels with labels in 0..9.
    """
    path = Path(path)
    batch = _unpickle(path)
    fix = REPLACE
    data, labels = _get(batch, "data"), _get(batch, "labels")
    if data is None or labels is None:
        raise DataError(f"{path} lacks the 'data' or 'labels' entry of a CIFAR-10 batch; {fix}")
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != D:
        raise DataError(f"{path} holds data of shape {data.shape}, expected (N, {D}); {fix}")
    if data.dtype != np.uint8:
        if data.dtype.kind not in "iu" or (data.size and (data.min() < 0 or data.max() > 255)):
            raise DataError(f"{path} holds {data.dtype} data, expected uint8 pixels 0..255; {fix}")
        data = data.astype(np.uint8)
    try:
        labels = np.asarray(labels)
        one_int_each = (labels.shape == (data.shape[0],)
                        and (labels.dtype.kind in "iu" or labels.size == 0))
    except ValueError:
        one_int_each = False
    if not one_int_each:
        raise DataError(f"{path} holds labels that are not one integer per image "
                        f"for its {data.shape[0]} images; {fix}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= C):
        raise DataError(f"{path} holds labels from {labels.min()} to {labels.max()}, "
                        f"expected 0..{C - 1}; {fix}")
    return np.ascontiguousarray(data), labels


def load_label_names(data_dir: str | os.PathLike) -> tuple[str, ...]:
    """Class names from ``batches.meta``, or `CLASS_NAMES` if it lacks them.

    Parameters
    ----------
    data_dir : path
        The ``cifar-10-batches-py`` folder or its parent.
    """
    meta_path = resolve_data_dir(data_dir) / META_FILE
    names = _get(_unpickle(meta_path), "label_names")
    if names is None:
        return CLASS_NAMES
    try:
        names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    except (TypeError, UnicodeDecodeError) as e:
        raise DataError(f"{meta_path} has unreadable label names ({e}); "
                        f"{REPLACE}") from e
    if len(names) != C:
        raise DataError(f"{meta_path} names {len(names)} classes, expected {C}; "
                        f"{REPLACE}")
    return names
