"""Verify a registered model's files against the digests recorded when it was registered, then load it.

Loading a pyfunc model runs its code (``cifar_classifier.py``), so a model is
only loaded from a local copy whose every file matches the SHA-256 digests of
its version's tag ``files_sha256`` (a JSON map, relative path -> hex digest,
written by :func:`clrsearch.tracking.registry.log_final_model`)::

    model = verify_model("models:/clrsearch-cifar10/3").load()   # or python -m clrsearch.evaluate --verify-only URI

An alias is resolved once, to a version number, before anything is read: the
files, the digests and the model loaded are all of that version, even if the
alias moves meanwhile. The files are downloaded from the version's own
artifact location (:meth:`MlflowClient.get_model_version_download_uri`),
checked, and loaded from the checked copy, never from the store again. A
file that differs, is missing or was added, and a version without the tag, are
refused with a one-line :class:`UsageError` naming the file.

The digests protect the files in the artifact store, not the registry: whoever
can write the registry can rewrite the tag as well as move an alias.
"""
from __future__ import annotations

import hashlib
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlflow.artifacts
import mlflow.pyfunc
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ..errors import UsageError, first_line
from ..files import sqlite_path

DIGEST_TAG = "files_sha256"  # the version's tag: JSON {relative path: sha256 hex} of every file of the model
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/@]+))/?$")
HINT = "train and register one with python -m clrsearch.fine first"


def file_digests(folder) -> dict:
    """SHA-256 (hex) of every file under ``folder``, by its path relative to ``folder`` ('/'-separated), sorted."""
    folder = Path(folder)
    digests = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        with path.open("rb") as f:
            digests[path.relative_to(folder).as_posix()] = hashlib.file_digest(f, "sha256").hexdigest()
    return digests


def digest_tag(folder) -> str:
    """The value of the tag ``files_sha256`` for the model files in ``folder``: compact JSON, sorted keys."""
    return json.dumps(file_digests(folder), sort_keys=True, separators=(",", ":"))


def check_files(folder, expected: dict, what: str):
    """Raise UsageError naming the first file of ``folder`` that differs from ``expected`` (path -> sha256), is
    missing from it, or was added to it; ``what`` names the model in the message."""
    found = file_digests(folder)
    for path in sorted(set(expected) | set(found)):
        if path not in found:
            raise UsageError(f"{what}: file {path} is missing from the model's artifacts; not loading it")
        if path not in expected:
            raise UsageError(f"{what}: file {path} was added to the model's artifacts since it was registered; "
                             f"not loading it")
        if found[path] != expected[path]:
            raise UsageError(f"{what}: file {path} differs from its digest recorded at registration; "
                             f"not loading it")


@dataclass(frozen=True)
class VerifiedModel:
    """A registered version whose files matched their digests, copied to ``path`` (a local folder).

    Attributes
    ----------
    name, version : str, the registered model and the version the URI resolved to
    path : Path, the checked local copy; load it, never the store again
    files : dict, relative path -> sha256 of every file
    run_id : str, the run that logged the model
    """

    name: str
    version: str
    path: Path
    files: dict
    run_id: str

    @property
    def uri(self) -> str:
        """``models:/NAME/VERSION``: the immutable address of this version."""
        return f"models:/{self.name}/{self.version}"

    def load(self):
        """The pyfunc model, loaded (its code run) from the checked copy."""
        try:
            return mlflow.pyfunc.load_model(str(self.path))
        except (MlflowException, OSError, ImportError) as error:
            raise UsageError(f"cannot load {self.uri} from its verified copy ({first_line(error)})") from error


def resolve_version(model_uri: str, client: MlflowClient):
    """The model version (an MLflow ModelVersion) a ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` URI names.

    Raises
    ------
    UsageError
        Another kind of URI, or no such model, version or alias.
    """
    match = _URI.match(model_uri)
    if match is None:
        raise UsageError(f"cannot verify {model_uri}: give a registered version, models:/NAME/VERSION or "
                         f"models:/NAME@ALIAS")
    name, number, alias = match.group("name", "version", "alias")
    try:
        if alias:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, number)
    except MlflowException as error:
        raise UsageError(f"cannot load model {model_uri} ({first_line(error)}); {HINT}") from error


def verify_model(model_uri: str, folder, client: MlflowClient | None = None) -> VerifiedModel:
    """Download the files of the registered version ``model_uri`` into ``folder`` and check each against the
    version's tag ``files_sha256``; nothing of the model runs here.

    Raises
    ------
    UsageError
        No store, no such version, no digest on it, or a file that differs, is missing or was added.
    """
    _check_store_exists(model_uri)
    client = client or MlflowClient()
    version = resolve_version(model_uri, client)
    what = f"models:/{version.name}/{version.version}" + (f" ({model_uri})" if "@" in model_uri else "")
    tag = version.tags.get(DIGEST_TAG)
    if not tag:
        raise UsageError(f"{what} carries no {DIGEST_TAG} tag, so its files cannot be verified; not loading it")
    try:
        expected = json.loads(tag)
    except json.JSONDecodeError:
        expected = None
    if not isinstance(expected, dict) or not expected:
        raise UsageError(f"{what}: its {DIGEST_TAG} tag is not a JSON map of files to digests; not loading it")
    source = client.get_model_version_download_uri(version.name, version.version)
    target = Path(folder) / "model"
    target.mkdir(parents=True, exist_ok=True)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(target))
    except (MlflowException, OSError) as error:
        raise UsageError(f"{what}: cannot download its files ({first_line(error)})") from error
    check_files(local, expected, what)
    return VerifiedModel(version.name, str(version.version), Path(local), expected, version.run_id or "")


def load_verified(model_uri: str, folder, client: MlflowClient | None = None):
    """(VerifiedModel, pyfunc model): ``model_uri`` verified into ``folder`` and loaded from there."""
    verified = verify_model(model_uri, folder, client)
    return verified, verified.load()


def verified_predictions(model_uri: str, rows, client: MlflowClient | None = None):
    """(VerifiedModel, labels (N,)) of the raw rows (N, 3072) uint8, predicted by the verified model."""
    with tempfile.TemporaryDirectory(prefix="clrsearch-verify-") as folder:
        verified, model = load_verified(model_uri, folder, client)
        return verified, model.predict(rows)


def _check_store_exists(model_uri: str):
    """Refuse a ``sqlite:///`` registry whose file is missing: MLflow would create an empty store there."""
    path = sqlite_path(mlflow.get_registry_uri())
    if path is not None and not path.is_file():
        raise UsageError(f"no MLflow store at {path} to load {model_uri} from; "
                         f"{HINT}, or point MLFLOW_TRACKING_URI at the store that has it")
