"""The replicates' confusion matrices drawn in processes of their own, while the study writes its runs.

A study logs one validation confusion matrix per replicate, about 0.07 s of
drawing each (:class:`clrsearch.confusion.ConfusionFigure`), twice the time
it takes to write a replicate's run to the store. Drawn on a thread of the
study's process, the two take turns on the interpreter; a
:class:`ConfusionPainter` hands them to child processes
(:func:`clrsearch.confusion.main`), started before training, which draw side
by side with the study's writes, one matrix after the other each, the jobs
dealt to them in turn; they also save the study's summary figures, which the
study builds and hands over pickled. Each child loads what drawing needs as
it starts, while the study trains; two of them (one on a single CPU) keep up
with the writes of a coarse study's 30 replicates.

The jobs go to a child's stdin from a thread (submitting never waits), one
JSON line each, and its answers come back on its stdout. A child ignores
Ctrl-C, which its parent handles, and ends when its stdin closes, so it ends
with its parent however the parent ends. Should one end first, the study's
process draws what it had not answered, and the later jobs go to the others
(or, once every child is gone, are drawn here); a job a child answers with an
error fails its own Future.
"""
from __future__ import annotations

import itertools
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
    children draw, by default two, one when this process may run on one CPU only.
    """

    def __init__(self, processes: int | None = None):
        self.processes = processes or min(2, cpus())
        self._children = []
        self._turn = itertools.count()
        self._figure = None  # this process's figure, once a child is gone
        self._figure_lock = threading.Lock()  # one drawing at a time on it

    def __enter__(self):
        self._children = [_DrawingProcess(self._draw_here) for _ in range(self.processes)]
        return self

    def __exit__(self, *exc):
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
        first = next(self._turn)
        for k in range(len(self._children)):  # in turn, skipping the children that are gone
            if self._children[(first + k) % len(self._children)].take(future, job):
                return future
        self._draw_here(future, job)
        return future

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
    """One child drawing jobs in order; ``draw_here(future, job, begun)`` settles what it leaves unanswered."""

    def __init__(self, draw_here):
        self._draw_here = draw_here
        self._jobs = {}  # job id -> (Future, job)
        self._lock = threading.Lock()
        self._next_id = 0
        self._gone = False  # the child has ended
        self.process = subprocess.Popen([sys.executable, "-c", "from clrsearch.confusion import main; main()"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._lines = queue.SimpleQueue()  # jobs for the child, written by a thread: submitting never waits
        threading.Thread(target=self._write_jobs, name="clrsearch-painter-jobs", daemon=True).start()
        threading.Thread(target=self._read_answers, name="clrsearch-painter-answers", daemon=True).start()

    def take(self, future, job) -> bool:
        """Queue ``job`` for the child, settling ``future`` when it answers; False once the child is gone."""
        with self._lock:
            if self._gone:
                return False
            job = {**job, "id": self._next_id}
            self._next_id += 1
            self._jobs[job["id"]] = future, job
        self._lines.put(json.dumps(job) + "\n")
        return True

    def close(self):
        """Close the child's stdin once its jobs are written: it ends when they are drawn."""
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
            pass  # the child is gone: its stdout ends, and the jobs it did not answer are drawn elsewhere
        finally:
            try:
                self.process.stdin.close()
            except OSError:
                pass

    def _read_answers(self):
        for line in self.process.stdout:
            answer = json.loads(line)
            with self._lock:
                future, _ = self._jobs.pop(answer["id"])
            if "error" in answer:
                future.set_exception(RuntimeError(f"drawing a confusion matrix: {answer['error']}"))
            else:
                future.set_result(Path(answer["folder"]))
        with self._lock:  # the child ended: what it had not answered is drawn by the study's process
            self._gone = True
            pending, self._jobs = list(self._jobs.values()), {}
        for future, job in pending:
            self._draw_here(future, job, begun=True)
