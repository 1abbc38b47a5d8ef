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

Under the ``blocks`` replicates (:func:`clrsearch.data.load_folds`) each
block names its own sets, ``cifar10-full-fold<f>-train-45000`` and
``cifar10-full-fold<f>-val-5000`` for fold f = r mod F, their digests with
the fold (:func:`describe_block`): a seed run holds its block's sets, a trial
run those of all its replicates, and the study run the 50,000 images the
folds are cut from (``cifar10-full-folds-train-50000``, no validation set).
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlflow.data.schema import TensorDatasetSchema
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.types import Schema, TensorSpec
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from ..config import DataConfig
from ..data.cifar10 import D, TEST_FILE, TRAIN_FILES
from ..data.splits import Folds
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
        described = MetaDataset(LocalArtifactDatasetSource(self.source), name=self.name, digest=self.digest).to_dict()
        dataset = Dataset(name=self.name, digest=self.digest, source_type=described["source_type"],
                          source=described["source"], schema=json.dumps(schema.to_dict()), profile=json.dumps(profile))
        return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, self.context)])


@dataclass(frozen=True)
class DataInputs:
    """The training, validation and test sets of one ``load_splits`` call."""

    training: SetInput
    validation: SetInput | None  # None: the folds of a blocks study, whose validation sets are each block's
    testing: SetInput

    def of(self, *contexts: str) -> list[SetInput]:
        """The sets of the given contexts that there are, in that order."""
        by_context = {s.context: s for s in (self.training, self.validation, self.testing) if s is not None}
        return [by_context[context] for context in contexts if context in by_context]


def describe_splits(splits, data: DataConfig) -> DataInputs:
    """The datasets of ``splits``, loaded by ``load_splits(data)``.

    Parameters
    ----------
    splits : clrsearch.data.Splits (its ``data_dir`` and the sizes of its sets are read), or
        clrsearch.data.Folds (the images the folds are cut from, and the test set)
    data : DataConfig the splits were loaded with (split, val_size, split_seed, n_train)
    """
    folder = Path(splits.data_dir)
    if isinstance(splits, Folds):
        return _describe_folds(splits, data, None)
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


def describe_block(folds: Folds, data: DataConfig, replicate: int) -> DataInputs:
    """The datasets of block ``replicate`` of ``folds`` (loaded by ``load_folds(data)``): its training
    images, its validation fold ``replicate mod F`` and the test set."""
    return _describe_folds(folds, data, replicate)


def _describe_folds(folds, data, replicate):
    folder = Path(folds.data_dir)
    sums = file_md5s(folder, (*TRAIN_FILES, TEST_FILE))
    picks = {"split": "full", "val_size": data.val_size, "split_seed": data.split_seed, "folds": len(folds.folds)}

    def describe(context, name, files, n, params):
        key = json.dumps({"files": {f: sums[f] for f in files}, **params}, sort_keys=True)
        return SetInput(name, hashlib.sha256(key.encode()).hexdigest()[:DIGEST_DIGITS], str(folder), int(n),
                        context, tuple(files))

    testing = describe(TESTING, f"cifar10-test-{folds.test.n}", (TEST_FILE,), folds.test.n, {"set": "test"})
    if replicate is None:
        return DataInputs(training=describe(TRAINING, f"cifar10-full-folds-train-{folds.pool.n}", TRAIN_FILES,
                                            folds.pool.n, {**picks, "set": "folds"}),
                          validation=None, testing=testing)
    block = folds.block(replicate)
    return DataInputs(
        training=describe(TRAINING, f"cifar10-full-fold{block.fold}-train-{block.train.n}", TRAIN_FILES,
                          block.train.n, {**picks, "set": "train", "fold": block.fold, "n_train": data.n_train}),
        validation=describe(VALIDATION, f"cifar10-full-fold{block.fold}-val-{block.val.n}", TRAIN_FILES,
                            block.val.n, {**picks, "set": "val", "fold": block.fold}),
        testing=testing)


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


def log_inputs(client, run_id: str, inputs, contexts=(TRAINING, VALIDATION)) -> None:
    """Log the sets of ``contexts`` as the run's dataset inputs, in one call; nothing when ``inputs`` is None.

    ``inputs`` is a DataInputs, or a sequence of them (a trial run's blocks): each set once.
    """
    if not inputs:
        return
    sets = [s for one in ([inputs] if isinstance(inputs, DataInputs) else inputs) for s in one.of(*contexts)]
    unique = list(dict.fromkeys(sets))  # SetInput is frozen: equal sets once
    client.log_inputs(run_id, datasets=[s.dataset_input() for s in unique])
