"""Which process is alive: a worker's name, whether it still runs, and the heartbeat that says so.

A worker is named ``host:pid:start`` (start: the process's start time in
clock ticks since boot, so that a recycled pid is not taken for the dead
process). On the same host a worker is alive while that process runs; on
another host only its heartbeats tell (:func:`dead` is the one rule).

The timing, in seconds, is a :class:`clrsearch.config.WorkerTiming` the
command builds (``$CLRSEARCH_HEARTBEAT_SECONDS``, ``$CLRSEARCH_GRACE_SECONDS``)
and passes down: ``heartbeat_seconds`` to :class:`Heartbeat`,
``grace_seconds`` to :func:`dead`.
"""

import contextlib
import os
import socket
import threading
import time



def cpus() -> int:
    """CPUs this process may run on (its affinity, e.g. ``taskset``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def identity(pid=None):
    """``host:pid:start`` of this process (or of ``pid`` on this host)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or 0}"


def alive(worker):
    """True or False for a worker of this host; None for one elsewhere (only heartbeats tell)."""
    parts = str(worker).rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    host, pid, start = parts[0], int(parts[1]), parts[2]
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _stat(pid)
    if stat is None:
        return True
    if stat[0] in "ZX":  # killed, not yet reaped by its parent
        return False
    return start in ("0", stat[19])


def dead(worker, silent_since, grace):
    """Whether the process named ``worker`` is dead.

    On this host: when that process is gone. Elsewhere, or unnamed (None):
    when its last sign of life, ``silent_since`` (seconds since the epoch),
    is older than ``grace`` seconds; without such a sign (None) it is not
    taken for dead.
    """
    here = None if worker is None else alive(worker)
    if here is not None:
        return not here
    return silent_since is not None and time.time() - silent_since > grace


class Heartbeat:
    """Calls ``beat()`` every ``seconds`` in a background thread, from ``start`` (or the start of a ``with``
    block) until ``stop``; a beat that fails is tried again at the next interval."""

    def __init__(self, beat, seconds):
        self._beat = beat
        self._seconds = seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clrsearch-heartbeat", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _run(self):
        while not self._stop.wait(self._seconds):
            with contextlib.suppress(Exception):
                self._beat()


def _start_ticks(pid):
    """Start time of process ``pid`` in clock ticks since boot (Linux), else None."""
    stat = _stat(pid)
    return None if stat is None else int(stat[19])


def _stat(pid):
    """Fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields if len(fields) > 19 else None
