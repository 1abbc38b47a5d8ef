"""The replicates' confusion matrices drawn in a process of their own, while the study writes its runs.

A study logs one validation confusion matrix per replicate, about 0.08 s of
drawing each (:class:`clrsearch.confusion.ConfusionFigure`), and about as much
time writing the runs to the store. Drawn on a thread of the study's process,
the two take turns on the interpreter; a :class:`ConfusionPainter` hands them
to a child process (:func:`clrsearch.confusion.main`) started before training,
so that drawing and writing run side by side on two cores. The jobs go to the
child's stdin from a thread (submitting never waits), one JSON line each, and
its answers come back on its stdout. The child ignores Ctrl-C, which its parent
handles, and ends when its stdin closes, so it ends with its parent however
the parent ends. Should it end first, the study's process draws what it had
not answered, and every later matrix, itself; a job the child answers with an
error fails its own Future.
"""
from __future__ import annotations

import json
import queue
import shutil
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from ..confusion import CONFUSION_DPI, ConfusionFigure, draw_job


class ConfusionPainter:
    """A child process that writes replicates' confusion matrices (:func:`clrsearch.confusion.seed_files`), as a
    context manager.

    ``submit`` returns a Future of the folder written.
    """

    def __init__(self):
        self._child = None
        self._jobs = {}  # job id -> Future
        self._lock = threading.Lock()
        self._next_id = 0
        self._gone = False  # the child has ended: jobs are drawn here
        self._figure = None  # this process's figure, once the child is gone
        self._figure_lock = threading.Lock()  # one drawing at a time on it

    def __enter__(self):
        self._child = subprocess.Popen([sys.executable, "-c", "from clrsearch.confusion import main; main()"],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._lines = queue.SimpleQueue()  # jobs for the child, written by a thread: submit never waits
        threading.Thread(target=self._write_jobs, name="clrsearch-painter-jobs", daemon=True).start()
        threading.Thread(target=self._read_answers, name="clrsearch-painter-answers", daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._lines.put(None)  # the writer closes the child's stdin: the child ends once its jobs are done
        try:
            self._child.wait(timeout=None if exc[0] is None else 5)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()
        return False

    def submit(self, folder, y_true, y_pred, class_names, title: str) -> Future:
        job = {"folder": str(folder), "true": np.asarray(y_true).tolist(),
               "pred": None if y_pred is None else np.asarray(y_pred).tolist(),
               "names": [str(name) for name in class_names], "title": title}
        future = Future()
        with self._lock:
            gone = self._gone
            if not gone:
                job["id"] = self._next_id
                self._next_id += 1
                self._jobs[job["id"]] = future, job
        if gone:
            self._draw_here(future, job)
        else:
            self._lines.put(json.dumps(job) + "\n")
        return future

    def _write_jobs(self):
        try:
            while (line := self._lines.get()) is not None:
                self._child.stdin.write(line)
                self._child.stdin.flush()
        except (OSError, ValueError):
            pass  # the child is gone: its stdout ends, and the jobs it did not answer are drawn here
        finally:
            try:
                self._child.stdin.close()
            except OSError:
                pass

    def _draw_here(self, future, job, begun=False):
        """Draw ``job`` in this process and settle ``future``; a job the child may have ``begun`` starts from an
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

    def _read_answers(self):
        for line in self._child.stdout:
            answer = json.loads(line)
            with self._lock:
                future, _ = self._jobs.pop(answer["id"])
            if "error" in answer:
                future.set_exception(RuntimeError(f"drawing a confusion matrix: {answer['error']}"))
            else:
                future.set_result(Path(answer["folder"]))
        with self._lock:  # the child ended: what it had not answered, and what comes next, is drawn here
            self._gone = True
            pending, self._jobs = list(self._jobs.values()), {}
        for future, job in pending:
            self._draw_here(future, job, begun=True)
