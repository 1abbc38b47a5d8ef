"""Outages a study rides out, and a full disk, told in one line.

A study waits for a PostgreSQL storage or an MLflow tracking server that is
out of reach (restarted, or its network down) for up to
``WorkerTiming.outage_seconds`` (``--outage-seconds``), trying again with a
backoff of ``BACKOFF`` seconds, and goes on where it stood: a population that
finished meanwhile is told once the storage is back. Past the bound it stops
with one line (:class:`~clrsearch.errors.UsageError`, exit status 2), and the
same command resumes the study. A full disk stops it at once, with one line
naming the folder; nothing is half-written (a trial not told stays RUNNING, and
is failed and enqueued again when the study resumes).

Three doors, all here: :meth:`Patience.retry_connects` (every new
connection of a SQLAlchemy engine, i.e. every Optuna storage call made while
the server is down), :meth:`Patience.ride_out` (a call whose connection broke
under it), and :class:`PatientClient` (every call of an ``MlflowClient``).
"""

import contextlib
import errno
import re
import sqlite3
import sys
import time
from pathlib import Path

import requests
import sqlalchemy
from mlflow.exceptions import MlflowException

from .errors import UsageError, first_line, redact

BACKOFF = (0.5, 5.0)  # seconds: the first wait between two tries, and the longest (each wait doubles)
SQLITE_FULL = "database or disk is full"  # SQLite's message for SQLITE_FULL


def _say(text):
    print(text, file=sys.stderr, flush=True)


def _chain(error):
    """``error`` and the exceptions it was raised from or during, outermost first."""
    seen = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return seen


def is_outage(error):
    """Whether ``error`` says a server is out of reach rather than that it refused the request: a connection
    refused, closed or timed out to a database server (SQLAlchemy's or the driver's OperationalError or
    InterfaceError; never SQLite's, whose file is always there) or to a tracking server (requests'
    ConnectionError or Timeout, or MLflow's exception for a request that failed so)."""
    for e in _chain(error):
        if isinstance(e, UsageError):
            return False
        if isinstance(e, (sqlite3.Error, requests.exceptions.HTTPError)):
            return False
        if isinstance(e, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return not isinstance(e.orig, sqlite3.Error)
        if type(e).__module__.split(".")[0] in ("psycopg2", "psycopg") and type(e).__name__ in (
                "OperationalError", "InterfaceError"):
            return True
        if isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return True
        if isinstance(e, MlflowException) and re.match(r"API request to \S+ failed with exception ", str(e)):
            return True
    return False


def ride_out(call, bound, what, retry_on=is_outage, clock=time.monotonic, sleep=time.sleep):
    """``call()``, tried again while it raises an error ``retry_on`` accepts, for up to ``bound`` seconds.

    Waits ``BACKOFF[0]`` seconds after the first failure, doubling up to
    ``BACKOFF[1]``; says on stderr when ``what`` (e.g. "the storage
    postgresql://...") becomes unreachable and when it is back. Past the bound
    raises :class:`UsageError`: one line, with the fix (run the command again).
    """
    deadline, wait, since = None, BACKOFF[0], None
    while True:
        try:
            result = call()
        except Exception as error:
            if not retry_on(error):
                raise
            now = clock()
            if deadline is None:
                since, deadline = now, now + bound
                if bound > 0:
                    _say(f"{redact(what)} unreachable ({redact(first_line(error))}), retrying for up to {bound:.3g} s")
            if now >= deadline:
                waited = f" for {bound:.3g} s" if bound > 0 else ""
                raise UsageError(f"cannot reach {redact(what)}{waited} ({redact(first_line(error))}); once it is "
                                 f"back, run the same command again: the study resumes") from None
            sleep(min(wait, deadline - now))
            wait = min(2 * wait, BACKOFF[1])
            continue
        if since is not None:
            _say(f"{redact(what)} reachable again after {clock() - since:.0f} s")
        return result


class Patience:
    """How long one process waits for one server (``bound`` seconds per outage), and whether it gave up.

    Once a wait gave up the process is stopping: later calls to that server
    are tried once each, so that the way out (giving trials back, ending
    runs) takes seconds, not ``bound`` again per call.
    """

    def __init__(self, bound):
        self.bound = bound
        self.gave_up = False

    def ride_out(self, call, what):
        """:func:`ride_out` of ``call`` for up to the bound, or once after a give-up."""
        try:
            return ride_out(call, 0 if self.gave_up else self.bound, what)
        except UsageError:
            self.gave_up = True
            raise

    def retry_connects(self, engine, what):
        """Make every new connection of the SQLAlchemy ``engine`` ride out an outage of its server
        (:meth:`ride_out`) through that engine's own ``do_connect`` event; with ``pool_pre_ping`` a pooled
        connection the server dropped is replaced through it too. Returns ``engine``."""
        def connect(dialect, record, cargs, cparams):
            return self.ride_out(lambda: dialect.connect(*cargs, **cparams), what)

        sqlalchemy.event.listen(engine, "do_connect", connect)
        return engine


class PatientClient:
    """An ``MlflowClient`` whose calls ride out a tracking server outage (a :class:`Patience` of ``bound``
    seconds); attributes that are not methods (``tracking_uri``) are the client's.

    Once it gave up, its calls raise ``MlflowException`` at once, unsent: the
    study is stopping, and the runs it leaves RUNNING are ended when it
    resumes (:func:`clrsearch.tracking.end_dead_runs`).
    """

    def __init__(self, client, bound):
        self.client = client
        self.patience = Patience(bound)

    def ride_out(self, call):
        """``call()`` (any call to the tracking server, e.g. an artifact upload) under this client's patience."""
        what = f"the tracking server {self.client.tracking_uri}"
        if self.patience.gave_up:
            raise MlflowException(f"not sent: {redact(what)} was out of reach for {self.patience.bound:.3g} s")
        return self.patience.ride_out(call, what)

    def __getattr__(self, name):
        value = getattr(self.client, name)
        if not callable(value):
            return value
        return lambda *args, **kwargs: self.ride_out(lambda: value(*args, **kwargs))


def full_disk(error):
    """The folder of the full disk ``error`` (or an exception in its chain) is about, "" when no file is named,
    or None when it is not about a full disk (``ENOSPC``, ``EDQUOT`` or SQLite's ``SQLITE_FULL``)."""
    for e in _chain(error):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return str(Path(e.filename).parent) if e.filename else ""
        if SQLITE_FULL in str(getattr(e, "orig", None) or e):
            return ""
    return None


@contextlib.contextmanager
def disk_full_in_one_line(folders):
    """Within the block, an error of a full disk becomes a :class:`UsageError` naming the folder (the file's,
    else those of ``folders``, the study's stores): free space, then run the same command again."""
    try:
        yield
    except Exception as error:
        folder = full_disk(error)
        if folder is None:
            raise
        where = folder or " or ".join(str(f) for f in folders if f) or "a folder of the study"
        raise UsageError(f"no space left on the disk of {where}: free space, then run the same command again "
                         f"(the study resumes where it stopped)") from None
