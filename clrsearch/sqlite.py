"""SQLite stores whose commits wait for SQLite's log, not for the disk.

A study writes a few hundred small transactions to its SQLite stores (the
MLflow tracking store ``mlflow.db``, the Optuna storage): a run created, a
batch of metrics, a run ended, a trial told. In SQLite's default rollback
journal each commit syncs the database file and its journal to the disk,
about 4 ms here, most of the time such a write takes. :func:`use_write_ahead_log`
makes every SQLite connection that SQLAlchemy (hence MLflow and Optuna) opens
in this process use write-ahead logging (``PRAGMA journal_mode=WAL``, which
the database file keeps) with ``PRAGMA synchronous=NORMAL``: a commit appends
to ``<store>-wal`` and the log is synced at checkpoints. A transaction
committed survives the process being killed; only a power cut may lose the
last ones. Readers (``mlflow ui``, optuna-dashboard, other workers) no longer
wait for a writer.

The files ``<store>-wal`` and ``<store>-shm`` lie beside the store while it is
open and are folded back into it when the last connection closes; a command
that ends with ``os._exit`` closes its connections first (:func:`close_stores`),
so that each store is one file again once no process has it open; copy a store
when no study writes to it. Write-ahead logging needs a local file system:
on a network file system (NFS, SMB), set ``CLRSEARCH_SQLITE_JOURNAL=default``
to keep SQLite's own journal. Other databases (PostgreSQL) are left alone.
"""
import os
import sqlite3

from sqlalchemy import event
from sqlalchemy.engine import Engine

from .errors import UsageError

JOURNAL_VARIABLE = "CLRSEARCH_SQLITE_JOURNAL"  # "wal" (default) or "default"
_registered = False
_open = {}  # id -> sqlite3.Connection: this process's connections in write-ahead-log mode not closed yet


def use_write_ahead_log() -> bool:
    """Make the SQLite connections opened from now on use write-ahead logging, unless
    ``$CLRSEARCH_SQLITE_JOURNAL`` is ``default``; returns whether they will. Calling it again does nothing more."""
    global _registered
    choice = os.environ.get(JOURNAL_VARIABLE, "wal").strip().lower() or "wal"
    if choice not in ("wal", "default"):
        raise UsageError(f"${JOURNAL_VARIABLE} must be wal or default, not {choice!r}")
    if choice == "default":
        return False
    if not _registered:
        event.listen(Engine, "connect", _on_connect)
        event.listen(Engine, "close", _on_close)
        _registered = True
    return True


def close_stores() -> None:
    """Close this process's SQLite connections in write-ahead-log mode, for a process about to end without
    closing anything (``os._exit``): the last connection to close a store folds its log back into it and
    removes ``<store>-wal`` and ``<store>-shm``. Call it once every transaction is committed."""
    for connection in list(_open.values()):
        try:
            connection.close()
        except sqlite3.Error:  # a connection another thread holds: its store keeps its log, which is as safe
            pass
    _open.clear()


def _on_connect(connection, _record):
    if not isinstance(connection, sqlite3.Connection):
        return
    cursor = connection.cursor()
    try:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")  # kept by the file; a no-op once it is WAL
        except sqlite3.DatabaseError:  # another process holds the file, or it is no database: left as it is,
            return  # for the store's own checks to report
        cursor.execute("PRAGMA synchronous=NORMAL")  # this connection's commits: no sync but at checkpoints
        _open[id(connection)] = connection
    finally:
        cursor.close()


def _on_close(connection, _record):
    _open.pop(id(connection), None)
