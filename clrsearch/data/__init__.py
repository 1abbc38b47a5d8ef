"""CIFAR-10: the files (:mod:`.cifar10`), their download and md5 check (:mod:`.download`),
and the normalised training, validation and test sets (:mod:`.splits`).

Inspect a copy from the shell::

    python -m clrsearch.data [--data-dir DIR] [--download] [--write-manifest] [--verify]
"""

from .cifar10 import C, CLASS_NAMES, D, DataError, load_batch, load_label_names, resolve_data_dir
from .download import ensure_data, verify_data_dir, write_manifest
from .splits import BlockData, Dataset, Folds, Normaliser, Splits, Subset, load_folds, load_splits

__all__ = ["BlockData", "C", "CLASS_NAMES", "D", "DataError", "Dataset", "Folds", "Normaliser", "Splits", "Subset",
           "ensure_data", "load_batch", "load_folds", "load_label_names", "load_splits", "resolve_data_dir", "verify_data_dir", "write_manifest"]
