"""What runs hold besides scalars: learning curves as metrics, confusion matrices, CSV and JSON files."""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import numpy as np
from PIL import Image
from matplotlib.backends.backend_agg import FigureCanvasAgg
from mlflow.entities import Metric

from .. import plots

ETA_POINTS = 100  # a schedule with more bends: this many regularly spaced eta values per run, plus the turns
FIGURE_DPI = 100  # study figures and the test confusion matrix
CONFUSION_DPI = 72  # the per-seed validation confusion matrices: 648 x 576 pixels


def scalar_metrics(values: dict, timestamp: int, step: int = 0) -> list[Metric]:
    """One metric per name at ``step``; values that are None or NaN (no such value) are left out."""
    return [Metric(key, float(value), timestamp, step) for key, value in values.items()
            if value is not None and not math.isnan(value)]


def curve_metrics(history, member: int, timestamp) -> list[Metric]:
    """The learning curves of one member, one metric per name and evaluation point, step = update step.

    ``timestamp`` is one time (ms since the epoch) for all points, or (P,) the
    time each point was reached (:func:`point_timestamps`). Points after the
    member stopped (all its values NaN) are left out; ``epoch`` maps each step
    to epochs.
    """
    metrics = []
    steps = np.asarray(history.steps)  # (P,)
    stamps = np.broadcast_to(np.asarray(timestamp, dtype=np.int64), steps.shape)  # (P,) ms
    values = {name: np.asarray(v, dtype=float)[:, member] for name, v in history.metrics.items()}  # (P,) each
    for p, step in enumerate(steps):
        point = {name: v[p] for name, v in values.items()}
        if all(math.isnan(v) for v in point.values()):
            continue
        point["epoch"] = float(history.epochs[p])
        metrics += [Metric(name, float(v), int(stamps[p]), int(step)) for name, v in point.items()]
    return metrics


def eta_metrics(eta, timestamp, max_points: int = ETA_POINTS) -> list[Metric]:
    """``eta`` at the steps of :func:`eta_steps`: a line through them draws the schedule.

    ``timestamp`` is one time (ms) for all steps, or (T,) the time of each
    update step (:func:`step_timestamps`).
    """
    eta = np.asarray(eta, dtype=float)  # (T,)
    stamps = np.broadcast_to(np.asarray(timestamp, dtype=np.int64), eta.shape)  # (T,) ms
    steps = eta_steps(eta, max_points)
    return [Metric("eta", float(eta[t]), int(stamps[t]), int(t)) for t in steps]


def point_timestamps(steps, eval_times=(), started: float | None = None, ended: float | None = None) -> np.ndarray:
    """(P,) int64 ms since the epoch: when training reached each evaluation point.

    Parameters
    ----------
    steps : (P,) update steps of the evaluation points (``History.steps``)
    eval_times : (P,) float, seconds since the epoch at each point, as recorded while training
    started, ended : float, seconds since the epoch, the training's interval; used, the points placed
        in it in proportion to their step, when ``eval_times`` does not match ``steps``

    Without either, every point gets the present time.
    """
    steps = np.asarray(steps, dtype=float)  # (P,)
    times = np.asarray(eval_times, dtype=float)  # (P,) s
    if times.shape != steps.shape:
        if started is None or ended is None:
            return np.full(steps.shape, int(time.time() * 1000), dtype=np.int64)
        last = steps.max() if steps.size and steps.max() > 0 else 1.0
        times = started + (ended - started) * steps / last
    return np.round(times * 1000).astype(np.int64)


def step_timestamps(steps, point_ms, n_steps: int) -> np.ndarray:
    """(T,) int64 ms of every update step 0 .. T-1, interpolated between the evaluation points' times.

    ``steps`` (P,) and ``point_ms`` (P,) as for :func:`curve_metrics`.
    """
    steps = np.asarray(steps, dtype=float)  # (P,)
    if steps.size == 0:
        return np.full(n_steps, int(time.time() * 1000), dtype=np.int64)
    return np.round(np.interp(np.arange(n_steps), steps, np.asarray(point_ms, dtype=float))).astype(np.int64)


def timed_curves(history, member: int, eval_times=(), started=None, ended=None) -> list:
    """The curves and eta of one member as metrics, each point at the time training reached it.

    ``eval_times`` (P,) s since the epoch, aligned with ``history.steps``;
    ``started``, ``ended`` s since the epoch, used when ``eval_times`` is not
    (see :func:`point_timestamps`).
    """
    eta = np.asarray(history.eta, dtype=float)  # (T,), or (T_max, K) with one schedule per member
    if eta.ndim == 2:
        eta = eta[:, member][~np.isnan(eta[:, member])]
    points = point_timestamps(history.steps, eval_times, started, ended)  # (P,) ms
    return (curve_metrics(history, member, points)
            + eta_metrics(eta, step_timestamps(history.steps, points, eta.size)))


def eta_steps(eta, max_points: int = ETA_POINTS) -> np.ndarray:
    """Sorted update steps at which ``eta`` (T,) is logged.

    A schedule that is a straight line between few vertices (the triangular
    ones: its ends and every step where the slope changes, 2 · cycles + 1 in
    all) is logged at those vertices: the line the charts draw through them
    is the schedule at every step. Any other schedule (exp_range) is logged at
    about ``max_points`` regularly spaced steps and its turning points.
    """
    n = eta.size
    if n <= 2:
        return np.arange(n)
    slope = np.diff(eta)  # (T-1,)
    bends = np.flatnonzero(~np.isclose(slope[1:], slope[:-1], rtol=1e-6, atol=1e-9 * np.abs(slope).max())) + 1
    if bends.size + 2 <= max_points:
        return np.unique(np.concatenate([[0], bends, [n - 1]]))
    if n <= max_points:
        return np.arange(n)
    stride = math.ceil(n / max_points)
    direction = np.sign(slope)  # (T-1,)
    turns = np.flatnonzero(direction[1:] != direction[:-1]) + 1  # steps where eta stops rising or falling
    if turns.size > max_points:
        turns = turns[:0]
    return np.unique(np.concatenate([np.arange(0, n, stride), turns, [n - 1]]))


def confusion_report(y_true, y_pred, class_names) -> dict:
    """Counts (rows true class, columns predicted class), class names and accuracy, as JSON-ready values."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    c = len(class_names)
    counts = np.bincount(c * y_true + y_pred, minlength=c * c).reshape(c, c)  # (C, C)
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
    about 0.08 s at 72 dpi, most of it spent on the C x C cell labels. Should
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
        counts = np.asarray(confusion_report(y_true, y_pred, class_names)["confusion_matrix"])  # (C, C)
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

    def _update(self, counts, title):
        """Set the cells, labels, colour scale and title as plots.confusion_matrix does."""
        ax = self.figure.axes[0]
        image = ax.images[0]
        image.set_data(counts)
        image.set_clim(0, max(counts.max(), 1))
        dark = counts > 0.5 * counts.max()  # white text where the cell is dark
        for text, count, is_dark in zip(ax.texts, counts.ravel(), dark.ravel()):
            text.set_text(str(count))
            text.set_color("white" if is_dark else "black")
        accuracy = 100.0 * np.trace(counts) / max(counts.sum(), 1)
        ax.set_title(f"{title}: accuracy {accuracy:.2f}%")


def write_csv(path, rows: list[dict]) -> Path:
    """Rows as CSV with a header of all keys in first-seen order."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def write_json(path, obj) -> Path:
    """``obj`` as JSON; NaN becomes null."""
    Path(path).write_text(json.dumps(_json_safe(obj), indent=1))
    return Path(path)


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {key: _json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(value) for value in obj]
    return obj
