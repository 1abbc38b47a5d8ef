"""``--workers N``: helper processes of one study on this machine, and the signals that stop them.

``--workers N`` starts N - 1 helper processes of the same command once the
study is prepared. A helper's command reads the resolved study definition
and the parent MLflow run from ``$CLRSEARCH_HELPER``; the helper trains
trials, and exits when none is left; it gets SIGINT when its parent dies.
"""

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys

from ..config import WORKER_TIMING

HELPER_ENV = "CLRSEARCH_HELPER"
_PR_SET_PDEATHSIG = 1


def spawn(kind, argv, n, payload, environ):
    """Start ``n`` helpers running ``python -m clrsearch.<kind> argv``; returns their Popen objects.

    ``payload`` (a dict: parent_pid, parent_run_id, as_json, config, the
    resolved study definition as tables) goes to each helper as
    ``$CLRSEARCH_HELPER``, beside the variables of ``environ`` (the
    command's environment). Each helper runs in its own process group, so
    that a Ctrl-C in the terminal reaches the parent only, which passes it on
    once.
    """
    env = {**environ, HELPER_ENV: json.dumps(payload)}
    command = [sys.executable, "-m", f"clrsearch.{kind}", *argv]
    return [subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, process_group=0) for _ in range(n)]


def die_with_parent(parent_pid):
    """Ask Linux to send this process SIGINT when its parent dies (no-op elsewhere).

    SIGINT is handled as Ctrl-C from here on even when the helper inherited it
    ignored (a study started in the background by a shell), so that the
    parent's death and its ``interrupt`` reach the helper.
    """
    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGINT, signal.default_int_handler)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGINT)
    if os.getppid() != parent_pid:  # the parent died before the request
        raise KeyboardInterrupt


def interrupt(helpers, timeout=WORKER_TIMING.stop_seconds):
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
def _stops_handled_by(handler):
    """Ctrl-C and SIGTERM go to ``handler`` within the block (the main thread only; elsewhere nothing changes)."""
    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        for s, before in previous.items():
            signal.signal(s, before)


def no_interrupt():
    """Ignore Ctrl-C and SIGTERM within the block (the main thread only), e.g. while giving trials back."""
    return _stops_handled_by(signal.SIG_IGN)


@contextlib.contextmanager
def deferred_interrupt():
    """Within the block, Ctrl-C and SIGTERM wait for its end (the main thread only), e.g. while trials are claimed:
    the handlers from before the block then receive them, so that what the block took is in hand when they run."""
    received = []
    try:
        with _stops_handled_by(lambda signum, frame: received.append(signum)):
            yield
    finally:
        for s in dict.fromkeys(received):
            signal.raise_signal(s)
