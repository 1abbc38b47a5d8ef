"""Find, download, verify and load CIFAR-10; build the splits and normalise them.

The data live in the official python layout, a folder ``cifar-10-batches-py``
holding ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and
``batches.meta``. The folder is looked for at ``--data-dir``, else at
``$CLRSEARCH_DATA``, else in the per-user cache
(``$XDG_CACHE_HOME`` or ``~/.cache``, then ``clrsearch/cifar-10-batches-py``),
and downloaded there when missing.

Inspect a copy from the shell::

    python -m clrsearch.data [--data-dir DIR] [--download] [--write-manifest] [--verify]

Images are columns: ``X`` is ``(D, N)`` in Fortran order, ``Y`` is ``(C, N)``
one-hot and ``y`` holds the ``N`` integer labels.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from clrsearch.errors import UsageError

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
MANIFEST_NAME = "clrsearch-md5.json"
ENV_VAR = "CLRSEARCH_DATA"
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
DOWNLOAD_TIMEOUT = 20.0  # s, per socket operation
SPLITS = ("batch1", "full")

_REPLACE = "replace it with an intact copy, or delete the folder to download it again"
_CHUNK_BYTES = 1 << 20  # read size when hashing or downloading
_CHUNK_COLS = 256  # images per chunk when normalising: (D, 256) float64 is 6 MB

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


@dataclass(frozen=True, eq=False)
class Dataset:
    """One split, one image per column.

    Attributes
    ----------
    X : ndarray, shape (D, N)
        Normalised pixels, Fortran order so that each image is contiguous.
    Y : ndarray, shape (C, N)
        One-hot labels, same dtype as ``X``.
    y : ndarray of int64, shape (N,)
        Labels in ``0 .. C-1``.
    """

    X: np.ndarray  # (D, N)
    Y: np.ndarray  # (C, N)
    y: np.ndarray  # (N,)

    def __post_init__(self):
        n = self.y.shape[0]
        if self.X.shape != (D, n) or self.Y.shape != (C, n):
            raise ValueError(
                f"Dataset shapes disagree: X {self.X.shape}, Y {self.Y.shape}, y {self.y.shape}; "
                f"expected ({D}, N), ({C}, N), (N,)")

    @property
    def n(self) -> int:
        """Number of images N."""
        return self.y.shape[0]


@dataclass(frozen=True, eq=False)
class Normaliser:
    """Per-pixel standardisation with statistics of the training split.

    Attributes
    ----------
    mean : ndarray of float64, shape (D, 1)
        Mean of each pixel, pixels scaled to [0, 1].
    std : ndarray of float64, shape (D, 1)
        Standard deviation of each pixel (ddof 0), 1 where it is 0.
    """

    mean: np.ndarray  # (D, 1)
    std: np.ndarray  # (D, 1)

    @classmethod
    def fit(cls, raw_rows: np.ndarray) -> Normaliser:
        """Statistics of raw training images.

        Parameters
        ----------
        raw_rows : ndarray of uint8, shape (N, D)
            One image per row, values 0..255.
        """
        n = raw_rows.shape[0]
        mean255 = raw_rows.mean(axis=0, dtype=np.float64)  # (D,), buffered cast, no (N, D) copy
        sq = np.zeros(raw_rows.shape[1])  # (D,)
        for i in range(0, n, _CHUNK_COLS):
            dev = raw_rows[i:i + _CHUNK_COLS] - mean255  # (chunk, D) float64
            sq += np.einsum("ij,ij->j", dev, dev)
        std255 = np.sqrt(sq / n)  # (D,)
        std = np.where(std255 == 0, 1.0, std255 / 255)
        return cls(mean=(mean255 / 255)[:, None], std=std[:, None])

    def apply(self, raw: np.ndarray, dtype=np.float32) -> np.ndarray:
        """Scale pixels to [0, 1] and standardise them.

        Parameters
        ----------
        raw : ndarray, shape (D, N)
            Pixel values 0..255 (uint8 or float), one image per column.
        dtype : numpy dtype
            dtype of the result.

        Returns
        -------
        ndarray of `dtype`, shape (D, N), Fortran order
        """
        if raw.ndim != 2 or raw.shape[0] != D:
            raise ValueError(f"expected raw pixels of shape ({D}, N), got {raw.shape}")
        scale = 1 / (255 * self.std)  # (D, 1)
        shift = self.mean / self.std  # (D, 1)
        out = np.empty(raw.shape, dtype=dtype, order="F")  # (D, N)
        for j in range(0, raw.shape[1], _CHUNK_COLS):
            block = np.multiply(raw[:, j:j + _CHUNK_COLS], scale, dtype=np.float64)  # (D, chunk)
            block -= shift
            out[:, j:j + _CHUNK_COLS] = block
        return out


@dataclass(frozen=True, eq=False)
class Splits:
    """Training, validation and test sets normalised with training statistics."""

    train: Dataset
    val: Dataset
    test: Dataset
    normaliser: Normaliser
    label_names: tuple[str, ...]
    data_dir: Path


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clrsearch"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The ``cifar-10-batches-py`` folder to use; it need not exist yet.

    Parameters
    ----------
    data_dir : path or None
        The ``--data-dir`` argument: the folder itself or its parent. When
        None, ``$CLRSEARCH_DATA`` is used, else the per-user cache.

    Returns
    -------
    Path
        The folder, absolute and with ``~`` expanded.
    """
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(ENV_VAR) or _cache_dir()
    path = Path(data_dir).expanduser().absolute()
    if path.name == FOLDER_NAME or (path / TRAIN_FILES[0]).exists():
        return path
    return path / FOLDER_NAME


def _where_to_put(folder: Path) -> str:
    return (f"put data_batch_1..5, {TEST_FILE} and {META_FILE} from {ARCHIVE_URL} "
            f"in {folder}, or point --data-dir or ${ENV_VAR} at a folder that has them")


def ensure_data(data_dir: str | os.PathLike | None = None, download: bool = True,
                progress: bool = True) -> Path:
    """The folder holding the CIFAR-10 batches, downloaded first if needed.

    Parameters
    ----------
    data_dir : path or None
        See `resolve_data_dir`.
    download : bool
        Fetch and unpack the official archive when the folder is missing.
    progress : bool
        Show a progress bar while downloading.

    Returns
    -------
    Path
        Folder with ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and
        ``batches.meta``.

    Raises
    ------
    DataError
        Folder missing and not downloaded, folder incomplete, or download failed.
    """
    folder = resolve_data_dir(data_dir)
    if folder.is_dir():
        missing = [name for name in DATA_FILES if not (folder / name).is_file()]
        if missing:
            raise DataError(
                f"{folder} lacks {', '.join(missing)}; copy the missing files there, "
                f"or delete the folder to download it again")
        return folder
    if folder.exists():
        raise DataError(f"{folder} is not a folder; point --data-dir or ${ENV_VAR} elsewhere")
    if not download:
        raise DataError(f"no CIFAR-10 data at {folder}; {_where_to_put(folder)}, "
                        f"or fetch them with python -m clrsearch.data --download")
    _download(folder, progress)
    return folder


def _open_url(url: str, timeout: float):
    return urllib.request.urlopen(url, timeout=timeout)


def _download(folder: Path, progress: bool) -> None:
    """Fetch the archive, check its md5 and unpack it as `folder`, all or nothing."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".clrsearch-download-", dir=folder.parent))
    except OSError as e:
        raise DataError(f"cannot create {folder.parent} ({e.strerror}); "
                        f"choose a writable place with --data-dir or ${ENV_VAR}") from e
    try:
        archive = tmp / "cifar-10-python.tar.gz"
        md5 = hashlib.md5()
        try:
            with _open_url(ARCHIVE_URL, DOWNLOAD_TIMEOUT) as response, open(archive, "wb") as f:
                total = int(response.headers.get("Content-Length") or 0) or None
                bar = _progress_bar(total, progress)
                try:
                    while chunk := response.read(_CHUNK_BYTES):
                        f.write(chunk)
                        md5.update(chunk)
                        bar.update(len(chunk))
                finally:
                    bar.close()
        except (OSError, http.client.HTTPException, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise DataError(f"cannot download {ARCHIVE_URL} ({reason}); "
                            f"{_where_to_put(folder)}") from e
        if md5.hexdigest() != ARCHIVE_MD5:
            raise DataError(f"downloaded {ARCHIVE_URL} has md5 {md5.hexdigest()}, "
                            f"expected {ARCHIVE_MD5}; try again, or {_where_to_put(folder)}")
        unpacked = tmp / "unpacked"
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(unpacked, filter="data")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"cannot unpack {ARCHIVE_URL} ({e}); try again, "
                            f"or {_where_to_put(folder)}") from e
        source = unpacked / FOLDER_NAME
        missing = [name for name in DATA_FILES if not (source / name).is_file()]
        if missing:
            raise DataError(f"{ARCHIVE_URL} lacks {FOLDER_NAME}/{missing[0]}; "
                            f"{_where_to_put(folder)}")
        write_manifest(source)
        try:
            os.rename(source, folder)
        except OSError as e:
            # Another process may have finished the same download first; its copy is as good.
            if not all((folder / name).is_file() for name in DATA_FILES):
                raise DataError(f"cannot move the unpacked data to {folder} ({e.strerror}); "
                                f"delete {folder} and try again") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _progress_bar(total: int | None, show: bool) -> tqdm:
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                desc="CIFAR-10", disable=not show, file=sys.stderr)


def _md5(path: Path) -> str:
    md5 = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            md5.update(chunk)
    return md5.hexdigest()


def write_manifest(path: str | os.PathLike) -> Path:
    """Record the md5 of every data file present in a folder.

    Parameters
    ----------
    path : path
        The ``cifar-10-batches-py`` folder.

    Returns
    -------
    Path
        The manifest written, ``clrsearch-md5.json`` inside the folder.
    """
    folder = Path(path)
    sums = {name: _md5(folder / name) for name in DATA_FILES if (folder / name).is_file()}
    if not sums:
        raise DataError(f"{folder} holds none of {', '.join(DATA_FILES)}; nothing to record")
    manifest = folder / MANIFEST_NAME
    tmp = folder / (MANIFEST_NAME + ".tmp")
    try:
        tmp.write_text(json.dumps(sums, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, manifest)
    except OSError as e:
        raise DataError(f"cannot write {manifest} ({e.strerror}); "
                        f"check the folder is writable") from e
    return manifest


def verify_data_dir(path: str | os.PathLike, names=None) -> dict[str, str] | None:
    """Check data files against the folder's md5 manifest, if it has one.

    Parameters
    ----------
    path : path
        The ``cifar-10-batches-py`` folder.
    names : iterable of str or None
        Files to check; all those the manifest lists when None.

    Returns
    -------
    dict or None
        File name -> md5 of the files checked; None when there is no manifest.

    Raises
    ------
    DataError
        A file's md5 differs from the manifest, or the manifest is unreadable.
    """
    folder = Path(path)
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        return None
    try:
        expected = json.loads(manifest.read_text())
        if not isinstance(expected, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise DataError(f"{manifest} is unreadable ({e}); delete it, or run "
                        f"python -m clrsearch.data --write-manifest") from e
    checked = {}
    for name in (expected if names is None else names):
        if name not in expected:
            continue
        file = folder / name
        if not file.is_file():
            raise DataError(f"{file} is missing; delete {folder} to download it again")
        got = _md5(file)
        if got != expected[name]:
            raise DataError(f"{file} has md5 {got}, but {MANIFEST_NAME} says {expected[name]}; "
                            f"delete {folder} to download it again")
        checked[name] = got
    return checked


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
        raise DataError(f"{path} is missing; {_where_to_put(path.parent)}") from e
    except OSError as e:
        raise DataError(f"cannot read {path} ({e.strerror}); check its permissions") from e
    except Exception as e:
        reason = " ".join(f"{type(e).__name__}: {e}".split())
        raise DataError(f"{path} is not a readable CIFAR-10 pickle ({reason}); "
                        f"{_REPLACE}") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, not a CIFAR-10 dict; "
                        f"{_REPLACE}")
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
    fix = _REPLACE
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
                        f"{_REPLACE}") from e
    if len(names) != C:
        raise DataError(f"{meta_path} names {len(names)} classes, expected {C}; "
                        f"{_REPLACE}")
    return names


def _dataset(normaliser: Normaliser, rows: np.ndarray, labels: np.ndarray, dtype) -> Dataset:
    """Normalise raw rows (N, D) into a read-only Dataset of `dtype`."""
    X = normaliser.apply(rows.T, dtype)  # (D, N); rows.T is Fortran order already
    n = labels.shape[0]
    Y = np.zeros((C, n), dtype=dtype, order="F")  # (C, N)
    Y[labels, np.arange(n)] = 1
    y = labels.copy()  # (N,)
    for a in (X, Y, y):
        a.setflags(write=False)
    return Dataset(X=X, Y=Y, y=y)


def _positive_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0


def load_splits(split: str = "batch1", data_dir: str | os.PathLike | None = None, *,
                val_size: int = 5000, split_seed: int = 0, n_train: int | None = None,
                dtype=np.float32, download: bool = True) -> Splits:
    """Training, validation and test sets, normalised with training statistics.

    Parameters
    ----------
    split : {"batch1", "full"}
        ``batch1``: train on ``data_batch_1``, validate on ``data_batch_2``.
        ``full``: all five training batches, `val_size` images drawn at random
        held out for validation, the rest (in file order) for training.
        Both test on ``test_batch``.
    data_dir : path or None
        See `resolve_data_dir`.
    val_size : int
        Images held out for validation by ``full``; ignored by ``batch1``.
    split_seed : int
        Seed of the draw of the ``full`` validation images.
    n_train : int or None
        Keep only the first `n_train` training images; the normalisation
        statistics are those of the images kept.
    dtype : numpy dtype
        dtype of ``X`` and ``Y``.
    download : bool
        Download the data when the folder is missing.

    Returns
    -------
    Splits

    Raises
    ------
    UsageError
        Unknown split, sizes out of range, or missing / corrupt data.
    """
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if not _positive_int(val_size):
        raise UsageError(f"val_size must be a positive integer, got {val_size!r}")
    if n_train is not None and not _positive_int(n_train):
        raise UsageError(f"n_train must be a positive integer or None, got {n_train!r}")
    folder = ensure_data(data_dir, download=download)
    used = (TRAIN_FILES[:2] if split == "batch1" else TRAIN_FILES) + (TEST_FILE, META_FILE)
    verify_data_dir(folder, used)
    label_names = load_label_names(folder)

    if split == "batch1":
        train_rows, train_y = load_batch(folder / TRAIN_FILES[0])
        val_rows, val_y = load_batch(folder / TRAIN_FILES[1])
    else:
        batches = [load_batch(folder / name) for name in TRAIN_FILES]
        n_all = sum(labels.shape[0] for _, labels in batches)
        if val_size >= n_all:
            raise UsageError(f"val_size {val_size} leaves no training images: the five "
                             f"training batches hold {n_all}; choose a smaller val_size")
        rows = np.concatenate([r for r, _ in batches])  # (n_all, D) uint8
        labels = np.concatenate([lab for _, lab in batches])  # (n_all,)
        del batches
        perm = np.random.default_rng(split_seed).permutation(n_all)
        val_idx, train_idx = np.sort(perm[:val_size]), np.sort(perm[val_size:])
        val_rows, val_y = rows[val_idx], labels[val_idx]
        train_rows, train_y = rows[train_idx], labels[train_idx]
        del rows, labels

    if n_train is not None:
        if n_train > train_rows.shape[0]:
            raise UsageError(f"n_train {n_train} exceeds the {train_rows.shape[0]} training "
                             f"images of split {split!r}; choose a smaller n_train")
        train_rows, train_y = train_rows[:n_train], train_y[:n_train]

    normaliser = Normaliser.fit(train_rows)
    train = _dataset(normaliser, train_rows, train_y, dtype)
    del train_rows
    val = _dataset(normaliser, val_rows, val_y, dtype)
    del val_rows
    test = _dataset(normaliser, *load_batch(folder / TEST_FILE), dtype)
    return Splits(train=train, val=val, test=test, normaliser=normaliser,
                  label_names=label_names, data_dir=folder)


def main(argv: list[str] | None = None) -> int:
    """Print the data folder, its file sizes and the images per file and split."""
    parser = argparse.ArgumentParser(
        prog="python -m clrsearch.data",
        description="Locate and check the CIFAR-10 folder clrsearch uses.")
    parser.add_argument("--data-dir", help=f"folder {FOLDER_NAME} or its parent "
                        f"(default: ${ENV_VAR}, else the per-user cache)")
    parser.add_argument("--download", action="store_true", help="download the data if missing")
    parser.add_argument("--write-manifest", action="store_true",
                        help=f"record the md5 of each file in {MANIFEST_NAME}")
    parser.add_argument("--verify", action="store_true",
                        help=f"check each file against {MANIFEST_NAME}")
    args = parser.parse_args(argv)
    try:
        folder = ensure_data(args.data_dir, download=args.download)
        print(folder)
        counts = {}
        for name in DATA_FILES:
            size = (folder / name).stat().st_size
            if name == META_FILE:
                print(f"  {name:<14} {size:>12,d} B  {', '.join(load_label_names(folder))}")
                continue
            counts[name] = load_batch(folder / name)[1].shape[0]
            print(f"  {name:<14} {size:>12,d} B  N = {counts[name]}")
        n_all = sum(counts[name] for name in TRAIN_FILES)
        n_test = counts[TEST_FILE]
        print(f"split batch1: train {counts[TRAIN_FILES[0]]}, "
              f"val {counts[TRAIN_FILES[1]]}, test {n_test}")
        print(f"split full: {n_all} images for train + val (val_size held out), test {n_test}")
        if args.write_manifest:
            print(f"wrote {write_manifest(folder)}")
        if args.verify:
            checked = verify_data_dir(folder)
            if checked is None:
                raise DataError(f"{folder} has no {MANIFEST_NAME} to verify against; "
                                f"run python -m clrsearch.data --write-manifest on a trusted copy")
            print(f"verified {len(checked)} files against {folder / MANIFEST_NAME}")
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
