"""How training processes share the machine's cores: with each other and with other studies.

Each process that trains holds one *slot*: a :func:`clrsearch.files.file_lock`
on ``slot-<i>.lock`` in a folder every clrsearch process of the user sees
(``$CLRSEARCH_CORE_SLOTS``, else ``<tempdir>/clrsearch-cores-<uid>``), which
must be the user's own folder, not a link and not writable by others, with
regular files as slots. The kernel drops a slot when its process ends,
however it ends, so the slots held are the processes training now. A
process uses

    threads = max(1, cores // slots held)

where ``cores`` are the CPUs it may run on (``os.sched_getaffinity``: a
``taskset`` or a container's cpuset sizes it), and checks the count again
every ``RECHECK_SECONDS`` of training: two studies started together each get
half the cores instead of both oversubscribing them, and the one left alone
takes them all back. ``$CLRSEARCH_BLAS_THREADS`` = n fixes the count and
holds no slot. The command reads both variables and passes them to
:class:`CoreShare` (``fixed``, ``folder``).

The trainer cuts a population into ``threads`` slices of members, one thread
each over a single-threaded BLAS (:mod:`clrsearch.nn.threads`); NumPy's BLAS
is given ``threads`` for the rest (a population of one network, the
predictions of a final model). OpenBLAS may round a float32 product's rows
differently when they are cut into other slices, so a study's values are
repeated bit for bit at the same thread count.
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import time
from pathlib import Path

from ..errors import UsageError
from ..files import file_lock
from ..processes import cpus

RECHECK_SECONDS = 1.0  # how often a training process counts the slots held
THREADS_VARIABLE = "CLRSEARCH_BLAS_THREADS"
SLOTS_VARIABLE = "CLRSEARCH_CORE_SLOTS"


def default_slot_folder() -> Path:
    """The folder of the slots when the command names none: ``<tempdir>/clrsearch-cores-<uid>``."""
    return Path(tempfile.gettempdir()) / f"clrsearch-cores-{os.getuid()}"


class CoreShare:
    """This process's share of the cores, as a context manager; training calls :meth:`check_if_due` between
    update steps."""

    def __init__(self, fixed: int | None = None, folder=None, clock=time.monotonic):
        self.fixed = fixed  # BLAS threads fixed by the caller (no slot taken), or None to share
        self.folder = Path(folder) if folder else default_slot_folder()  # where the slots are
        self.clock = clock
        self.threads = None  # what BLAS was last given
        self._slot = None  # (ExitStack holding this process's slot lock, the slot's lock file)
        self._limits = None
        self._next_check = 0.0

    def __enter__(self):
        from threadpoolctl import ThreadpoolController

        self._controller = ThreadpoolController()
        if self.fixed is None:
            self._slot = _take_slot(self.folder)
        self.check()
        return self

    def __exit__(self, *exc):
        if self._limits is not None:
            self._limits.restore_original_limits()
        if self._slot is not None:
            self._slot[0].close()  # releases the lock
        return False

    def share(self) -> int:
        """BLAS threads this process should use now."""
        if self.fixed is not None:
            return self.fixed
        return max(1, cpus() // max(1, _held(self._slot[1])))

    def check(self) -> int:
        """Give BLAS this process's share, if it changed; returns it."""
        threads = self.share()
        if threads != self.threads:
            if self._limits is not None:
                self._limits.restore_original_limits()
            self._limits = self._controller.limit(limits=threads, user_api="blas")
            self.threads = threads
        self._next_check = self.clock() + RECHECK_SECONDS
        return threads

    def check_if_due(self) -> None:
        """:meth:`check`, once ``RECHECK_SECONDS`` have passed since the last check."""
        if self.clock() >= self._next_check:
            self.check()


def _take_slot(folder: Path):
    """Lock the first free ``slot-<i>`` in ``folder``; returns the ExitStack holding the lock (released when it
    closes) and the slot's lock file."""
    _own_folder(folder)
    for i in range(4 * cpus() + 64):
        slot = contextlib.ExitStack()
        if slot.enter_context(file_lock(folder / f"slot-{i}", _refuse, blocking=False)):
            return slot, folder / f"slot-{i}.lock"
        slot.close()
    raise UsageError(f"every core-sharing slot in {folder} is taken; set ${THREADS_VARIABLE} to run anyway")


def _own_folder(folder: Path) -> None:
    """Make the slot folder (mode 0700) when missing; refuse one that is a symbolic link or not a folder, is not
    the user's, or that others may write to (they could plant links or FIFOs among the slots, or take them).

    Slot files themselves are opened without following links and must be regular files
    (:func:`clrsearch.files.file_lock`).
    """
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise _refuse(error) from None
    info = folder.lstat()
    if stat.S_ISLNK(info.st_mode):
        problem = "it is a symbolic link"
    elif not stat.S_ISDIR(info.st_mode):
        problem = "it is not a folder"
    elif info.st_uid != os.getuid():
        problem = f"it belongs to uid {info.st_uid}, not to you (uid {os.getuid()})"
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"others may write to it (mode {stat.S_IMODE(info.st_mode):04o}; chmod go-w it)"
    else:
        return
    raise UsageError(f"cannot use the core-sharing slots in {folder}: {problem}; point ${SLOTS_VARIABLE} at a "
                     f"folder of your own, or set ${THREADS_VARIABLE}")


def _held(own: Path) -> int:
    """Slots held now, this process's own (its lock file ``own``) included."""
    held = 1
    for path in own.parent.glob("slot-*.lock"):
        if path != own:
            with file_lock(path.with_suffix(""), _refuse, blocking=False) as free:
                held += not free
    return held


def _refuse(error):
    return UsageError(f"cannot use the core-sharing slots ({error.strerror}: {error.filename}); "
                      f"point ${SLOTS_VARIABLE} at a writable folder, or set ${THREADS_VARIABLE}")
