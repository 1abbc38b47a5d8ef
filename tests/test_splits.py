"""Training, validation and test sets (clrsearch.data.splits) of tiny CIFAR-10 copies written
in the official format, checked against the files read with plain pickle."""
import pickle

import numpy as np
import pytest

from clrsearch.config import DataConfig
from clrsearch.data import C, D, load_splits
from clrsearch.errors import UsageError
from helpers import read_raw_batch

pytestmark = pytest.mark.usefixtures("offline")


# --- shapes, labels, splits ---------------------------------------------------------------

def test_batch1_shapes_dtypes_and_layout(tiny_cifar):
    s = load_splits(DataConfig("batch1", data_dir=str(tiny_cifar)), download=False)
    for ds, n in ((s.train, 200), (s.val, 200), (s.test, 200)):
        assert ds.n == n
        assert ds.X.shape == (D, n) and ds.X.dtype == np.float32
        assert ds.X.flags.f_contiguous
        assert ds.Y.shape == (C, n) and ds.Y.dtype == np.float32
        assert ds.y.shape == (n,) and ds.y.dtype == np.int64
    assert s.normaliser.mean.shape == s.normaliser.std.shape == (D, 1)
    assert s.normaliser.mean.dtype == np.float64
    assert s.label_names[0] == "airplane" and len(s.label_names) == 10
    assert s.data_dir == tiny_cifar


def test_labels_agree_with_files_and_one_hot(tiny_cifar):
    s = load_splits(DataConfig("batch1", data_dir=str(tiny_cifar)), download=False)
    pairs = ((s.train, "data_batch_1"), (s.val, "data_batch_2"), (s.test, "test_batch"))
    for ds, name in pairs:
        _, labels = read_raw_batch(tiny_cifar / name)
        np.testing.assert_array_equal(ds.y, labels)
        np.testing.assert_array_equal(ds.Y.sum(axis=0), 1)
        np.testing.assert_array_equal(ds.Y.argmax(axis=0), ds.y)


def test_float64(tiny_cifar):
    s = load_splits(DataConfig("batch1", data_dir=str(tiny_cifar)), dtype=np.float64, download=False)
    assert s.train.X.dtype == s.train.Y.dtype == s.test.X.dtype == np.float64


def test_arrays_are_read_only(tiny_cifar):
    s = load_splits(DataConfig("batch1", data_dir=str(tiny_cifar)), download=False)
    with pytest.raises(ValueError):
        s.train.X[0, 0] = 1.0


def test_full_split_sizes(tiny_cifar):
    s = load_splits(DataConfig("full", val_size=150, data_dir=str(tiny_cifar)), download=False)
    assert (s.train.n, s.val.n, s.test.n) == (850, 150, 200)


def denormalise(s, ds):
    """Raw rows (N, D) uint8 recovered from a normalised Dataset."""
    pixels = (ds.X.astype(np.float64) * s.normaliser.std + s.normaliser.mean) * 255  # (D, N)
    return np.rint(pixels).astype(np.uint8).T


def test_full_split_partitions_the_training_batches(tiny_cifar):
    s = load_splits(DataConfig("full", val_size=150, data_dir=str(tiny_cifar)), dtype=np.float64, download=False)
    rows = np.concatenate([read_raw_batch(tiny_cifar / f"data_batch_{i}")[0] for i in range(1, 6)])
    got = np.concatenate([denormalise(s, s.train), denormalise(s, s.val)])
    key = lambda r: sorted(map(bytes, r))  # noqa: E731
    assert key(got) == key(rows)


def test_split_seed_reproducible_and_different_seeds_differ(tiny_cifar):
    a = load_splits(DataConfig("full", val_size=100, split_seed=3, data_dir=str(tiny_cifar)), download=False)
    b = load_splits(DataConfig("full", val_size=100, split_seed=3, data_dir=str(tiny_cifar)), download=False)
    c = load_splits(DataConfig("full", val_size=100, split_seed=4, data_dir=str(tiny_cifar)), download=False)
    np.testing.assert_array_equal(a.val.X, b.val.X)
    np.testing.assert_array_equal(a.train.y, b.train.y)
    assert not np.array_equal(a.val.X, c.val.X)
    np.testing.assert_array_equal(a.test.y, c.test.y)


# --- normalisation ------------------------------------------------------------------------

def test_normalisation_uses_training_statistics_only(tiny_cifar):
    s = load_splits(DataConfig("batch1", data_dir=str(tiny_cifar)), dtype=np.float64, download=False)
    train = read_raw_batch(tiny_cifar / "data_batch_1")[0] / 255.0  # (N, D)
    mean, std = train.mean(axis=0), train.std(axis=0)
    np.testing.assert_allclose(s.normaliser.mean[:, 0], mean, rtol=1e-12)
    np.testing.assert_allclose(s.normaliser.std[:, 0], std, rtol=1e-12)
    np.testing.assert_allclose(s.train.X, ((train - mean) / std).T, atol=1e-12)
    for ds, name in ((s.val, "data_batch_2"), (s.test, "test_batch")):
        raw = read_raw_batch(tiny_cifar / name)[0] / 255.0
        np.testing.assert_allclose(ds.X, ((raw - mean) / std).T, atol=1e-12)
    np.testing.assert_allclose(s.train.X.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(s.train.X.std(axis=1), 1, rtol=1e-12)
    assert np.abs(s.val.X.mean(axis=1)).max() > 1e-2
    assert np.abs(s.test.X.mean(axis=1)).max() > 1e-2


def test_float32_matches_float64(tiny_cifar):
    s32 = load_splits(DataConfig("batch1", data_dir=str(tiny_cifar)), dtype=np.float32, download=False)
    s64 = load_splits(DataConfig("batch1", data_dir=str(tiny_cifar)), dtype=np.float64, download=False)
    np.testing.assert_allclose(s32.val.X, s64.val.X, rtol=1e-6, atol=1e-6)


def test_n_train_keeps_first_images_and_their_statistics(tiny_cifar):
    s = load_splits(DataConfig("batch1", n_train=100, data_dir=str(tiny_cifar)), dtype=np.float64, download=False)
    rows, labels = read_raw_batch(tiny_cifar / "data_batch_1")
    kept = rows[:100] / 255.0
    assert s.train.n == 100 and s.val.n == 200
    np.testing.assert_array_equal(s.train.y, labels[:100])
    np.testing.assert_allclose(s.normaliser.mean[:, 0], kept.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(s.normaliser.std[:, 0], kept.std(axis=0), rtol=1e-12)


def test_constant_pixel_gets_std_one(tiny_cifar):
    path = tiny_cifar / "data_batch_1"
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    batch[b"data"][:, 7] = 42
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)
    s = load_splits(DataConfig("batch1", data_dir=str(tiny_cifar)), download=False)
    assert s.normaliser.std[7, 0] == 1.0
    np.testing.assert_array_equal(s.train.X[7], 0)
    assert np.isfinite(s.val.X).all()


def test_normaliser_apply_accepts_uint8_and_float(tiny_cifar):
    s = load_splits(DataConfig("batch1", data_dir=str(tiny_cifar)), download=False)
    rows = read_raw_batch(tiny_cifar / "data_batch_2")[0]  # (N, D)
    a = s.normaliser.apply(rows.T, np.float64)
    b = s.normaliser.apply(rows.T.astype(np.float32), np.float64)
    c = s.normaliser.apply(np.ascontiguousarray(rows.T), np.float32)
    np.testing.assert_allclose(a, b, atol=1e-12)
    assert c.flags.f_contiguous and c.dtype == np.float32
    np.testing.assert_allclose(c, s.val.X)

# --- bad arguments --------------------------------------------------------------------------

@pytest.mark.parametrize("fields", [
    dict(split="batch2"),
    dict(split="full", val_size=0),
    dict(split="full", val_size=-5),
    dict(split="batch1", n_train=0),
])
def test_bad_fields_are_refused_by_the_config_before_any_data_is_read(tmp_path, fields):
    with pytest.raises(UsageError) as err:
        load_splits(DataConfig(**fields, data_dir=str(tmp_path / "nowhere")), download=False)
    assert "\n" not in str(err.value)
    assert list(fields)[-1] in str(err.value)


@pytest.mark.parametrize("fields, message", [
    (dict(split="full", val_size=1000), "val_size 1000 leaves no training images"),
    (dict(split="batch1", n_train=201), "n_train 201 exceeds the 200 training images"),
])
def test_sizes_beyond_the_data_are_refused(tiny_cifar, fields, message):
    with pytest.raises(UsageError) as err:
        load_splits(DataConfig(**fields, data_dir=str(tiny_cifar)), download=False)
    assert "\n" not in str(err.value)
    assert message in str(err.value)

