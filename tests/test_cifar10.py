"""The CIFAR-10 files (clrsearch.data.cifar10): reading batches, refusing corrupt ones with
one line naming the file, and locating the folder."""
import pickle

import numpy as np
import pytest

from clrsearch.config import DataConfig
from clrsearch.data import cifar10, load_splits
from clrsearch.errors import UsageError
from helpers import assert_one_line_naming

pytestmark = pytest.mark.usefixtures("offline")


# --- corrupt files --------------------------------------------------------------------------

def truncate(path):
    content = path.read_bytes()
    path.write_bytes(content[:len(content) // 2])


def not_pickle(path):
    path.write_text("this is not a pickle\n")


def rewrite(path, **changes):
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    for key, value in changes.items():
        if value is None:
            del batch[key.encode()]
        else:
            batch[key.encode()] = value(batch)
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


CORRUPTIONS = {
    "truncated": truncate,
    "not a pickle": not_pickle,
    "not a dict": lambda p: p.write_bytes(pickle.dumps([1, 2, 3])),
    "wrong shape": lambda p: rewrite(p, data=lambda b: b[b"data"][:, :1000]),
    "float data": lambda p: rewrite(p, data=lambda b: b[b"data"] / 255.0),
    "label 10": lambda p: rewrite(p, labels=lambda b: [10] + b[b"labels"][1:]),
    "negative label": lambda p: rewrite(p, labels=lambda b: [-1] + b[b"labels"][1:]),
    "labels too short": lambda p: rewrite(p, labels=lambda b: b[b"labels"][:-1]),
    "no labels": lambda p: rewrite(p, labels=None),
    "code in pickle": lambda p: p.write_bytes(
        b"cos\nsystem\n(S'echo pwned'\ntR."),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupt_batch_is_a_usage_error_naming_the_file(tiny_cifar, corruption):
    path = tiny_cifar / "data_batch_2"
    CORRUPTIONS[corruption](path)
    with pytest.raises(UsageError) as err:
        cifar10.load_batch(path)
    assert_one_line_naming(err, path)
    with pytest.raises(UsageError) as err:
        load_splits(DataConfig("batch1", data_dir=str(tiny_cifar)), download=False)
    assert_one_line_naming(err, path)


def test_small_integer_data_is_accepted(tiny_cifar):
    path = tiny_cifar / "data_batch_1"
    rewrite(path, data=lambda b: b[b"data"].astype(np.int32))
    rows, labels = cifar10.load_batch(path)
    assert rows.dtype == np.uint8 and rows.shape == (200, cifar10.D)
    assert labels.dtype == np.int64


def test_label_names_fall_back_when_meta_lacks_them(tiny_cifar):
    rewrite(tiny_cifar / "batches.meta", label_names=None)
    assert cifar10.load_label_names(tiny_cifar) == cifar10.CLASS_NAMES


# --- locating the folder --------------------------------------------------------------------

def test_folder_or_its_parent(tiny_cifar):
    assert cifar10.resolve_data_dir(tiny_cifar) == tiny_cifar
    assert cifar10.resolve_data_dir(tiny_cifar.parent) == tiny_cifar
    renamed = tiny_cifar.parent / "my-cifar"
    tiny_cifar.rename(renamed)
    assert cifar10.resolve_data_dir(renamed) == renamed
    assert cifar10.resolve_data_dir(tiny_cifar.parent / "x") == tiny_cifar.parent / "x" / cifar10.FOLDER_NAME
