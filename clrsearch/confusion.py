"""Confusion matrices: the counts, a figure redrawn fast for many of them, and their PNG and JSON files.

A study draws one validation matrix per replicate. ``python -c "from
clrsearch.confusion import main; main()"`` is the process that draws them for
a study (:class:`clrsearch.tracking.painter.ConfusionPainter`): it reads one
JSON job per line on stdin and answers one line per job on stdout. It also
saves the study's summary figures, built by the study and handed over
pickled (:func:`figure_job`, :func:`save_figure_job`). This module imports
neither MLflow nor Optuna, so that process starts in a fraction of a second
and ends as fast.
"""
from __future__ import annotations

import base64
import json
import math
import pickle
import signal
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from matplotlib.backends.backend_agg import FigureCanvasAgg

from . import plots
from .data.cifar10 import CLASS_NAMES

CONFUSION_DPI = 72  # the per-seed validation confusion matrices: 648 x 576 pixels
CONFUSION_PNG = "confusion_val.png"
CONFUSION_JSON = "confusion_val.json"


def confusion_report(y_true, y_pred, class_names) -> dict:
    """Counts (rows true class, columns predicted class), class names and accuracy, as JSON-ready values."""
    counts = plots.confusion_counts(y_true, y_pred, len(class_names))  # (C, C)
    n = int(counts.sum())
    return {
        "class_names": [str(name) for name in class_names],
        "confusion_matrix": counts.tolist(),
        "accuracy": float(np.trace(counts) / n) if n else float("nan"),
        "n_images": n,
        "rows": "true class",
        "columns": "predicted class",
    }


class ConfusionFigure:
    """PNG files of many confusion matrices, drawn fast on one reused figure.

    ``plots.confusion_matrix`` builds and lays out a figure in about 0.25 s, and
    a study logs one matrix per seed. Here the first matrix is drawn by it; the
    layout is then frozen and what does not depend on the counts (tick labels,
    axis labels) is kept as a background image. A later matrix with the same
    class names and as many digits in its largest count (so that the colour-bar
    labels still fit) only updates the cells, their labels, the colour scale and
    the title the way ``plots.confusion_matrix`` sets them, and redraws those:
    about 0.03 s at 72 dpi with its PNG file (the cell labels are one
    collection of outlines, :class:`clrsearch.plots.CountLabels`). Should
    the background hold anything over the cells (a style with a grid or inner
    ticks), the whole figure is redrawn instead.
    """

    def __init__(self, dpi: float = CONFUSION_DPI):
        self.dpi = dpi
        self.figure = None
        self._key = None
        self._canvas = None
        self._background = None  # None: redraw the whole figure
        self._dynamic = []  # artists redrawn over the background, in drawing order

    def draw(self, y_true, y_pred, class_names, title: str) -> np.ndarray:
        """RGBA pixels (H, W, 4) uint8 of the matrix drawn with ``title``."""
        counts = plots.confusion_counts(y_true, y_pred, len(class_names))  # (C, C)
        key = (tuple(class_names), len(str(counts.max())))
        if key != self._key:
            self._start(y_true, y_pred, class_names, title)
            self._key = key
        else:
            self._update(counts, title)
        if self._background is None:
            self._canvas.draw()
        else:
            self._canvas.restore_region(self._background)
            for artist in self._dynamic:
                self.figure.draw_artist(artist)
        return np.asarray(self._canvas.buffer_rgba())

    def save(self, path, y_true, y_pred, class_names, title: str) -> Path:
        """Draw the matrix and write it as a PNG file."""
        pixels = self.draw(y_true, y_pred, class_names, title)
        Image.fromarray(pixels).save(path, format="png", compress_level=1)  # 15% larger, twice as fast as 6
        return Path(path)

    def _start(self, y_true, y_pred, class_names, title):
        self.figure = plots.confusion_matrix(y_true, y_pred, class_names, title=title)
        self.figure.set_dpi(self.dpi)
        self._canvas = FigureCanvasAgg(self.figure)
        self._canvas.draw()  # lays the figure out
        self.figure.set_layout_engine("none")
        ax, colorbar_ax = self.figure.axes
        # The spines are redrawn as the cells, drawn after the background, cover half of them.
        self._dynamic = [*ax.images, *ax.spines.values(), self._labels(), ax.title, colorbar_ax]
        for artist in self._dynamic:
            artist.set_animated(True)
        self._canvas.draw()  # everything but the animated artists
        box = ax.get_window_extent()
        height = self._canvas.get_width_height()[1]
        inside = np.asarray(self._canvas.buffer_rgba())[
            int(height - box.y1) + 2:int(height - box.y0) - 2, int(box.x0) + 2:int(box.x1) - 2]  # (h, w, 4)
        if np.all(inside == inside[:1, :1]):
            self._background = self._canvas.copy_from_bbox(self.figure.bbox)
        else:
            for artist in self._dynamic:
                artist.set_animated(False)
            self._background = None

    def _labels(self) -> plots.CountLabels:
        (labels,) = [artist for artist in self.figure.axes[0].collections if isinstance(artist, plots.CountLabels)]
        return labels

    def _update(self, counts, title):
        """Set the cells, labels, colour scale and title as plots.confusion_matrix does."""
        ax = self.figure.axes[0]
        image = ax.images[0]
        image.set_data(counts)
        image.set_clim(0, max(counts.max(), 1))
        self._labels().set_counts(counts)
        accuracy = 100.0 * np.trace(counts) / max(counts.sum(), 1)
        ax.set_title(f"{title}: accuracy {accuracy:.2f}%")


def seed_files(figure: ConfusionFigure, folder, y_true, y_pred, class_names, title: str) -> Path:
    """Write a replicate's validation confusion matrix as PNG and JSON into the new folder ``folder``."""
    folder = Path(folder)
    folder.mkdir()
    if y_pred is not None:
        figure.save(folder / CONFUSION_PNG, y_true, y_pred, class_names, title=title)
        report = confusion_report(y_true, y_pred, class_names)
        if math.isnan(report["accuracy"]):
            report["accuracy"] = None  # strict JSON
        (folder / CONFUSION_JSON).write_text(json.dumps(report, indent=1))
    return folder


def draw_job(figure: ConfusionFigure, job: dict) -> Path:
    """Do one job: :func:`seed_files` of ``folder``, ``true`` and ``pred`` (lists of labels, ``pred`` may be
    None), ``names``, ``title``; or, for a job of :func:`figure_job`, :func:`save_figure_job`."""
    if "figure" in job:
        return save_figure_job(job)
    y_pred = None if job["pred"] is None else np.asarray(job["pred"])
    return seed_files(figure, job["folder"], np.asarray(job["true"]), y_pred, tuple(job["names"]), job["title"])


def figure_job(path, fig, dpi: float) -> dict:
    """A job saving the Matplotlib figure ``fig`` as the PNG file ``path`` at ``dpi``: the figure pickled
    (a few dozen kB; it is drawn the same in a process that has not imported what built it)."""
    return {"folder": str(path), "figure": base64.b64encode(pickle.dumps(fig)).decode("ascii"), "dpi": dpi}


def save_figure_job(job: dict) -> Path:
    """Save the figure of a :func:`figure_job`; returns the file's path."""
    fig = pickle.loads(base64.b64decode(job["figure"]))  # a job of the study that started this process
    fig.savefig(job["folder"], dpi=job["dpi"])
    return Path(job["folder"])


def warm_up(figure: ConfusionFigure) -> None:
    """Draw a matrix of made-up labels on ``figure``, unsaved: the first drawing of a process loads the fonts
    and the modules drawing needs and lays the figure out (about 0.6 s); a drawing process does it while the
    study trains, not when the first real matrix is waited for. The made-up matrix has the CIFAR-10 class
    names and three-digit counts, like the validation matrices of a study, which then only update the cells."""
    labels = np.repeat(np.arange(len(CLASS_NAMES)), 100)  # (1000,): 100 images of each class
    figure.draw(labels, labels, CLASS_NAMES, "warm-up")


def main():
    """The drawing process: one JSON job per line of stdin, one JSON answer per line of stdout
    (``{"id", "folder"}`` or ``{"id", "error"}``), until stdin closes. Ctrl-C is its parent's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    figure = ConfusionFigure(CONFUSION_DPI)
    warm_up(figure)
    for line in sys.stdin:
        job = json.loads(line)
        try:
            answer = {"id": job["id"], "folder": str(draw_job(figure, job))}
        except Exception as error:
            answer = {"id": job["id"], "error": f"{type(error).__name__}: {error}"}
        print(json.dumps(answer), flush=True)
