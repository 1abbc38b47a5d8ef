"""Tests of clrsearch.data on tiny CIFAR-10 copies written in the official format."""
import hashlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from clrsearch import data
from clrsearch.errors import UsageError
from conftest import write_tiny_cifar


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No test reaches the network or the user's cache."""

    def refuse(url, timeout):
        if not url.startswith("file:"):
            raise urllib.error.URLError("network disabled in tests")
        return data.urllib.request.urlopen(url, timeout=timeout)

    monkeypatch.setattr(data, "_open_url", refuse)
    monkeypatch.delenv("CLRSEARCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def raw_batch(path):
    """Rows (N, D) uint8 and labels (N,) read with plain pickle, independently of data.py."""
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    return np.asarray(d[b"data"]), np.asarray(d[b"labels"])


def assert_one_line_naming(err, *parts):
    msg = str(err.value)
    assert "\n" not in msg
    for part in parts:
        assert str(part) in msg, msg


# --- shapes, labels, splits ---------------------------------------------------------------

def test_batch1_shapes_dtypes_and_layout(tiny_cifar):
    s = data.load_splits("batch1", tiny_cifar, download=False)
    for ds, n in ((s.train, 200), (s.val, 200), (s.test, 200)):
        assert ds.n == n
        assert ds.X.shape == (data.D, n) and ds.X.dtype == np.float32
        assert ds.X.flags.f_contiguous
        assert ds.Y.shape == (data.C, n) and ds.Y.dtype == np.float32
        assert ds.y.shape == (n,) and ds.y.dtype == np.int64
    assert s.normaliser.mean.shape == s.normaliser.std.shape == (data.D, 1)
    assert s.normaliser.mean.dtype == np.float64
    assert s.label_names[0] == "airplane" and len(s.label_names) == 10
    assert s.data_dir == tiny_cifar


def test_labels_agree_with_files_and_one_hot(tiny_cifar):
    s = data.load_splits("batch1", tiny_cifar, download=False)
    pairs = ((s.train, "data_batch_1"), (s.val, "data_batch_2"), (s.test, "test_batch"))
    for ds, name in pairs:
        _, labels = raw_batch(tiny_cifar / name)
        np.testing.assert_array_equal(ds.y, labels)
        np.testing.assert_array_equal(ds.Y.sum(axis=0), 1)
        np.testing.assert_array_equal(ds.Y.argmax(axis=0), ds.y)


def test_float64(tiny_cifar):
    s = data.load_splits("batch1", tiny_cifar, dtype=np.float64, download=False)
    assert s.train.X.dtype == s.train.Y.dtype == s.test.X.dtype == np.float64


def test_arrays_are_read_only(tiny_cifar):
    s = data.load_splits("batch1", tiny_cifar, download=False)
    with pytest.raises(ValueError):
        s.train.X[0, 0] = 1.0


def test_full_split_sizes(tiny_cifar):
    s = data.load_splits("full", tiny_cifar, val_size=150, download=False)
    assert (s.train.n, s.val.n, s.test.n) == (850, 150, 200)


def denormalise(s, ds):
    """Raw rows (N, D) uint8 recovered from a normalised Dataset."""
    pixels = (ds.X.astype(np.float64) * s.normaliser.std + s.normaliser.mean) * 255  # (D, N)
    return np.rint(pixels).astype(np.uint8).T


def test_full_split_partitions_the_training_batches(tiny_cifar):
    s = data.load_splits("full", tiny_cifar, val_size=150, dtype=np.float64, download=False)
    rows = np.concatenate([raw_batch(tiny_cifar / f"data_batch_{i}")[0] for i in range(1, 6)])
    got = np.concatenate([denormalise(s, s.train), denormalise(s, s.val)])
    key = lambda r: sorted(map(bytes, r))  # noqa: E731
    assert key(got) == key(rows)


def test_split_seed_reproducible_and_different_seeds_differ(tiny_cifar):
    a = data.load_splits("full", tiny_cifar, val_size=100, split_seed=3, download=False)
    b = data.load_splits("full", tiny_cifar, val_size=100, split_seed=3, download=False)
    c = data.load_splits("full", tiny_cifar, val_size=100, split_seed=4, download=False)
    np.testing.assert_array_equal(a.val.X, b.val.X)
    np.testing.assert_array_equal(a.train.y, b.train.y)
    assert not np.array_equal(a.val.X, c.val.X)
    np.testing.assert_array_equal(a.test.y, c.test.y)


# --- normalisation ------------------------------------------------------------------------

def test_normalisation_uses_training_statistics_only(tiny_cifar):
    s = data.load_splits("batch1", tiny_cifar, dtype=np.float64, download=False)
    train = raw_batch(tiny_cifar / "data_batch_1")[0] / 255.0  # (N, D)
    mean, std = train.mean(axis=0), train.std(axis=0)
    np.testing.assert_allclose(s.normaliser.mean[:, 0], mean, rtol=1e-12)
    np.testing.assert_allclose(s.normaliser.std[:, 0], std, rtol=1e-12)
    np.testing.assert_allclose(s.train.X, ((train - mean) / std).T, atol=1e-12)
    for ds, name in ((s.val, "data_batch_2"), (s.test, "test_batch")):
        raw = raw_batch(tiny_cifar / name)[0] / 255.0
        np.testing.assert_allclose(ds.X, ((raw - mean) / std).T, atol=1e-12)
    np.testing.assert_allclose(s.train.X.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(s.train.X.std(axis=1), 1, rtol=1e-12)
    assert np.abs(s.val.X.mean(axis=1)).max() > 1e-2
    assert np.abs(s.test.X.mean(axis=1)).max() > 1e-2


def test_float32_matches_float64(tiny_cifar):
    s32 = data.load_splits("batch1", tiny_cifar, dtype=np.float32, download=False)
    s64 = data.load_splits("batch1", tiny_cifar, dtype=np.float64, download=False)
    np.testing.assert_allclose(s32.val.X, s64.val.X, rtol=1e-6, atol=1e-6)


def test_n_train_keeps_first_images_and_their_statistics(tiny_cifar):
    s = data.load_splits("batch1", tiny_cifar, n_train=100, dtype=np.float64, download=False)
    rows, labels = raw_batch(tiny_cifar / "data_batch_1")
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
    s = data.load_splits("batch1", tiny_cifar, download=False)
    assert s.normaliser.std[7, 0] == 1.0
    np.testing.assert_array_equal(s.train.X[7], 0)
    assert np.isfinite(s.val.X).all()


def test_normaliser_apply_accepts_uint8_and_float(tiny_cifar):
    s = data.load_splits("batch1", tiny_cifar, download=False)
    rows = raw_batch(tiny_cifar / "data_batch_2")[0]  # (N, D)
    a = s.normaliser.apply(rows.T, np.float64)
    b = s.normaliser.apply(rows.T.astype(np.float32), np.float64)
    c = s.normaliser.apply(np.ascontiguousarray(rows.T), np.float32)
    np.testing.assert_allclose(a, b, atol=1e-12)
    assert c.flags.f_contiguous and c.dtype == np.float32
    np.testing.assert_allclose(c, s.val.X)


# --- bad arguments --------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    dict(split="batch2"),
    dict(split="full", val_size=0),
    dict(split="full", val_size=1000),
    dict(split="full", val_size=-5),
    dict(split="batch1", n_train=0),
    dict(split="batch1", n_train=201),
])
def test_bad_arguments(tiny_cifar, kwargs):
    with pytest.raises(UsageError) as err:
        data.load_splits(data_dir=tiny_cifar, download=False, **kwargs)
    assert "\n" not in str(err.value)


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
        data.load_batch(path)
    assert_one_line_naming(err, path)
    with pytest.raises(UsageError) as err:
        data.load_splits("batch1", tiny_cifar, download=False)
    assert_one_line_naming(err, path)


def test_small_integer_data_is_accepted(tiny_cifar):
    path = tiny_cifar / "data_batch_1"
    rewrite(path, data=lambda b: b[b"data"].astype(np.int32))
    rows, labels = data.load_batch(path)
    assert rows.dtype == np.uint8 and rows.shape == (200, data.D)
    assert labels.dtype == np.int64


def test_label_names_fall_back_when_meta_lacks_them(tiny_cifar):
    rewrite(tiny_cifar / "batches.meta", label_names=None)
    assert data.load_label_names(tiny_cifar) == data.CLASS_NAMES


# --- locating the folder --------------------------------------------------------------------

def test_missing_dir_without_download(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UsageError) as err:
        data.load_splits("batch1", missing, download=False)
    assert_one_line_naming(err, missing, "--data-dir", "CLRSEARCH_DATA")


def test_incomplete_folder_names_the_missing_file(tiny_cifar):
    (tiny_cifar / "data_batch_4").unlink()
    with pytest.raises(UsageError) as err:
        data.ensure_data(tiny_cifar)
    assert_one_line_naming(err, tiny_cifar, "data_batch_4")


def test_folder_or_its_parent(tiny_cifar):
    assert data.resolve_data_dir(tiny_cifar) == tiny_cifar
    assert data.resolve_data_dir(tiny_cifar.parent) == tiny_cifar
    renamed = tiny_cifar.parent / "my-cifar"
    tiny_cifar.rename(renamed)
    assert data.resolve_data_dir(renamed) == renamed


def test_env_var_honoured(tiny_cifar, monkeypatch):
    monkeypatch.setenv("CLRSEARCH_DATA", str(tiny_cifar.parent))
    assert data.resolve_data_dir() == tiny_cifar
    s = data.load_splits("batch1", download=False)
    assert s.data_dir == tiny_cifar and s.train.n == 200
    assert data.resolve_data_dir(tiny_cifar.parent / "x") != tiny_cifar


def test_default_is_the_user_cache(tmp_path):
    expected = tmp_path / "xdg-cache" / "clrsearch" / "cifar-10-batches-py"
    assert data.resolve_data_dir() == expected


# --- manifest -------------------------------------------------------------------------------

def test_manifest_detects_a_changed_file(tiny_cifar):
    manifest = data.write_manifest(tiny_cifar)
    assert manifest == tiny_cifar / data.MANIFEST_NAME
    checked = data.verify_data_dir(tiny_cifar)
    assert set(checked) == set(data.DATA_FILES)
    test_md5 = hashlib.md5((tiny_cifar / "test_batch").read_bytes()).hexdigest()
    assert checked["test_batch"] == test_md5
    data.load_splits("batch1", tiny_cifar, download=False)
    shutil.copy(tiny_cifar / "data_batch_3", tiny_cifar / "data_batch_2")  # still a valid batch
    with pytest.raises(UsageError) as err:
        data.load_splits("batch1", tiny_cifar, download=False)
    assert_one_line_naming(err, tiny_cifar / "data_batch_2", "delete")
    with pytest.raises(UsageError):
        data.verify_data_dir(tiny_cifar)


def test_no_manifest_means_nothing_to_verify(tiny_cifar):
    assert data.verify_data_dir(tiny_cifar) is None


# --- download -------------------------------------------------------------------------------

def make_archive(tmp_path, members=None):
    """A tiny cifar-10-python.tar.gz; returns its path and md5."""
    source = write_tiny_cifar(tmp_path / "source", n_per_batch=30, n_test=20, seed=1)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname="cifar-10-batches-py")
        for name, content in (members or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def serve(monkeypatch, archive, md5):
    monkeypatch.setattr(data, "ARCHIVE_URL", archive.as_uri())
    monkeypatch.setattr(data, "ARCHIVE_MD5", md5)


def test_download_unpacks_verifies_and_loads(tmp_path, monkeypatch):
    serve(monkeypatch, *make_archive(tmp_path))
    cache = tmp_path / "cache"
    folder = data.ensure_data(cache, progress=False)
    assert folder == cache / "cifar-10-batches-py"
    assert (folder / data.MANIFEST_NAME).is_file()
    assert sorted(p.name for p in cache.iterdir()) == ["cifar-10-batches-py"]
    s = data.load_splits("full", cache, val_size=50)
    assert (s.train.n, s.val.n, s.test.n) == (100, 50, 20)
    assert set(data.verify_data_dir(folder)) == set(data.DATA_FILES)


def test_load_splits_downloads_into_the_user_cache(tmp_path, monkeypatch):
    serve(monkeypatch, *make_archive(tmp_path))
    s = data.load_splits("batch1")
    assert s.data_dir == tmp_path / "xdg-cache" / "clrsearch" / "cifar-10-batches-py"
    assert s.train.n == 30


def test_download_md5_mismatch_leaves_nothing(tmp_path, monkeypatch):
    archive, _ = make_archive(tmp_path)
    serve(monkeypatch, archive, "0" * 32)
    cache = tmp_path / "cache"
    with pytest.raises(UsageError) as err:
        data.ensure_data(cache, progress=False)
    assert_one_line_naming(err, "md5")
    assert list(cache.iterdir()) == []


def test_unsafe_archive_is_refused(tmp_path, monkeypatch):
    serve(monkeypatch, *make_archive(tmp_path, {"../escaped": b"x"}))
    cache = tmp_path / "cache"
    with pytest.raises(UsageError):
        data.ensure_data(cache, progress=False)
    assert not (tmp_path / "escaped").exists()
    assert list(cache.iterdir()) == []


def test_no_network_says_where_to_put_the_files(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(UsageError) as err:
        data.ensure_data(cache, progress=False)
    assert_one_line_naming(err, cache / "cifar-10-batches-py", "--data-dir", "CLRSEARCH_DATA",
                           "network disabled in tests", "data_batch_1")
    assert list(cache.iterdir()) == []


# --- command line ---------------------------------------------------------------------------

def test_cli_lists_writes_and_verifies(tiny_cifar, capsys):
    assert data.main(["--data-dir", str(tiny_cifar.parent), "--write-manifest", "--verify"]) == 0
    out = capsys.readouterr().out
    assert str(tiny_cifar) in out and "N = 200" in out
    assert "verified 7 files" in out


def test_cli_verify_without_manifest_fails(tiny_cifar, capsys):
    assert data.main(["--data-dir", str(tiny_cifar), "--verify"]) == 2
    assert "--write-manifest" in capsys.readouterr().err


def test_cli_missing_dir_exits_2_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CLRSEARCH_DATA"}
    env["PYTHONPATH"] = str(Path(data.__file__).parents[1])
    result = subprocess.run(
        [sys.executable, "-m", "clrsearch.data", "--data-dir", str(tmp_path / "nowhere")],
        capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nowhere" in lines[0]
