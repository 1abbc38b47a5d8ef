"""Worker processes: who this process is, whether another one is alive, and ``--workers N``.

A worker is named ``host:pid:start`` (start: the process's start time in
clock ticks since boot, so that a recycled pid is not taken for the dead
process). On the same host a worker is alive while that process runs; on
another host only its heartbeats tell.

``--workers N`` starts N - 1 helper processes of the same command once the
study is prepared. A helper reads the resolved study definition and the
parent MLflow run from ``$CLRSEARCH_HELPER``, trains trials, and exits when
none is left; it gets SIGINT when its parent dies.

Timing, in seconds, overridable for tests:

- ``CLRSEARCH_HEARTBEAT_SECONDS`` (default 5): how often a running trial and
  a study's MLflow run say they are alive;
- ``CLRSEARCH_GRACE_SECONDS`` (default 20): silence after which a worker on
  another host is taken for dead.
"""

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys

from .errors import UsageError

HEARTBEAT_SECONDS = 5.0
GRACE_SECONDS = 20.0
HELPER_ENV = "CLRSEARCH_HELPER"
STOP_SECONDS = 30.0  # a helper's time to give its trials back after SIGINT, before SIGKILL
_PR_SET_PDEATHSIG = 1


def heartbeat_seconds():
    return _seconds("CLRSEARCH_HEARTBEAT_SECONDS", HEARTBEAT_SECONDS)


def grace_seconds():
    grace = _seconds("CLRSEARCH_GRACE_SECONDS", GRACE_SECONDS)
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


# ----------------------------------------------------------------------------- identity


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


# ----------------------------------------------------------------------------- helpers


def helper_payload():
    """What the parent handed this helper, or None.

    A dict: parent_pid, parent_run_id, as_json, config (the resolved study
    definition, as tables), blas_threads.
    """
    text = os.environ.get(HELPER_ENV)
    return json.loads(text) if text else None


def spawn(kind, argv, n, payload):
    """Start ``n`` helpers running ``python -m clrsearch.<kind> argv``; returns their Popen objects.

    Each helper runs in its own process group, so that a Ctrl-C in the
    terminal reaches the parent only, which passes it on once.
    """
    env = {**os.environ, HELPER_ENV: json.dumps(payload)}
    command = [sys.executable, "-m", f"clrsearch.{kind}", *argv]
    return [subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, process_group=0) for _ in range(n)]


def die_with_parent(parent_pid):
    """Ask Linux to send this process SIGINT when its parent dies (no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGINT)
    if os.getppid() != parent_pid:  # the parent died before the request
        raise KeyboardInterrupt


def interrupt(helpers, timeout=STOP_SECONDS):
    """SIGINT to every helper still running; SIGKILL to those not gone after ``timeout``."""
    for helper in helpers:
        if helper.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                helper.send_signal(signal.SIGINT)
    for helper in helpers:
        try:
            helper.wait(timeout)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()


def exit_status(returncode):
    """A Popen return code as a shell would report it (killed by signal s: 128 + s)."""
    return 128 - returncode if returncode < 0 else returncode


def cpus():
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def blas_threads(threads):
    """Within the block, NumPy's BLAS uses ``threads`` threads (None: as many as it likes)."""
    if threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM (e.g. from a scheduler) stops the study like Ctrl-C."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def no_interrupt():
    """Ignore Ctrl-C and SIGTERM within the block (the main thread only), e.g. while giving trials back."""
    try:
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
