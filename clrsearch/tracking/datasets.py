"""The images a run trained, validated and tested on, as MLflow datasets: the runs' Dataset column.

A :class:`DataInputs` describes the three sets of one ``load_splits`` call.
Each set has a name saying the split and its size (``cifar10-full-train-45000``,
``cifar10-full-val-5000``, ``cifar10-test-10000``), a digest, the data folder
as its source, and its number of images. The digest is the first 10 hex digits
of the SHA-256 of the set's files with their md5s (from the folder's
``clrsearch-md5.json`` when it lists them, else computed once per process) and
of the split parameters that pick its images, so that two runs on the same
images share one dataset on MLflow's Datasets page.

A study describes its data once (:func:`describe_splits`); each run logs the
sets it used with their context tag, as MLflow's autologging does (:func:`log_inputs`).
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlflow.data.schema import TensorDatasetSchema
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.types import Schema, TensorSpec
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from ..config import DataConfig
from ..data.cifar10 import D, TEST_FILE, TRAIN_FILES
from ..data.download import MANIFEST_NAME, _md5

TRAINING, VALIDATION, TESTING = "training", "validation", "testing"  # the context tags MLflow's UI shows
DIGEST_DIGITS = 10  # MLflow asks for at most 10


@dataclass(frozen=True)
class SetInput:
    """One set of images as a dataset input of a run.

    Attributes
    ----------
    name : str, e.g. ``cifar10-full-train-45000``
    digest : str, DIGEST_DIGITS hex digits of the files' md5s and the split parameters
    source : str, the folder holding the CIFAR-10 files
    n_images : int
    context : str, ``training``, ``validation`` or ``testing``
    files : tuple of str, the files its images come from
    """

    name: str
    digest: str
    source: str
    n_images: int
    context: str
    files: tuple

    def dataset_input(self) -> DatasetInput:
        """The MLflow entity: uint8 pixel rows (N, 3072) and int64 labels (N,), profile num_rows = N."""
        schema = TensorDatasetSchema(features=Schema([TensorSpec(np.dtype(np.uint8), (-1, D), "image")]),
                                     targets=Schema([TensorSpec(np.dtype(np.int64), (-1,), "label")]))
        profile = {"num_rows": self.n_images, "features_shape": [self.n_images, D], "files": list(self.files)}
        source = LocalArtifactDatasetSource(self.source)
        dataset = Dataset(name=self.name, digest=self.digest, source_type=source._get_source_type(),
                          source=source.to_json(), schema=json.dumps(schema.to_dict()), profile=json.dumps(profile))
        return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, self.context)])


@dataclass(frozen=True)
class DataInputs:
    """The training, validation and test sets of one ``load_splits`` call."""

    training: SetInput
    validation: SetInput
    testing: SetInput

    def of(self, *contexts: str) -> list[SetInput]:
        """The sets of the given contexts, in that order."""
        by_context = {s.context: s for s in (self.training, self.validation, self.testing)}
        return [by_context[context] for context in contexts]


def describe_splits(splits, data: DataConfig) -> DataInputs:
    """The datasets of ``splits``, loaded by ``load_splits(data)``.

    Parameters
    ----------
    splits : clrsearch.data.Splits (its ``data_dir`` and the sizes of its sets are read)
    data : DataConfig the splits were loaded with (split, val_size, split_seed, n_train)
    """
    folder = Path(splits.data_dir)
    if data.split == "batch1":
        train_files, val_files = TRAIN_FILES[:1], TRAIN_FILES[1:2]
        picks = {"split": "batch1"}
    else:
        train_files = val_files = tuple(TRAIN_FILES)
        picks = {"split": "full", "val_size": data.val_size, "split_seed": data.split_seed}
    sums = file_md5s(folder, (*dict.fromkeys((*train_files, *val_files)), TEST_FILE))

    def describe(context, role, files, n, params):
        name = f"cifar10-{role}-{n}" if role == "test" else f"cifar10-{data.split}-{role}-{n}"
        key = json.dumps({"files": {f: sums[f] for f in files}, "set": role, **params}, sort_keys=True)
        return SetInput(name, hashlib.sha256(key.encode()).hexdigest()[:DIGEST_DIGITS], str(folder), int(n),
                        context, tuple(files))

    return DataInputs(
        training=describe(TRAINING, "train", train_files, splits.train.n, {**picks, "n_train": data.n_train}),
        validation=describe(VALIDATION, "val", val_files, splits.val.n, picks),
        testing=describe(TESTING, "test", (TEST_FILE,), splits.test.n, {}))


def file_md5s(folder: Path, names) -> dict:
    """name -> md5 of each file: the manifest's entry when it has one, else the file's own (cached)."""
    manifest = folder / MANIFEST_NAME
    try:
        listed = json.loads(manifest.read_text()) if manifest.is_file() else {}
    except (OSError, ValueError):  # load_splits has checked the files against it, or there is none
        listed = {}
    sums = {}
    for name in names:
        path = folder / name
        if isinstance(listed, dict) and isinstance(listed.get(name), str):
            sums[name] = listed[name]
        else:
            stat = path.stat()
            sums[name] = _file_md5(str(path), stat.st_size, stat.st_mtime_ns)
    return sums


@functools.lru_cache(maxsize=64)
def _file_md5(path: str, size: int, mtime_ns: int) -> str:
    """md5 of a file, computed once per process for each (path, size, modification time)."""
    return _md5(Path(path))


def log_inputs(client, run_id: str, inputs: DataInputs | None, contexts=(TRAINING, VALIDATION)) -> None:
    """Log the sets of ``contexts`` as the run's dataset inputs, in one call; nothing when ``inputs`` is None."""
    if inputs is None:
        return
    client.log_inputs(run_id, datasets=[s.dataset_input() for s in inputs.of(*contexts)])
