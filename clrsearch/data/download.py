"""Download CIFAR-10 when it is missing, and check a copy against its md5 manifest.

The official archive is fetched, checked and unpacked all or nothing; the md5
of every file is then recorded in ``clrsearch-md5.json`` beside the files, and
every load verifies the files it reads against it.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .cifar10 import (ARCHIVE_URL, DATA_FILES, ENV_VAR, FOLDER_NAME, DataError, resolve_data_dir, where_to_put)

MANIFEST_NAME = "clrsearch-md5.json"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
DOWNLOAD_TIMEOUT = 20.0  # s, per socket operation
_CHUNK_BYTES = 1 << 20  # read size when downloading


def ensure_data(data_dir: str | os.PathLike, download: bool = True,
                progress: bool = True) -> Path:
    """The folder holding the CIFAR-10 batches, downloaded first if needed.

    Parameters
    ----------
    data_dir : path
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
        raise DataError(f"no CIFAR-10 data at {folder}; {where_to_put(folder)}, "
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
                            f"{where_to_put(folder)}") from e
        if md5.hexdigest() != ARCHIVE_MD5:
            raise DataError(f"downloaded {ARCHIVE_URL} has md5 {md5.hexdigest()}, "
                            f"expected {ARCHIVE_MD5}; try again, or {where_to_put(folder)}")
        unpacked = tmp / "unpacked"
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(unpacked, filter="data")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"cannot unpack {ARCHIVE_URL} ({e}); try again, "
                            f"or {where_to_put(folder)}") from e
        source = unpacked / FOLDER_NAME
        missing = [name for name in DATA_FILES if not (source / name).is_file()]
        if missing:
            raise DataError(f"{ARCHIVE_URL} lacks {FOLDER_NAME}/{missing[0]}; "
                            f"{where_to_put(folder)}")
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
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


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
