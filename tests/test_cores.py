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


def refused(folder, *parts):
    """The one-line error of CoreShare in ``folder``, checked to name each of ``parts``."""
    with pytest.raises(UsageError) as raised:
        with cores.CoreShare(folder=folder):
            pass
    message = str(raised.value)
    assert "\n" not in message and all(part in message for part in parts), message


def test_a_new_slot_folder_is_the_users_alone(tmp_path):
    os.umask(previous := os.umask(0o002))  # a umask that lets the group write
    try:
        with cores.CoreShare(folder=tmp_path / "slots"):
            pass
    finally:
        os.umask(previous)
    info = (tmp_path / "slots").stat()
    assert oct(info.st_mode & 0o777) == oct(0o700) and info.st_uid == os.getuid()


def test_a_slot_folder_that_is_a_symbolic_link_is_refused(tmp_path):
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "slots").symlink_to(tmp_path / "real")
    refused(tmp_path / "slots", f"slots in {tmp_path / 'slots'}: it is a symbolic link", "$CLRSEARCH_CORE_SLOTS")
    assert list((tmp_path / "real").iterdir()) == []


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o1777], ids=lambda mode: f"{mode:04o}")
def test_a_slot_folder_others_may_write_to_is_refused(tmp_path, mode):
    folder = tmp_path / "slots"
    folder.mkdir()
    folder.chmod(mode)
    refused(folder, f"others may write to it (mode {mode:04o}; chmod go-w it)")
    assert list(folder.iterdir()) == []


def test_a_slot_folder_of_another_user_is_refused(tmp_path):
    if os.getuid() == 0:
        folder = tmp_path / "slots"
        folder.mkdir(mode=0o755)
        os.chown(folder, 65534, 65534)
    else:
        folder = tmp_path.anchor  # "/", the superuser's
    refused(folder, "it belongs to uid", f"not to you (uid {os.getuid()})")


def test_slot_files_that_are_links_or_fifos_are_refused_without_waiting(tmp_path):
    folder = tmp_path / "slots"
    folder.mkdir(mode=0o700)
    target = tmp_path / "elsewhere"
    (folder / "slot-0.lock").symlink_to(target)
    refused(folder, "not a regular file", str(folder / "slot-0.lock"))
    assert not target.exists()  # the link was not followed
    (folder / "slot-0.lock").unlink()
    os.mkfifo(folder / "slot-0.lock")  # opened for writing without a reader, a FIFO would block forever
    refused(folder, "not a regular file", str(folder / "slot-0.lock"))


def test_a_fifo_among_the_slots_held_is_refused_when_counted(tmp_path):
    folder = tmp_path / "slots"
    folder.mkdir(mode=0o700)
    os.mkfifo(folder / "slot-5.lock")
    refused(folder, "not a regular file", str(folder / "slot-5.lock"))
