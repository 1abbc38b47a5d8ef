"""Which process is alive (clrsearch.processes): a worker's name, whether it still runs, and the
heartbeat timing read from the environment."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from clrsearch import processes
from helpers import dead_pid


def start_ticks(pid):
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), read here independently."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[19]


def test_identity_is_host_pid_and_start_time():
    assert processes.identity() == f"{socket.gethostname()}:{os.getpid()}:{start_ticks(os.getpid())}"
    assert processes.identity(1) == f"{socket.gethostname()}:1:{start_ticks(1)}"


def test_a_running_worker_of_this_host_is_alive_and_a_gone_or_recycled_one_is_not():
    me = processes.identity()
    assert processes.alive(me) is True
    assert processes.alive(processes.identity(dead_pid())) is False
    host, pid, start = me.rsplit(":", 2)
    assert processes.alive(f"{host}:{pid}:{int(start) + 1}") is False  # the same pid, started at another time
    assert processes.alive(f"{host}:{pid}:0") is True  # start unknown: the pid decides


def test_a_killed_child_not_yet_reaped_is_dead():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    worker = processes.identity(child.pid)
    assert processes.alive(worker) is True
    child.send_signal(signal.SIGKILL)
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # dead, but left a zombie
        assert processes.alive(worker) is False
    finally:
        child.wait()


@pytest.mark.parametrize("worker", ["elsewhere:12:34", "not a worker", None, "host:pid:1"])
def test_workers_of_other_hosts_or_unreadable_names_are_unknown(worker):
    assert processes.alive(worker) is None


def test_dead_is_the_process_on_this_host_and_the_silence_elsewhere():
    now = time.time()
    assert processes.dead(processes.identity(), None, 20) is False
    assert processes.dead(processes.identity(dead_pid()), now, 20) is True  # gone: no grace period
    assert processes.dead("elsewhere:1:1", None, 20) is False  # no sign to judge by: only Optuna's heartbeats tell
    assert processes.dead("elsewhere:1:1", now - 19, 20) is False and processes.dead("elsewhere:1:1", now - 21, 20)
    assert processes.dead(None, now - 21, 20) is True and processes.dead(None, now - 21, 30) is False


def test_a_heartbeat_beats_until_stopped_and_outlives_a_failing_beat():
    beats = []

    def beat():
        beats.append(time.monotonic())
        if len(beats) == 2:
            raise RuntimeError("a missed beat")

    with processes.Heartbeat(beat, 0.05):
        time.sleep(0.4)
    stopped = len(beats)
    time.sleep(0.15)
    assert 4 <= stopped == len(beats)
