"""Files beside a database: the file of a ``sqlite:///`` URL, the exclusive lock on ``<file>.lock`` (also the
core-sharing slots of :mod:`clrsearch.search.cores`), and a new database file made whole or not at all."""

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path

CREATING = ".creating"  # suffix of the temporary file a new database is built in, beside it
SIDE_FILES = ("-journal", "-wal", "-shm")  # SQLite's files beside a database file


def sqlite_path(url):
    """The database file of a ``sqlite:///`` URL (its query left out), else None (a server, or in memory)."""
    if not url.startswith("sqlite:///"):
        return None
    name = url[len("sqlite:///"):].split("?", 1)[0]
    return Path(name) if name and name != ":memory:" else None


@contextlib.contextmanager
def file_lock(path, refuse, blocking=True):
    """An exclusive ``flock`` on ``<path>.lock`` while the block runs, released when it ends or its process dies.

    ``refuse(error)`` makes the exception raised when the lock file cannot be opened (an OSError), or is not a
    regular file: it is opened without following a symbolic link or waiting on a FIFO. The block gets True;
    with ``blocking=False`` it runs at once and gets False, without the lock, when another process holds it.
    """
    try:
        handle = os.fdopen(open_regular(f"{path}.lock"), "a")
    except OSError as error:
        raise refuse(error) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def open_regular(name):
    """A descriptor of the regular file ``name``, opened to append and created when missing.

    Raises OSError when ``name`` is a symbolic link, a FIFO, a device or anything but a regular file
    (``O_NOFOLLOW``, ``O_NONBLOCK`` and a check of ``fstat``): nobody else's file is written, nor does a FIFO
    hang the process.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    not_regular = OSError(errno.EINVAL, "not a regular file (a link, a FIFO or a device)", str(name))
    try:
        fd = os.open(name, flags, 0o666)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENXIO):  # a symbolic link; a FIFO nobody reads
            raise not_regular from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise not_regular
    return fd


def create_whole(path, build):
    """Create the database file ``path`` whole or not at all; call it under :func:`file_lock` of ``path``.

    ``build(temporary)`` makes the complete database in ``temporary``, ``<path>.creating`` beside it (same
    folder, hence same file system), which then replaces ``path`` in one ``os.replace``: a process killed at
    any moment leaves no database or a complete one. What a killed creation left (the temporary file and its
    journal) is removed first; so are SQLite's files beside ``path`` itself, which would otherwise be taken
    for the journal of the new database.
    """
    path = Path(path)
    temporary = path.with_name(path.name + CREATING)
    for leftover in (temporary, *(Path(f"{name}{side}") for name in (temporary, path) for side in SIDE_FILES)):
        leftover.unlink(missing_ok=True)
    build(temporary)
    with open(temporary, "rb") as built:
        os.fsync(built.fileno())
    os.replace(temporary, path)
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)  # the rename itself survives a crash of the machine
    finally:
        os.close(folder)


def missing(path):
    """Whether the database file ``path`` is still to be created: absent, or empty (SQLite made it and no more)."""
    try:
        return Path(path).stat().st_size == 0
    except FileNotFoundError:
        return True
