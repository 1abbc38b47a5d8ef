"""Files beside a database: the file of a ``sqlite:///`` URL, and the exclusive lock on ``<file>.lock``
(also the core-sharing slots of :mod:`clrsearch.search.cores`)."""

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
def file_lock(path, refuse, blocking=True):
    """An exclusive ``flock`` on ``<path>.lock`` while the block runs, released when it ends or its process dies.

    ``refuse(error)`` makes the exception raised when the lock file cannot be opened (an OSError). The block
    gets True; with ``blocking=False`` it runs at once and gets False, without the lock, when another process
    holds it.
    """
    try:
        handle = open(f"{path}.lock", "a")
    except OSError as error:
        raise refuse(error) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
