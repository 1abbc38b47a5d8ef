"""Confusion matrices: the counts as a report, and a replicate's PNG and JSON files drawn fast on one
reused figure."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image
from matplotlib.backends.backend_agg import FigureCanvasAgg

from . import plots

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

    ``plots.confusion_matrix`` builds and lays out the first matrix; its
    layout is then frozen and what does not depend on the counts (tick
    labels, axis labels) kept as a background image. A later matrix with the
    same class names and as many digits in its largest count (so that the
    colour-bar labels still fit) is written into the figure
    (``plots.set_confusion_counts``) and only the cells, their labels, the
    colour scale and the title are drawn again, over the background. Should
    the background hold anything over the cells (a style with a grid or
    inner ticks), the whole figure is redrawn instead. One thread at a time
    may draw with it.
    """

    def __init__(self, dpi: float = CONFUSION_DPI):
        self.dpi = dpi
        self.figure = None
        self._key = None  # (class names, digits of the largest count) of the figure's layout
        self._canvas = None
        self._background = None  # None: redraw the whole figure
        self._dynamic = []  # artists drawn over the background, in drawing order

    def draw(self, y_true, y_pred, class_names, title: str) -> np.ndarray:
        """RGBA pixels (H, W, 4) uint8 of the matrix drawn with ``title``."""
        counts = plots.confusion_counts(y_true, y_pred, len(class_names))  # (C, C)
        key = (tuple(class_names), len(str(counts.max())))
        if key != self._key:
            self._start(y_true, y_pred, class_names, title)
            self._key = key
        else:
            plots.set_confusion_counts(self.figure, counts, title)
        if self._background is None:
            self._canvas.draw()
        else:
            self._canvas.restore_region(self._background)
            for artist in self._dynamic:
                self.figure.draw_artist(artist)
        return np.asarray(self._canvas.buffer_rgba())

    def save(self, path, y_true, y_pred, class_names, title: str) -> Path:
        """Draw the matrix and write it as the PNG file ``path``."""
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
        self._dynamic = [*ax.images, *ax.spines.values(), *ax.texts, ax.title, colorbar_ax]
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

