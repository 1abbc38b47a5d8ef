"""How training processes share the cores (clrsearch.search.cores): checked in fresh processes that hold slots,
against the thread count threadpoolctl reads back from OpenBLAS and the CPUs the kernel grants."""
import os
import subprocess
import sys
import textwrap

import pytest
from threadpoolctl import threadpool_info

from clrsearch.errors import UsageError
from clrsearch.search import cores

# A child that takes its share among the slots of folder argv[1], prints the BLAS threads OpenBLAS reports, then
# waits for a line on stdin.
CHILD = textwrap.dedent("""
    import sys
    import numpy  # loads OpenBLAS
    from threadpoolctl import threadpool_info
    from clrsearch.search.cores import CoreShare
    with CoreShare(folder=sys.argv[1]):
        print(min(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), flush=True)
        sys.stdin.readline()
""")


def blas_threads():
    return min(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")


def child(folder, affinity=None):
    preexec = (lambda: os.sched_setaffinity(0, affinity)) if affinity else None
    return subprocess.Popen([sys.executable, "-c", CHILD, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, preexec_fn=preexec)


@pytest.fixture
def slots(tmp_path):
    return tmp_path


def test_cpus_are_those_this_process_may_run_on():
    assert cores.cpus() == len(os.sched_getaffinity(0))


def test_alone_a_process_takes_every_core_and_beside_another_half(slots):
    n = cores.cpus()
    with cores.CoreShare(folder=slots) as share:
        assert share.threads == n and blas_threads() == n
        other = child(slots)
        try:
            assert int(other.stdout.readline()) == max(1, n // 2)  # it came second: two slots held
            assert share.check() == max(1, n // 2) and blas_threads() == max(1, n // 2)
        finally:
            other.communicate("\n")
        assert share.check() == n and blas_threads() == n  # its slot went with it


def test_a_killed_process_gives_its_slot_back(slots):
    other = child(slots)
    other.stdout.readline()
    other.kill()
    other.wait()
    with cores.CoreShare(folder=slots) as share:
        assert share.threads == cores.cpus()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_a_process_limited_to_one_cpu_uses_one_thread(slots):
    one = child(slots, affinity={sorted(os.sched_getaffinity(0))[0]})
    try:
        assert int(one.stdout.readline()) == 1
    finally:
        one.communicate("\n")


def test_the_threads_are_restored_after_the_block(slots):
    before = blas_threads()
    with cores.CoreShare(fixed=1, folder=slots) as share:
        assert blas_threads() == 1
        assert share.threads == 1 and list(slots.iterdir()) == []  # a fixed count takes no slot
    assert blas_threads() == before


def test_a_slot_folder_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="cannot use the core-sharing slots"):
        with cores.CoreShare(folder=tmp_path / "file" / "slots"):
            pass


def test_the_share_is_checked_again_only_when_due(slots):
    now = [0.0]
    with cores.CoreShare(folder=slots, clock=lambda: now[0]) as share:
        checks = []
        share.check = lambda real=share.check: checks.append(now[0]) or real()
        share.check_if_due()
        now[0] = cores.RECHECK_SECONDS - 0.01
        share.check_if_due()
        now[0] = cores.RECHECK_SECONDS
        share.check_if_due()
        assert checks == [cores.RECHECK_SECONDS]
