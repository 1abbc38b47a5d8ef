"""The environment variables of the commands, each read once here into the values the library takes as arguments.

- ``CLRSEARCH_DATA``, else ``XDG_CACHE_HOME`` (or ``~/.cache``): where CIFAR-10 is when no ``--data-dir`` names it;
- ``CLRSEARCH_HEARTBEAT_SECONDS``, ``CLRSEARCH_GRACE_SECONDS``: a study's :class:`~clrsearch.config.WorkerTiming`;
- ``CLRSEARCH_BLAS_THREADS``, ``CLRSEARCH_CORE_SLOTS``: how a study shares the cores (:mod:`clrsearch.search.cores`);
- ``CLRSEARCH_HELPER``: what a helper of ``--workers N`` got from its parent (read by :mod:`.study`);
- MLflow's ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``: set, unless the user
  set them, to a short budget per request (:func:`tracking_retries`).

A bad value is a :class:`~clrsearch.errors.UsageError`: one line and exit status 2.
"""

import os
from dataclasses import replace
from pathlib import Path

from ..config import WORKER_TIMING
from ..data.cifar10 import ENV_VAR
from ..errors import UsageError
from ..search.cores import SLOTS_VARIABLE, THREADS_VARIABLE

HEARTBEAT_VARIABLE = "CLRSEARCH_HEARTBEAT_SECONDS"
# MLflow's retries of one HTTP request, waits of 0, 1 and 2 s (and jitter): a study rides out a longer outage of
# the tracking server itself, up to --outage-seconds (clrsearch.outages.PatientClient), and once it gave up,
# each later request (ending its runs on the way out) fails within seconds instead of MLflow's 4 minutes.
TRACKING_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
GRACE_VARIABLE = "CLRSEARCH_GRACE_SECONDS"


def data_dir(given=None, environ=os.environ) -> str:
    """``given`` (``--data-dir``, or a study definition's ``data_dir``), else ``$CLRSEARCH_DATA``, else the
    per-user cache ``$XDG_CACHE_HOME/clrsearch`` (``~/.cache/clrsearch``)."""
    if given:
        return str(given)
    if environ.get(ENV_VAR):
        return environ[ENV_VAR]
    return str(Path(environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser()) / "clrsearch")


def store_folders(storage, environ=os.environ) -> list:
    """The folders a study writes its stores in: the Optuna storage's file (``storage``, None: the default),
    the MLflow store's (``$MLFLOW_TRACKING_URI``) when a file, else the working folder."""
    from ..config import DEFAULT_STORAGE
    from ..files import sqlite_path

    paths = [sqlite_path(storage or DEFAULT_STORAGE), sqlite_path(environ.get("MLFLOW_TRACKING_URI") or "")]
    folders = [str(p.absolute().parent) for p in paths if p is not None]
    return list(dict.fromkeys(folders)) or [str(Path.cwd())]


def tracking_retries(environ=os.environ) -> dict:
    """The variables of :data:`TRACKING_RETRIES` the environment does not set, to be set."""
    return {name: value for name, value in TRACKING_RETRIES.items() if name not in environ}


def worker_timing(environ=os.environ):
    """:data:`~clrsearch.config.WORKER_TIMING` with the heartbeat interval and grace period of the environment."""
    heartbeat = _seconds(environ, HEARTBEAT_VARIABLE, WORKER_TIMING.heartbeat_seconds)
    grace = _seconds(environ, GRACE_VARIABLE, WORKER_TIMING.grace_seconds)
    if grace <= heartbeat:
        raise UsageError(f"{GRACE_VARIABLE} ({grace:g}) must be longer than the heartbeat interval ({heartbeat:g} s)")
    return replace(WORKER_TIMING, heartbeat_seconds=heartbeat, grace_seconds=grace)


def _seconds(environ, name, default):
    text = environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise UsageError(f"${name} must be a number of seconds > 0, not {text!r}; unset it for {default:g}")
    return value


def blas_threads(environ=os.environ) -> int | None:
    """``$CLRSEARCH_BLAS_THREADS`` as a number of threads, or None when unset (share the cores)."""
    text = environ.get(THREADS_VARIABLE, "").strip()
    if not text:
        return None
    try:
        threads = int(text)
    except ValueError:
        threads = 0
    if threads < 1:
        raise UsageError(f"${THREADS_VARIABLE} must be a whole number of threads >= 1, not {text!r}; "
                         f"unset it to share the cores with other studies")
    return threads


def core_slots(environ=os.environ) -> str | None:
    """``$CLRSEARCH_CORE_SLOTS``, the folder of the core-sharing slots, or None (the default folder)."""
    return environ.get(SLOTS_VARIABLE) or None
