"""What runs hold besides scalars: learning curves as metrics, CSV and JSON files (confusion matrices:
:mod:`clrsearch.confusion`)."""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import numpy as np
from mlflow.entities import Metric


ETA_POINTS = 100  # a schedule with more bends: this many regularly spaced eta values per run, plus the turns
FIGURE_DPI = 100  # study figures and the test confusion matrix


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
    eta = np.asarray(history.eta_of(member), dtype=float)  # (T,) of the member's schedule
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
