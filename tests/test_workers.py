"""The helper processes of ``--workers N`` and the signals that stop them (clrsearch.search.workers)."""

import json
import os
import signal
import subprocess
import sys

import pytest

from clrsearch.search import workers


def test_exit_status_is_what_a_shell_reports():
    assert [workers.exit_status(code) for code in (0, 1, 2, 130)] == [0, 1, 2, 130]
    assert workers.exit_status(-signal.SIGKILL) == 128 + 9 and workers.exit_status(-signal.SIGINT) == 130


def test_the_helper_payload_is_read_from_the_environment(monkeypatch):
    monkeypatch.delenv(workers.HELPER_ENV, raising=False)
    assert workers.helper_payload() is None
    payload = {"parent_pid": 1, "parent_run_id": "abc", "as_json": False, "config": {"study": {}}, "blas_threads": 2}
    monkeypatch.setenv(workers.HELPER_ENV, json.dumps(payload))
    assert workers.helper_payload() == payload


def test_cpus_are_those_this_process_may_run_on():
    assert workers.cpus() == len(os.sched_getaffinity(0))


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


def test_interrupt_sends_sigint_then_kills_a_helper_that_does_not_stop():
    stubborn = ("import signal, sys, time\n"
                "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                "print('ready', flush=True)\n"
                "time.sleep(60)\n")
    polite = "import time\nprint('ready', flush=True)\ntime.sleep(60)\n"
    helpers = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
               for code in (polite, stubborn)]
    for helper in helpers:
        assert helper.stdout.readline() == "ready\n"
    workers.interrupt(helpers, timeout=1.0)
    assert [h.returncode for h in helpers] == [-signal.SIGINT, -signal.SIGKILL]  # Python dies of an unhandled SIGINT
