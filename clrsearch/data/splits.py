"""Training, validation and test sets built from the CIFAR-10 files and normalised with training statistics.

Images are columns: ``X`` is ``(D, N)`` in Fortran order, ``Y`` is ``(C, N)``
one-hot and ``y`` holds the ``N`` integer labels.

:func:`load_splits` gives one fixed split; :func:`load_folds` cuts the five
training batches into validation folds for the ``blocks`` replicates of a
study: block r validates on fold ``r mod F`` and trains on the other images,
each set a :class:`Subset` (column indices) of one shared normalised array.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import UsageError
from ..processes import cpus
from .cifar10 import C, D, META_FILE, TEST_FILE, TRAIN_FILES, load_batch, load_label_names
from .download import ensure_data, verify_data_dir

_CHUNK_COLS = 256  # images per chunk when normalising: (D, 256) float64 is 6 MB


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

        def normalise(j):
            block = np.multiply(raw[:, j:j + _CHUNK_COLS], scale, dtype=np.float64)  # (D, chunk)
            block -= shift
            out[:, j:j + _CHUNK_COLS] = block

        # Each column is normalised on its own: chunks on threads of their own give the same values.
        with ThreadPoolExecutor(max_workers=cpus()) as pool:
            list(pool.map(normalise, range(0, raw.shape[1], _CHUNK_COLS)))
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

    @property
    def n_train(self) -> int:
        """Images a network trains on."""
        return self.train.n


@dataclass(frozen=True, eq=False)
class Subset:
    """The columns ``index`` of a Dataset, named by index: its pixels are not copied.

    Attributes
    ----------
    source : Dataset, shape (D, N_all)
    index : ndarray of int64, shape (N,), sorted, read-only
    """

    source: Dataset
    index: np.ndarray  # (N,)

    @property
    def n(self) -> int:
        """Number of images N."""
        return self.index.shape[0]

    @property
    def y(self) -> np.ndarray:
        """(N,) labels (a copy)."""
        return self.source.y[self.index]

    def columns(self) -> np.ndarray:
        """(D, N) Fortran-order copy of the pixels, gathered image by image: the values of ``source``."""
        return np.take(self.source.X.T, self.index, axis=0).T


@dataclass(frozen=True, eq=False)
class BlockData:
    """What replicate r of a ``blocks`` study trains and validates on: the images of fold ``r mod F``
    validate, the others train (the first ``n_train`` of them)."""

    train: Subset
    val: Subset
    fold: int  # r mod F


@dataclass(frozen=True, eq=False)
class Folds:
    """The five training batches cut into F = N_all // val_size validation folds of ``val_size`` images.

    Every image is normalised once, with the statistics of all N_all training
    images: the pixel moments use no label, and so an image has the same input
    in every block, whether it trains or validates there; the test set is
    normalised the same way. Images left over by the cut (N_all mod val_size)
    validate in no fold and train in every block.

    Attributes
    ----------
    pool : Dataset, shape (D, N_all), every training image in file order
    folds : tuple of F read-only (val_size,) sorted column indices into ``pool``
    n_train_kept : int or None, images kept of each block's training set (the first ones; None: all)
    """

    pool: Dataset
    folds: tuple
    n_train_kept: int | None
    test: Dataset
    normaliser: Normaliser
    label_names: tuple[str, ...]
    data_dir: Path

    @property
    def n_train(self) -> int:
        """Images a network trains on, the same in every block."""
        n = self.pool.n - self.folds[0].shape[0]
        return n if self.n_train_kept is None else min(n, self.n_train_kept)

    def block(self, r: int) -> BlockData:
        """The training and validation sets of replicate ``r``: fold ``r mod F`` validates."""
        fold = r % len(self.folds)
        held = np.zeros(self.pool.n, dtype=bool)
        held[self.folds[fold]] = True
        train = np.flatnonzero(~held)[:self.n_train]  # (n_train,) sorted
        train.setflags(write=False)
        return BlockData(train=Subset(self.pool, train), val=Subset(self.pool, self.folds[fold]), fold=fold)


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


def _five_batches(folder: Path, val_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The five training batches as one array: raw rows (N_all, D) uint8 and labels (N_all,), in file order.

    Raises
    ------
    UsageError
        ``val_size`` leaves no training images.
    """
    batches = [load_batch(folder / name) for name in TRAIN_FILES]
    n_all = sum(labels.shape[0] for _, labels in batches)
    if val_size >= n_all:
        raise UsageError(f"val_size {val_size} leaves no training images: the five "
                         f"training batches hold {n_all}; choose a smaller val_size")
    return np.concatenate([r for r, _ in batches]), np.concatenate([lab for _, lab in batches])


def _split_permutation(config: DataConfig, n_all: int) -> np.ndarray:
    """(N_all,) the order ``split_seed`` draws the training images in: its first ``val_size`` validate in
    ``load_splits``, and they are fold 0 of ``load_folds``."""
    return np.random.default_rng(config.split_seed).permutation(n_all)


def load_splits(config: DataConfig, dtype=np.float32, download: bool = True) -> Splits:
    """Training, validation and test sets, normalised with training statistics.

    Parameters
    ----------
    config : DataConfig
        ``split`` ``batch1`` trains on ``data_batch_1`` and validates on
        ``data_batch_2``; ``full`` holds ``val_size`` images of the five
        training batches out for validation, drawn with ``split_seed``, and
        trains on the rest in file order. Both test on ``test_batch``.
        ``n_train`` keeps only the first training images (the normalisation
        statistics are those of the images kept); ``data_dir`` is resolved by
        `resolve_data_dir`.
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
        Sizes out of range for the data, or missing / corrupt data.
    """
    split, val_size, n_train = config.split, config.val_size, config.n_train
    folder = ensure_data(config.data_dir, download=download)
    used = (TRAIN_FILES[:2] if split == "batch1" else TRAIN_FILES) + (TEST_FILE, META_FILE)
    verify_data_dir(folder, used)
    label_names = load_label_names(folder)

    if split == "batch1":
        train_rows, train_y = load_batch(folder / TRAIN_FILES[0])
        val_rows, val_y = load_batch(folder / TRAIN_FILES[1])
    else:
        rows, labels = _five_batches(folder, val_size)  # (n_all, D) uint8, (n_all,)
        perm = _split_permutation(config, labels.shape[0])
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



def load_folds(config: DataConfig, dtype=np.float32, download: bool = True) -> Folds:
    """The five training batches as one normalised array cut into validation folds (split ``full``).

    Parameters
    ----------
    config : DataConfig
        ``val_size`` is the size of a fold; the folds are consecutive pieces
        of the permutation that ``split_seed`` draws (fold 0 holds the images
        ``load_splits`` validates on); ``n_train`` keeps the first images of
        each block's training set. ``split`` must be ``full``.
    dtype : numpy dtype
        dtype of ``X`` and ``Y``.
    download : bool
        Download the data when the folder is missing.

    Raises
    ------
    UsageError
        Sizes out of range for the data, or missing / corrupt data.
    """
    if config.split != "full":
        raise UsageError(f"validation folds are cut from split 'full', not {config.split!r}")
    folder = ensure_data(config.data_dir, download=download)
    verify_data_dir(folder, TRAIN_FILES + (TEST_FILE, META_FILE))
    label_names = load_label_names(folder)
    val_size = config.val_size
    rows, labels = _five_batches(folder, val_size)  # (N_all, D) uint8, (N_all,)
    n_all = labels.shape[0]
    if config.n_train is not None and config.n_train > n_all - val_size:
        raise UsageError(f"n_train {config.n_train} exceeds the {n_all - val_size} training "
                         f"images of a block; choose a smaller n_train")
    perm = _split_permutation(config, n_all)
    folds = tuple(np.sort(perm[f * val_size:(f + 1) * val_size]) for f in range(n_all // val_size))
    for fold in folds:
        fold.setflags(write=False)
    normaliser = Normaliser.fit(rows)
    pool = _dataset(normaliser, rows, labels, dtype)
    del rows
    test = _dataset(normaliser, *load_batch(folder / TEST_FILE), dtype)
    return Folds(pool=pool, folds=folds, n_train_kept=config.n_train, test=test, normaliser=normaliser,
                 label_names=label_names, data_dir=folder)
