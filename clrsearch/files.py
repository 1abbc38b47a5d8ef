"""Files beside a database: the file of a ``sqlite:///`` URL, and the exclusive lock on ``<file>.lock``."""

import contextlib
import fcntl
from pathlib import Path


def sqlite_path(url):
    """The database file of a ``sqlite:///`` URL (its query left out), else None (a server, or in memory)."""
    if not url.startswith("sqlite:///"):
        return None
    name = url[len("sqlite:///"):].split("?", 1)[0]
    return Path(name) if name and name != ":memory:" else None


@contextlib.contextmanager
def file_lock(path, refuse):
    """An exclusive ``flock`` on ``<path>.lock`` while the block runs, released when it ends or its process dies.

    ``refuse(error)`` makes the exception raised when the lock file cannot be opened (an OSError).
    """
    try:
        handle = open(f"{path}.lock", "a")
    except OSError as error:
        raise refuse(error) from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
