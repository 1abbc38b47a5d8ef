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
from helpers import UNSHARE, dead_pid, unshare_permitted


def start_ticks(pid):
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), read here independently."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[19]


def process_table():
    """The boot id and the PID namespace's inode, read here independently (readlink gives "pid:[inode]")."""
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot = f.read().strip()
    return f"{boot}.{os.readlink('/proc/self/ns/pid')[5:-1]}"


def test_identity_is_host_pid_start_time_and_process_table():
    table = process_table()
    assert processes.identity() == f"{socket.gethostname()}:{os.getpid()}:{start_ticks(os.getpid())}:{table}"
    assert processes.identity(1) == f"{socket.gethostname()}:1:{start_ticks(1)}:{table}"
    assert processes.label(processes.identity()) == f"{socket.gethostname()}:{os.getpid()}"


def test_the_process_table_is_the_hostname_where_proc_does_not_say(monkeypatch):
    real_open = open

    def no_boot_id(path, *args, **kwargs):
        if str(path).startswith("/proc/sys/kernel/random"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_boot_id)
    assert processes.process_table() == socket.gethostname()


def test_a_running_worker_of_this_host_is_alive_and_a_gone_or_recycled_one_is_not():
    me = processes.identity()
    assert processes.alive(me) is True
    assert processes.alive(processes.identity(dead_pid())) is False
    host, pid, start, table = me.split(":", 3)
    assert processes.alive(f"{host}:{pid}:{int(start) + 1}:{table}") is False  # the same pid, started at another time
    assert processes.alive(f"{host}:{pid}:0:{table}") is True  # start unknown: the pid decides


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


@pytest.mark.parametrize("worker", ["elsewhere:12:34:other-table", "not a worker", None, "host:pid:1:table"])
def test_workers_of_other_process_tables_or_unreadable_names_are_unknown(worker):
    assert processes.alive(worker) is None


def test_a_worker_of_this_hostname_and_pid_in_another_process_table_is_unknown():
    host, pid, start, table = processes.identity().split(":", 3)
    assert processes.alive(f"{host}:{pid}:{start}:{table}0") is None  # e.g. a container with the host's network
    assert processes.alive(f"{host}:{pid}:{start}") is None  # a name that does not say its table
    assert processes.dead(f"{host}:{dead_pid()}:1:{table}0", None, 20) is False  # only heartbeats tell




@pytest.mark.slow
@pytest.mark.skipif(not unshare_permitted(), reason="unshare of a PID namespace is not permitted here")
def test_two_pid_namespaces_of_one_hostname_do_not_take_each_others_workers_for_dead():
    code = ("import sys, time; from clrsearch import processes\n"
            "print(processes.identity(), flush=True)\n"
            "other = sys.stdin.readline().strip()\n"
            "print(processes.alive(other), processes.dead(other, None, 20), flush=True)\n")
    started = []
    for _ in range(2):  # one after the other: the second's pid 1 started later than the first's
        started.append(subprocess.Popen([*UNSHARE, sys.executable, "-c", code], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True))
        time.sleep(0.1)
    first, second = started
    try:
        names = [p.stdout.readline().strip() for p in (first, second)]
        assert [name.split(":")[0] for name in names] == [socket.gethostname()] * 2
        assert [name.split(":")[1] for name in names] == ["1", "1"]  # each the first process of its namespace
        answers = [p.communicate(other + "\n", timeout=60)[0].strip() for p, other in zip((first, second),
                                                                                          reversed(names))]
        assert answers == ["None False", "None False"]
    finally:
        for p in (first, second):
            if p.poll() is None:
                p.kill()
                p.wait()


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
