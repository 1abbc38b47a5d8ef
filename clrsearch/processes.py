"""Which process is alive: a worker's name, whether it still runs, and the heartbeat that says so.

A worker is named ``host:pid:start:table`` (start: the process's start time
in clock ticks since boot, so that a recycled pid is not taken for the dead
process; table: which process table the pid belongs to, :func:`process_table`).
In the same process table a worker is alive while that process runs; in
another one (another machine, container or pod, even of the same hostname)
only its heartbeats tell (:func:`dead` is the one rule). The hostname is in
the name for people to read (:func:`label`), never to judge by.

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


def process_table():
    """What names the process table this process's pids belong to: the kernel's boot id and the inode of its PID
    namespace (``<boot id>.<inode>``), or the hostname where /proc shows neither.

    Two containers sharing the host's network, or two pods of one hostname,
    have one hostname but two process tables: a pid of one means nothing in
    the other.
    """
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino  # the inode of readlink's "pid:[inode]"
    except OSError:
        return socket.gethostname()
    return f"{boot}.{namespace}" if boot else socket.gethostname()


def identity(pid=None):
    """``host:pid:start:table`` of this process (or of ``pid`` in this process table)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or 0}:{process_table()}"


def label(worker):
    """A worker's name as people read it: ``host:pid``."""
    return ":".join(str(worker).split(":")[:2])


def alive(worker):
    """True or False for a worker of this process table; None for one of another (only heartbeats tell), or
    for a name that does not say its table."""
    parts = str(worker).split(":", 3)
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    pid, start, table = int(parts[1]), parts[2], parts[3]
    if table != process_table():
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

    In this process table: when that process is gone. In another, or unnamed (None):
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
