"""The tracking store: is it usable, which experiment, which commit, which source.

Runs go where MLflow puts them by default: ``$MLFLOW_TRACKING_URI`` when set,
else ``sqlite:///mlflow.db`` in the working directory with artifacts under
``mlruns/``. Experiment ``clrsearch`` unless a caller names another.

Before a study, :func:`check_store` asks the store once: a tracking server is
probed with short timeouts, and a new SQLite store is created under a lock, by
one of the processes started together, whole or not at all (:func:`_creating_store`).
"""
from __future__ import annotations

import contextlib
import functools
import getpass
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from mlflow.entities import SourceType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE, MLFLOW_USER

from ..errors import UsageError, first_line, redact
from ..files import create_whole, file_lock, missing, sqlite_path

EXPERIMENT = "clrsearch"
PROBE_SECONDS = 3.0  # connect and read timeout of the probe of a tracking server
CHECK_SECONDS = 5  # timeout of the check's one API request to a tracking server
_FIX = ("point MLFLOW_TRACKING_URI at a running server (http://HOST:5000) or a database, "
        "or unset it for sqlite:///mlflow.db")
_FIX_FILE = ("check that {path} is an MLflow SQLite store in a folder you can write to (a missing one is created), "
             "or point MLFLOW_TRACKING_URI at another store")


def git_commit() -> str:
    """Short hash of the commit the package is checked out at, or "unknown"."""
    return _git("rev-parse", "--short", "HEAD") or "unknown"


def _git(*args) -> str:
    """Output of ``git args`` run beside the package's files; "" when it fails."""
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


@functools.lru_cache(maxsize=1)
def source_tags() -> dict:
    """MLflow's standard tags of the runs this process creates, found once per process.

    ``mlflow.source.name`` (the script or module file, as ``sys.argv[0]``, like
    MLflow's own runs), ``mlflow.source.type`` LOCAL, ``mlflow.user`` and, in a
    git checkout, ``mlflow.source.git.commit`` (the full hash). The UI's Source
    and User columns show them.
    """
    name = sys.argv[0] if sys.argv and sys.argv[0] else "python"
    if os.path.isfile(name):
        name = os.path.abspath(name)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid, e.g. in a container
        user = "unknown"
    tags = {MLFLOW_SOURCE_NAME: name, MLFLOW_SOURCE_TYPE: SourceType.to_string(SourceType.LOCAL), MLFLOW_USER: user}
    commit = _git("rev-parse", "HEAD")
    if commit:
        tags[MLFLOW_GIT_COMMIT] = commit
    return tags


def experiment_id(client: MlflowClient, name: str) -> str:
    """Id of the experiment ``name``, created when missing.

    Raises
    ------
    UsageError
        The experiment exists but was deleted.
    """
    exp_id, active = _found_or_created(client, name)
    if not active:
        raise _deleted(name, exp_id)
    return exp_id


def _found_or_created(client: MlflowClient, name: str) -> tuple[str, bool]:
    """(id, whether it is active) of the experiment ``name``, created when missing."""
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name), True
        except MlflowException:  # created meanwhile by another process
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    return found.experiment_id, found.lifecycle_stage == "active"


def _deleted(name: str, exp_id: str) -> UsageError:
    return UsageError(f"MLflow experiment {name!r} is deleted; restore it "
                      f"(mlflow experiments restore --experiment-id {exp_id}) or choose another experiment name")


def find_experiment_id(name: str = EXPERIMENT, client: MlflowClient | None = None) -> str | None:
    """Id of the experiment ``name`` (also when it is deleted) in the store of ``client`` (by default
    ``$MLFLOW_TRACKING_URI``'s), without creating it; None when the store has no experiment of that name."""
    client = client or MlflowClient()
    found = client.get_experiment_by_name(name)
    return None if found is None else found.experiment_id


def delete_experiment(name: str, client: MlflowClient | None = None) -> str:
    """Delete the experiment ``name`` in the store of ``client`` (by default ``$MLFLOW_TRACKING_URI``'s),
    creating it first when the store has none of that name; returns its id (one deleted already stays so)."""
    import mlflow

    with _creating_store(client.tracking_uri if client else mlflow.get_tracking_uri()):
        client = client or MlflowClient()
        exp_id, active = _found_or_created(client, name)
        if active:
            client.delete_experiment(exp_id)
    return exp_id


def check_store(experiment: str = EXPERIMENT) -> None:
    """Raise UsageError unless the tracking store answers and ``experiment`` is not deleted.

    Creates no run and no experiment, so that a study refused here leaves
    nothing behind in MLflow; a local SQLite store that does not exist yet is
    created, once among processes started together (:func:`_creating_store`).
    A tracking server is probed first (see :func:`probe_server`) and then
    asked once, without MLflow's retries, so that the answer comes within
    ``PROBE_SECONDS + CHECK_SECONDS`` (:func:`ask_server_once`); the error names the store (without its
    password) and says what to fix: the file of a SQLite store, else the URI.
    """
    import mlflow

    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        probe_server(uri)
        ask_server_once(uri, experiment)
    try:
        with _creating_store(uri):
            found = MlflowClient().get_experiment_by_name(experiment)
    except UsageError:
        raise
    except Exception as error:  # MlflowException, or the store's own error for a bad URI or a dead server
        raise _unusable(uri, first_line(error).split(". ")[0]) from None  # its first sentence
    if found is not None and found.lifecycle_stage != "active":
        raise _deleted(experiment, found.experiment_id)


def _unusable(uri: str, reason: str) -> UsageError:
    """The one-line error of a store that cannot be used, with the fix that fits its kind."""
    path = sqlite_path(uri)
    fix = _FIX if path is None else _FIX_FILE.format(path=path)
    return UsageError(f"cannot use the MLflow tracking store {redact(uri)} ({redact(reason)}); {fix}")


def probe_server(uri: str, timeout: float = PROBE_SECONDS) -> None:
    """Raise UsageError when the tracking server at ``uri`` refuses the connection or does not answer.

    One GET of ``<uri>/health`` with ``timeout`` seconds to connect and to
    answer. Any HTTP answer counts as an answer (a server behind a proxy may
    have no ``/health``); so does a TLS error, which MLflow's client, with its
    own certificate settings, judges next.
    """
    import requests

    where = urlsplit(uri)
    host = f"{where.hostname}:{where.port}" if where.port else str(where.hostname)
    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout, allow_redirects=False).close()
    except requests.exceptions.SSLError:
        return
    except requests.exceptions.Timeout:
        reason = f"no answer from {host} within {timeout:g} s"
    except requests.exceptions.ConnectionError as error:
        text = str(error)
        if "refused" in text.lower():
            reason = f"connection refused by {host}"
        elif "resolve" in text.lower() or "name or service" in text.lower() or "getaddrinfo" in text.lower():
            reason = f"unknown host {where.hostname}"
        else:
            reason = f"cannot connect to {host}"
    except requests.exceptions.RequestException as error:
        reason = type(error).__name__
    else:
        return
    raise _unusable(uri, reason)


def ask_server_once(uri: str, experiment: str, timeout: float = CHECK_SECONDS) -> None:
    """Raise UsageError when the tracking server at ``uri`` refuses this client (401, 403), answers with an
    error MLflow's client would retry for minutes (429, 5xx), or does not answer within ``timeout`` seconds.

    One GET of the experiment by name, with the credentials MLflow's client sends (its variables); any other
    answer (the experiment, 404 for none) is left to MLflow's client."""
    import requests
    from mlflow import environment_variables as variables

    user, token = variables.MLFLOW_TRACKING_USERNAME.get(), variables.MLFLOW_TRACKING_TOKEN.get()
    auth = (user, variables.MLFLOW_TRACKING_PASSWORD.get() or "") if user else None
    headers = {"Authorization": f"Bearer {token}"} if token and not user else {}
    try:
        answer = requests.get(uri.rstrip("/") + "/api/2.0/mlflow/experiments/get-by-name", auth=auth,
                              headers=headers, params={"experiment_name": experiment}, timeout=timeout,
                              allow_redirects=False)
    except requests.exceptions.SSLError:
        return
    except requests.exceptions.RequestException as error:
        raise _unusable(uri, f"no answer to an API request: {type(error).__name__}") from None
    answer.close()
    if answer.status_code in (401, 403):
        raise _refused(uri, answer.status_code, answer.text, user)
    if answer.status_code == 429 or answer.status_code >= 500:
        raise _unusable(uri, f"the server answered HTTP {answer.status_code} {answer.reason}".rstrip())


def _refused(uri: str, status: int, text: str, user: str | None) -> UsageError:
    """The one-line error of a tracking server that refuses this client, with the fix of each refusal."""
    where = f"the MLflow tracking server {redact(uri)}"
    host = urlsplit(uri).hostname
    if status == 403 and "host" in text.lower():
        return UsageError(f"{where} refuses the host name {host} (HTTP 403: {first_line(text)[:80]}); start it "
                          f"with --allowed-hosts naming {host}, or use an address it allows")
    if status == 403:
        return UsageError(f"{where} denies user {user or '(none)'} access to the experiment (HTTP 403); "
                          f"ask its administrator for permission, or choose another experiment")
    if user:
        return UsageError(f"{where} refuses the login of user {user} (HTTP 401); check MLFLOW_TRACKING_USERNAME "
                          f"and MLFLOW_TRACKING_PASSWORD")
    return UsageError(f"{where} requires a login (HTTP 401); set MLFLOW_TRACKING_USERNAME and "
                      f"MLFLOW_TRACKING_PASSWORD")


@contextlib.contextmanager
def _creating_store(uri: str):
    """Inside the block MLflow may create the store of ``uri``: once among processes, and quietly.

    A SQLite file store is opened under an exclusive lock on ``<file>.lock``
    (:func:`clrsearch.files.file_lock`, as the study storage is), its folder
    created as MLflow would create it; a folder in place of the file is
    refused at once (MLflow would retry it for over a minute). A missing store
    is made whole, migrated by MLflow in a temporary file beside it and then
    renamed into place (:func:`clrsearch.files.create_whole`): MLflow migrates
    a new store table by table, and a process killed halfway would leave one
    that no later command can open. MLflow's INFO lines about creating a new
    store are left out, so that an error after them stays one line.
    """
    path = sqlite_path(uri)
    lock = contextlib.nullcontext()
    if path is not None:
        if path.is_dir():
            raise _unusable(uri, f"{path} is a folder")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise _unusable(uri, f"{path.parent} is a file, not a folder") from None
        except OSError as error:
            raise _unusable(uri, f"cannot create the folder {path.parent}: {error.strerror}") from None
        lock = file_lock(path, lambda error: _unusable(uri, f"cannot create {path}.lock: {error.strerror}"))
    with lock, _quiet_store_creation():
        if path is not None and missing(path):
            try:
                create_whole(path, lambda temporary: _migrated(uri, temporary))
            except UsageError:
                raise
            except Exception as error:  # OSError of the folder, or MLflow's own
                raise _unusable(uri, f"cannot create {path}: {first_line(error).split('. ')[0]}") from None
        yield


def _migrated(uri: str, temporary: Path) -> None:
    """Create and migrate an MLflow store in the file ``temporary``, with the query of ``uri`` (MLflow makes its
    tables and its default experiment on the first request)."""
    query = uri.partition("?")[2]
    MlflowClient(tracking_uri=f"sqlite:///{temporary}" + (f"?{query}" if query else "")).search_experiments(
        max_results=1)


@contextlib.contextmanager
def _quiet_store_creation():
    """Without MLflow's INFO lines about creating a new SQLite store, so that an error after it stays one line."""
    import logging

    logger = logging.getLogger("mlflow.store.db.utils")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
