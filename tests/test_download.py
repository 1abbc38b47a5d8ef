"""Downloading CIFAR-10 (clrsearch.data.download) from a tiny archive served from a file: all
or nothing, checked against its md5; the md5 manifest of a folder; missing and incomplete folders."""
import hashlib
import io
import shutil
import tarfile

import pytest

from clrsearch.cli import environment
from clrsearch.config import DataConfig
from clrsearch.data import download, load_splits
from clrsearch.errors import UsageError
from helpers import assert_one_line_naming, write_tiny_cifar

pytestmark = pytest.mark.usefixtures("offline")


# --- missing and incomplete folders ------------------------------------------------------------

def test_missing_dir_without_download(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UsageError) as err:
        load_splits(DataConfig("batch1", data_dir=str(missing)), download=False)
    assert_one_line_naming(err, missing, "--data-dir", "CLRSEARCH_DATA")


def test_incomplete_folder_names_the_missing_file(tiny_cifar):
    (tiny_cifar / "data_batch_4").unlink()
    with pytest.raises(UsageError) as err:
        download.ensure_data(tiny_cifar)
    assert_one_line_naming(err, tiny_cifar, "data_batch_4")



# --- manifest -------------------------------------------------------------------------------

def test_manifest_detects_a_changed_file(tiny_cifar):
    manifest = download.write_manifest(tiny_cifar)
    assert manifest == tiny_cifar / download.MANIFEST_NAME
    checked = download.verify_data_dir(tiny_cifar)
    assert set(checked) == set(download.DATA_FILES)
    test_md5 = hashlib.md5((tiny_cifar / "test_batch").read_bytes()).hexdigest()
    assert checked["test_batch"] == test_md5
    load_splits(DataConfig("batch1", data_dir=str(tiny_cifar)), download=False)
    shutil.copy(tiny_cifar / "data_batch_3", tiny_cifar / "data_batch_2")  # still a valid batch
    with pytest.raises(UsageError) as err:
        load_splits(DataConfig("batch1", data_dir=str(tiny_cifar)), download=False)
    assert_one_line_naming(err, tiny_cifar / "data_batch_2", "delete")
    with pytest.raises(UsageError):
        download.verify_data_dir(tiny_cifar)


def test_no_manifest_means_nothing_to_verify(tiny_cifar):
    assert download.verify_data_dir(tiny_cifar) is None


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
    monkeypatch.setattr(download, "ARCHIVE_URL", archive.as_uri())
    monkeypatch.setattr(download, "ARCHIVE_MD5", md5)


def test_download_unpacks_verifies_and_loads(tmp_path, monkeypatch):
    serve(monkeypatch, *make_archive(tmp_path))
    cache = tmp_path / "cache"
    folder = download.ensure_data(cache, progress=False)
    assert folder == cache / "cifar-10-batches-py"
    assert (folder / download.MANIFEST_NAME).is_file()
    assert sorted(p.name for p in cache.iterdir()) == ["cifar-10-batches-py"]
    s = load_splits(DataConfig("full", val_size=50, data_dir=str(cache)))
    assert (s.train.n, s.val.n, s.test.n) == (100, 50, 20)
    assert set(download.verify_data_dir(folder)) == set(download.DATA_FILES)


def test_load_splits_downloads_into_the_user_cache(tmp_path, monkeypatch):
    serve(monkeypatch, *make_archive(tmp_path))
    s = load_splits(DataConfig("batch1", data_dir=environment.data_dir()))  # as a command without --data-dir
    assert s.data_dir == tmp_path / "xdg-cache" / "clrsearch" / "cifar-10-batches-py"
    assert s.train.n == 30


def test_download_md5_mismatch_leaves_nothing(tmp_path, monkeypatch):
    archive, _ = make_archive(tmp_path)
    serve(monkeypatch, archive, "0" * 32)
    cache = tmp_path / "cache"
    with pytest.raises(UsageError) as err:
        download.ensure_data(cache, progress=False)
    assert_one_line_naming(err, "md5")
    assert list(cache.iterdir()) == []


def test_unsafe_archive_is_refused(tmp_path, monkeypatch):
    serve(monkeypatch, *make_archive(tmp_path, {"../escaped": b"x"}))
    cache = tmp_path / "cache"
    with pytest.raises(UsageError):
        download.ensure_data(cache, progress=False)
    assert not (tmp_path / "escaped").exists()
    assert list(cache.iterdir()) == []


def test_no_network_says_where_to_put_the_files(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(UsageError) as err:
        download.ensure_data(cache, progress=False)
    assert_one_line_naming(err, cache / "cifar-10-batches-py", "--data-dir", "CLRSEARCH_DATA",
                           "network disabled in tests", "data_batch_1")
    assert list(cache.iterdir()) == []
