"""The helper processes of ``--workers N`` and the signals that stop them (clrsearch.search.workers)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from clrsearch.search import workers
from helpers import sigint_default


def test_exit_status_is_what_a_shell_reports():
    assert [workers.exit_status(code) for code in (0, 1, 2, 130)] == [0, 1, 2, 130]
    assert workers.exit_status(-signal.SIGKILL) == 128 + 9 and workers.exit_status(-signal.SIGINT) == 130


def test_sigterm_within_the_block_stops_like_ctrl_c_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with workers.sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between bytecodes
                pass
    assert signal.getsignal(signal.SIGTERM) is before


def test_no_interrupt_ignores_ctrl_c_and_sigterm_within_the_block():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with workers.no_interrupt():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
    assert {s: signal.getsignal(s) for s in before} == before


@pytest.mark.slow
def test_interrupt_sends_sigint_then_kills_a_helper_that_does_not_stop():
    stubborn = ("import signal, sys, time\n"
                "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                "print('ready', flush=True)\n"
                "time.sleep(60)\n")
    polite = "import time\nprint('ready', flush=True)\ntime.sleep(60)\n"
    # The stubborn one first: interrupt waits for each in turn, and the polite one stops meanwhile.
    helpers = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                                preexec_fn=sigint_default) for code in (stubborn, polite)]
    for helper in helpers:
        assert helper.stdout.readline() == "ready\n"
    workers.interrupt(helpers, timeout=3.0)
    assert [h.returncode for h in helpers] == [-signal.SIGKILL, -signal.SIGINT]  # Python dies of an unhandled SIGINT
    for helper in helpers:
        helper.stdout.close()


HELPER = """
import os, signal, subprocess, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell starts a background job
code = ("from clrsearch.search import workers; import os, time; workers.die_with_parent(int(os.environ['PARENT'])); "
        "print('armed', flush=True); time.sleep(60)")
child = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PARENT": str(os.getpid())},
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
assert child.stdout.readline() == "armed\\n"
print(child.pid, flush=True)
"""  # the parent exits once its helper is armed


@pytest.mark.slow
def test_a_helper_dies_with_its_parent_even_when_started_with_sigint_ignored():
    parent = subprocess.run([sys.executable, "-c", HELPER], capture_output=True, text=True, timeout=60, check=True)
    pid = int(parent.stdout.split()[-1])
    try:
        for _ in range(60):
            if not running(pid):
                break
            time.sleep(0.05)
        assert not running(pid), "the helper outlived its parent"
    finally:
        if running(pid):
            os.kill(pid, signal.SIGKILL)


def running(pid):
    """Whether process ``pid`` exists and is not a zombie (an orphan is reaped by whoever adopts it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


def test_ctrl_c_within_a_deferred_block_is_raised_at_its_end():
    # Python's own Ctrl-C handler, also where the tests run as a background job (SIGINT ignored from the start)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    done = []
    try:
        interrupted_at_the_end(done)
    finally:
        signal.signal(signal.SIGINT, previous)


def interrupted_at_the_end(done):
    with pytest.raises(KeyboardInterrupt):
        with workers.deferred_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs between bytecodes: here it only takes note
                pass
            done.append("the block ran to its end")
    assert done == ["the block ran to its end"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
