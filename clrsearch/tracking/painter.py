"""The replicates' confusion matrices drawn in processes of their own, while the study writes its runs.

A study logs one validation confusion matrix per replicate, about 0.07 s of
drawing each (:class:`clrsearch.confusion.ConfusionFigure`), twice the time
it takes to write a replicate's run to the store. Drawn on a thread of the
study's process, the two take turns on the interpreter; a
:class:`ConfusionPainter` hands them to child processes
(:func:`clrsearch.confusion.main`), started before training, which draw side
by side with the study's writes. The jobs wait in the painter, and each goes
to the first child that is free, so that the children end together. They also
save the study's summary figures, which the study builds and hands over
pickled. Each child loads what drawing needs as it starts, while the study
trains; two of them (one on a single CPU) share a study's drawings.

A job goes to a child's stdin from a thread (submitting never waits), one
JSON line, and its answer comes back on its stdout. A child ignores
Ctrl-C, which its parent handles, and ends when its stdin closes, so it ends
with its parent however the parent ends. Should one end first, the study's
process draws what it had not answered, and the later jobs go to the others
(or, once every child is gone, are drawn here); a job a child answers with an
error fails its own Future.
"""
from __future__ import annotations

import collections
import json
import queue
import shutil
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from ..confusion import CONFUSION_DPI, ConfusionFigure, draw_job, figure_job
from ..processes import cpus


class ConfusionPainter:
    """Child processes that write replicates' confusion matrices (:func:`clrsearch.confusion.seed_files`), as a
    context manager.

    ``submit`` returns a Future of the folder written. ``processes``: how many
    children draw, by default two, one when this process may run on one CPU
    only. The jobs wait here and each goes to the first child that is free, so
    that the children end their share of a study's drawings together.
    """

    def __init__(self, processes: int | None = None):
        self.processes = processes or min(2, cpus())
        self._children = []
        self._waiting = collections.deque()  # (Future, job) not given to a child yet
        self._lock = threading.Condition()  # guards _waiting and the handing out of jobs
        self._figure = None  # this process's figure, once a child is gone
        self._figure_lock = threading.Lock()  # one drawing at a time on it

    def __enter__(self):
        self._children = [_DrawingProcess(self._draw_here, self._dispatch) for _ in range(self.processes)]
        return self

    def __exit__(self, *exc):
        with self._lock:
            if exc[0] is None:  # every job is handed out before the children are told to end
                self._lock.wait_for(lambda: not self._waiting)
            else:
                for future, _ in self._waiting:
                    future.cancel()
                self._waiting.clear()
        for child in self._children:
            child.close()
        for child in self._children:
            child.wait(timeout=None if exc[0] is None else 5)
        return False

    def submit(self, folder, y_true, y_pred, class_names, title: str) -> Future:
        """Write a replicate's matrix as PNG and JSON into the new folder ``folder``; a Future of ``folder``."""
        return self._submit({"folder": str(folder), "true": np.asarray(y_true).tolist(),
                             "pred": None if y_pred is None else np.asarray(y_pred).tolist(),
                             "names": [str(name) for name in class_names], "title": title})

    def submit_figure(self, path, figure, dpi: float) -> Future:
        """Save the Matplotlib ``figure`` as the PNG file ``path`` at ``dpi``; a Future of ``path``."""
        return self._submit(figure_job(path, figure, dpi))

    def _submit(self, job) -> Future:
        future = Future()
        with self._lock:
            self._waiting.append((future, job))
        self._dispatch()
        return future

    def _dispatch(self):
        """Hand the waiting jobs to the children that are free; once every child is gone, draw them here."""
        while True:
            with self._lock:
                if not self._waiting:
                    self._lock.notify_all()
                    return
                free = [child for child in self._children if child.free()]
                if not free and not all(child.gone for child in self._children):
                    return  # a child takes the next job when it answers
                future, job = self._waiting.popleft()
                if free:
                    free[0].take(future, job)
                    continue
            self._draw_here(future, job)

    def _draw_here(self, future, job, begun=False):
        """Draw ``job`` in this process and settle ``future``; a job a child may have ``begun`` starts from an
        empty folder."""
        with self._figure_lock:
            if self._figure is None:
                self._figure = ConfusionFigure(CONFUSION_DPI)
            try:
                if begun:
                    shutil.rmtree(job["folder"], ignore_errors=True)
                future.set_result(draw_job(self._figure, job))
            except Exception as error:
                future.set_exception(error)


class _DrawingProcess:
    """One child drawing one job at a time: ``draw_here(future, job, begun)`` settles what it leaves
    unanswered, ``ready()`` is called whenever it is free again (or gone)."""

    def __init__(self, draw_here, ready):
        self._draw_here = draw_here
        self._ready = ready
        self._in_hand = None  # (Future, job) given to the child and not answered yet
        self._lock = threading.Lock()
        self.taken = 0  # jobs given to the child so far; the id of the next
        self.gone = False  # the child has ended
        self.process = subprocess.Popen([sys.executable, "-c", "from clrsearch.confusion import main; main()"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._lines = queue.SimpleQueue()  # jobs for the child, written by a thread: taking one never waits
        threading.Thread(target=self._write_jobs, name="clrsearch-painter-jobs", daemon=True).start()
        threading.Thread(target=self._read_answers, name="clrsearch-painter-answers", daemon=True).start()

    def free(self) -> bool:
        with self._lock:
            return not self.gone and self._in_hand is None

    def take(self, future, job):
        """Give ``job`` to the child (it is free), settling ``future`` when it answers."""
        with self._lock:
            job = {**job, "id": self.taken}
            self.taken += 1
            self._in_hand = future, job
        self._lines.put(json.dumps(job) + "\n")

    def close(self):
        """Close the child's stdin once its job is written: it ends when that is drawn."""
        self._lines.put(None)

    def wait(self, timeout=None):
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _write_jobs(self):
        try:
            while (line := self._lines.get()) is not None:
                self.process.stdin.write(line)
                self.process.stdin.flush()
        except (OSError, ValueError):
            pass  # the child is gone: its stdout ends, and the job it did not answer is drawn elsewhere
        finally:
            try:
                self.process.stdin.close()
            except OSError:
                pass

    def _read_answers(self):
        for line in self.process.stdout:
            answer = json.loads(line)
            with self._lock:
                (future, _), self._in_hand = self._in_hand, None  # one job at a time: the answer is to it
            if "error" in answer:
                future.set_exception(RuntimeError(f"drawing a confusion matrix: {answer['error']}"))
            else:
                future.set_result(Path(answer["folder"]))
            self._ready()
        with self._lock:  # the child ended: the job it had not answered is drawn by the study's process
            self.gone = True
            pending, self._in_hand = self._in_hand, None
        if pending is not None:
            self._draw_here(*pending, begun=True)
        self._ready()
