"""Which process is alive: a worker's name, whether it still runs, and how often workers say so.

A worker is named ``host:pid:start`` (start: the process's start time in
clock ticks since boot, so that a recycled pid is not taken for the dead
process). On the same host a worker is alive while that process runs; on
another host only its heartbeats tell.

Timing, in seconds (defaults in :data:`clrsearch.config.WORKER_TIMING`),
overridable for tests:

- ``CLRSEARCH_HEARTBEAT_SECONDS`` (default 5): how often a running trial and
  a study's MLflow run say they are alive;
- ``CLRSEARCH_GRACE_SECONDS`` (default 20): silence after which a worker on
  another host is taken for dead.
"""

import os
import socket

from .config import WORKER_TIMING
from .errors import UsageError


def cpus() -> int:
    """CPUs this process may run on (its affinity, e.g. ``taskset``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def heartbeat_seconds():
    return _seconds("CLRSEARCH_HEARTBEAT_SECONDS", WORKER_TIMING.heartbeat_seconds)


def grace_seconds():
    grace = _seconds("CLRSEARCH_GRACE_SECONDS", WORKER_TIMING.grace_seconds)
    if grace <= heartbeat_seconds():
        raise UsageError(f"CLRSEARCH_GRACE_SECONDS ({grace:g}) must be longer than the heartbeat "
                         f"interval ({heartbeat_seconds():g} s)")
    return grace


def _seconds(name, default):
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise UsageError(f"${name} must be a number of seconds > 0, not {text!r}; unset it for {default:g}")
    return value


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
