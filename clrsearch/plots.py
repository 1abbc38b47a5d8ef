"""Figures of the study, each returned as a ``matplotlib.figure.Figure``.

Figures are built with ``matplotlib.figure.Figure`` directly, so no pyplot state
and no GUI backend are involved; saving or logging them is the caller's job
(``fig.savefig(path)``). Accuracies come in as fractions in [0, 1] and are drawn
in percent.

- ``learning_curves``: cost, loss and accuracy on the training and validation sets;
- ``eta_curve``: the learning rate per update step;
- ``confusion_matrix``: 10x10 counts with the accuracy in the title (``set_confusion_counts`` writes
  other counts into it);
- ``lambda_search``: lambda against mean validation accuracy with ±3σ error bars;
- ``lambda_search_series``: the same, one line per schedule of a fine grid, the best set ringed and each
  point's replicate count written beside it;
- ``class_distribution``: class counts per split or batch;
- ``lr_range``: the LR range test (Smith 2015) with the chosen eta_min, eta_max.
"""

import numpy as np
from matplotlib.figure import Figure

TRAIN_COLOR = "tab:blue"
VAL_COLOR = "tab:orange"
BEST_COLOR = "tab:red"
TIED_COLOR = "tab:green"
WORSE_COLOR = "tab:gray"

_X_LABELS = {"step": "update step", "epoch": "epoch"}
_PANELS = (  # (metric suffix, panel title, y label, scale to display units)
    ("cost", "cost J = L + λ‖W‖²", "cost", 1.0),
    ("loss", "loss L (cross-entropy)", "loss", 1.0),
    ("accuracy", "accuracy", "accuracy (%)", 100.0),
)


def learning_curves(history, member: int = 0, x: str = "step", title: str | None = None) -> Figure:
    """Cost, loss and accuracy on the training and validation sets, side by side.

    Parameters
    ----------
    history : object with attributes
        ``steps`` (P,) int, update step of each evaluation point;
        ``epochs`` (P,) float, the same points in epochs;
        ``metrics`` dict of (P, K) arrays under ``"train_cost"``, ``"train_loss"``,
        ``"train_accuracy"``, ``"val_cost"``, ``"val_loss"``, ``"val_accuracy"``;
        NaN marks points after a member stopped and is left as a gap.
    member : int, column of the population to draw
    x : ``"step"`` or ``"epoch"``, the horizontal axis
    title : str, optional figure title

    Returns
    -------
    Figure with three axes: cost, loss, accuracy (%).
    """
    if x not in _X_LABELS:
        raise ValueError(f"x must be 'step' or 'epoch', got {x!r}")
    xs = np.asarray(history.steps if x == "step" else history.epochs)  # (P,)
    fig = Figure(figsize=(15.0, 4.6), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, (name, panel_title, y_label, scale) in zip(axes, _PANELS):
        for split, label, color in (("train", "training", TRAIN_COLOR), ("val", "validation", VAL_COLOR)):
            ys = np.asarray(history.metrics[f"{split}_{name}"], dtype=float)[:, member] * scale  # (P,)
            ax.plot(xs, ys, color=color, label=label, marker="." if xs.size <= 40 else None)
        if xs.size > 1:  # the whole run, so that a member that stopped early shows as a gap
            pad = 0.02 * (xs.max() - xs.min())
            ax.set_xlim(xs.min() - pad, xs.max() + pad)
        ax.set_title(panel_title)
        ax.set_xlabel(_X_LABELS[x])
        ax.set_ylabel(y_label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title if title is not None else "learning curves")
    return fig


def eta_curve(eta, title: str | None = None) -> Figure:
    """Learning rate of every update step.

    Parameters
    ----------
    eta : (T,) float, eta_t for t = 0 .. T-1
    title : str, optional

    Returns
    -------
    Figure with one axes.
    """
    eta = np.asarray(eta, dtype=float)  # (T,)
    fig = Figure(figsize=(7.0, 4.0), layout="constrained")
    ax = fig.subplots()
    ax.plot(np.arange(eta.size), eta, color=TRAIN_COLOR)
    ax.set_xlabel("update step")
    ax.set_ylabel("learning rate η")
    ax.set_xlim(0, max(eta.size - 1, 1))
    ax.set_ylim(bottom=0)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(True, alpha=0.3)
    ax.set_title(title if title is not None else "cyclical learning rate")
    return fig


def confusion_counts(y_true, y_pred, n_classes: int) -> np.ndarray:
    """(C, C) int64 counts of images of true class i (row) predicted as class j (column), for labels 0 .. C-1."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    return np.bincount(n_classes * y_true + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def confusion_matrix(y_true, y_pred, class_names, title: str | None = None) -> Figure:
    """Heat map of counts: true class (rows) against predicted class (columns).

    Parameters
    ----------
    y_true, y_pred : (N,) int labels in 0 .. C-1
    class_names : sequence of C str
    title : str, optional; the accuracy in percent is appended to it

    Returns
    -------
    Figure with two axes: the matrix, each cell's count written in it, and its colour bar.
    """
    n_classes = len(class_names)
    counts = confusion_counts(y_true, y_pred, n_classes)  # (C, C)
    size = max(6.4, 0.62 * n_classes + 1.8)
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, label="images", shrink=0.85)
    for i, j in np.ndindex(n_classes, n_classes):
        ax.text(j, i, "", ha="center", va="center", fontsize=9)
    ticks = np.arange(n_classes)
    ax.set_xticks(ticks, labels=class_names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(ticks, labels=class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    set_confusion_counts(fig, counts, title)
    return fig


def set_confusion_counts(fig: Figure, counts, title: str | None = None) -> None:
    """Write ``counts`` (C, C) into a figure of :func:`confusion_matrix`: the cells, their labels (white on
    the cells darker than half the largest count), the colour scale and the title with the accuracy."""
    counts = np.asarray(counts)
    ax = fig.axes[0]
    image = ax.images[0]
    image.set_data(counts)
    image.set_clim(0, max(counts.max(), 1))
    for text, count in zip(ax.texts, counts.ravel()):
        text.set_text(str(count))
        text.set_color("white" if count > 0.5 * counts.max() else "black")
    accuracy = 100.0 * np.trace(counts) / max(counts.sum(), 1)
    prefix = "test" if title is None else f"{title}:"
    ax.set_title(f"{prefix} accuracy {accuracy:.2f}%")


def lambda_search(lams, means, stds, log_x: bool = True, best_lam=None, title: str | None = None,
                  tied=None) -> Figure:
    """Mean validation accuracy of each lambda with ±3σ error bars; points tied with the best ringed.

    Parameters
    ----------
    lams : (L,) float >= 0, L2 strengths, in any order
    means, stds : (L,) float, mean and standard deviation of the final validation
        accuracy over the repeated runs of each lambda, as fractions
    log_x : bool, log lambda axis; falls back to linear when a lambda is <= 0
    best_lam : float, optional, the lambda to highlight; default the highest mean
    title : str, optional
    tied : (L,) bool, optional, the points a paired test could not tell from the best

    Returns
    -------
    Figure with one axes.
    """
    lams, means, stds = (np.asarray(a, dtype=float) for a in (lams, means, stds))
    order = np.argsort(lams)
    lams, means, stds = lams[order], 100.0 * means[order], 100.0 * stds[order]  # (L,), percent
    tied = np.zeros(lams.size, bool) if tied is None else np.asarray(tied, bool)[order]  # (L,)
    best = int(np.argmax(means)) if best_lam is None else int(np.argmin(np.abs(lams - best_lam)))

    fig = Figure(figsize=(7.0, 4.8), layout="constrained")
    ax = fig.subplots()
    ax.errorbar(lams, means, yerr=3.0 * stds, fmt="o-", color=TRAIN_COLOR, ecolor="tab:gray",
                capsize=4, markersize=5, linewidth=1.2, label="mean ± 3σ")
    ax.plot(lams[best], means[best], marker="*", markersize=16, color=BEST_COLOR, linestyle="none",
            label=f"best λ = {lams[best]:.3g} ({means[best]:.2f}%)", zorder=3)
    if tied.any():
        ax.plot(lams[tied], means[tied], marker="o", markersize=11, markerfacecolor="none", markeredgewidth=1.6,
                color=TIED_COLOR, linestyle="none", label="tied with the best (paired test)", zorder=3)
    if log_x and np.all(lams > 0):
        ax.set_xscale("log")
    ax.set_xlabel("λ (L2 strength)")
    ax.set_ylabel("mean validation accuracy (%)")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)
    ax.legend(loc="best")
    ax.set_title(title if title is not None else "λ search: mean validation accuracy ± 3σ")
    return fig


def lambda_search_series(series, winner=None, title: str | None = None) -> Figure:
    """Mean validation accuracy ± 3σ against λ (linear axis), one line per schedule of a grid.

    Parameters
    ----------
    series : list of (label, lams (L,), means (L,), stds (L,), n (L,) int, in_best_set (L,) bool), one per
        schedule; accuracies as fractions
    winner : (label, lam), optional, the point to mark with a star
    title : str, optional

    Returns
    -------
    Figure with one axes: each point's replicate count beside it, the best set's points ringed.
    """
    fig = Figure(figsize=(7.5, 5.0), layout="constrained")
    ax = fig.subplots()
    ringed = False
    for label, lams, means, stds, n, best_set in series:
        lams, means, stds = (np.asarray(a, dtype=float) for a in (lams, means, stds))
        order = np.argsort(lams)
        lams, means, stds = lams[order], 100.0 * means[order], 100.0 * stds[order]  # (L,), percent
        n, best_set = np.asarray(n)[order], np.asarray(best_set, bool)[order]  # (L,)
        line = ax.errorbar(lams, means, yerr=3.0 * stds, fmt="o-", capsize=3, markersize=5, linewidth=1.2,
                           label=f"{label}: mean ± 3σ")
        for x, y, count in zip(lams, means, n):
            ax.annotate(f"{count}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7,
                        color=line[0].get_color())
        if best_set.any():
            ax.plot(lams[best_set], means[best_set], marker="o", markersize=11, markerfacecolor="none",
                    markeredgewidth=1.6, color=TIED_COLOR, linestyle="none", zorder=3,
                    label=None if ringed else "best set (MCB, 95%)")
            ringed = True
        if winner is not None and winner[0] == label:
            i = int(np.argmin(np.abs(lams - winner[1])))
            ax.plot(lams[i], means[i], marker="*", markersize=16, color=BEST_COLOR, linestyle="none", zorder=4,
                    label=f"chosen: {label}, λ = {lams[i]:.3g} ({means[i]:.2f}%)")
    ax.set_xlabel("λ (L2 strength); the numbers: replicates trained")
    ax.set_ylabel("mean validation accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title if title is not None else "fine search: mean validation accuracy ± 3σ")
    return fig


def paired_differences(labels, deltas, lows, highs, verdicts, title: str | None = None) -> Figure:
    """Each trial's mean paired difference to the best with its confidence interval, tied ones marked.

    Parameters
    ----------
    labels : (L,) str, one per trial, e.g. its settings
    deltas, lows, highs : (L,) float, mean difference and interval bounds, as fractions (NaN: untested)
    verdicts : (L,) str, "best", "tied" or "worse"
    title : str, optional
    """
    deltas, lows, highs = (100.0 * np.asarray(a, dtype=float) for a in (deltas, lows, highs))  # (L,) points
    y = np.arange(len(labels))
    colors = {"best": BEST_COLOR, "tied": TIED_COLOR, "worse": WORSE_COLOR}
    fig = Figure(figsize=(7.0, 1.2 + 0.35 * max(len(labels), 3)), layout="constrained")
    ax = fig.subplots()
    ax.axvline(0.0, color=BEST_COLOR, linewidth=1.0, alpha=0.6)
    for verdict, color in colors.items():
        mask = np.asarray(verdicts) == verdict
        if not mask.any():
            continue
        finite = mask & np.isfinite(lows)
        ax.errorbar(deltas[finite], y[finite], xerr=[deltas[finite] - lows[finite], highs[finite] - deltas[finite]],
                    fmt="o", color=color, capsize=3, markersize=5, linestyle="none", label=verdict)
        ax.plot(deltas[mask & ~finite], y[mask & ~finite], "o", color=color,
                label=None if finite.any() else verdict)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("paired difference to the best (validation accuracy, points), 95% interval")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(loc="best")
    ax.set_title(title if title is not None else "paired comparison with the best trial")
    return fig


def race(labels, rounds, means, left, title: str | None = None) -> Figure:
    """Mean validation accuracy of each point after every round of a race, until it left.

    Parameters
    ----------
    labels : (L,) str, one per point
    rounds : list of L lists of ints, the rounds a point took part in
    means : list of L lists of floats, its mean accuracy (fraction) over its replicates after each of them
    left : (L,) int or None, the round after which a point left the race (None: in it to the end)
    title : str, optional
    """
    fig = Figure(figsize=(7.0, 4.8), layout="constrained")
    ax = fig.subplots()
    for label, xs, ys, out in zip(labels, rounds, means, left):
        color = WORSE_COLOR if out is not None else TIED_COLOR
        ax.plot(xs, 100.0 * np.asarray(ys, dtype=float), "o-", linewidth=1.2, markersize=4, label=label)
        if out is not None:
            ax.plot(xs[-1], 100.0 * ys[-1], marker="x", markersize=9, color=color, linestyle="none")
    ax.set_xlabel("round (x: left the race after it)")
    ax.set_ylabel("mean validation accuracy over its replicates (%)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small", ncols=2)
    ax.set_title(title if title is not None else "race: who was eliminated when")
    return fig


def race_looks(looks, labels, intervals, delta=None, title: str | None = None) -> Figure:
    """The points alive at each look of a race with their MCB intervals for mu_i - max_{j != i} mu_j.

    Parameters
    ----------
    looks : (T,) int, the replicates each look had, e.g. [3, 6, 9]
    labels : (L,) str, one per point
    intervals : list of T dicts, label -> (low, high) as fractions, for the points alive at that look
    delta : float, optional, the indifference zone (fraction), drawn as a line at -delta
    title : str, optional
    """
    fig = Figure(figsize=(7.0, 4.8), layout="constrained")
    ax = fig.subplots()
    ax.axhline(0.0, color=BEST_COLOR, linewidth=1.0, alpha=0.6)
    if delta is not None:
        ax.axhline(-100.0 * delta, color=WORSE_COLOR, linewidth=1.0, linestyle="--", label=f"-δ = {-100 * delta:g}")
    offsets = np.linspace(-0.3, 0.3, max(len(labels), 1)) if len(labels) > 1 else [0.0]
    colors = [f"C{i % 10}" for i in range(len(labels))]
    for i, label in enumerate(labels):
        xs = [x for x, look in enumerate(looks) if label in intervals[x]]
        for x in xs:
            low, high = (100.0 * np.clip(v, -1.0, 1.0) for v in intervals[x][label])
            ax.plot([x + offsets[i]] * 2, [low, high], "-", color=colors[i], linewidth=2.0,
                    label=label if x == xs[0] else None)
    ax.set_xticks(range(len(looks)), [str(n) for n in looks])
    ax.set_xlabel("look: replicates per point")
    ax.set_ylabel("MCB interval, μ_i − max other (accuracy points)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="best", fontsize="small", ncols=2)
    ax.set_title(title if title is not None else "race: points alive per look, MCB intervals")
    return fig


def class_distribution(labels_by_split: dict[str, np.ndarray], class_names) -> Figure:
    """Grouped bars: how many images of each class every split or batch holds.

    Parameters
    ----------
    labels_by_split : dict of name -> (N_s,) int labels in 0 .. C-1
    class_names : sequence of C str

    Returns
    -------
    Figure with one axes.
    """
    n_classes, n_splits = len(class_names), len(labels_by_split)
    width = 0.84 / max(n_splits, 1)
    fig = Figure(figsize=(min(14.0, max(9.0, 0.25 * n_classes * n_splits)), 4.8), layout="constrained")
    ax = fig.subplots()
    centres = np.arange(n_classes)
    top = 0
    for s, (name, labels) in enumerate(labels_by_split.items()):
        counts = np.bincount(np.asarray(labels, dtype=int), minlength=n_classes)[:n_classes]  # (C,)
        top = max(top, counts.max(initial=0))
        ax.bar(centres + (s - (n_splits - 1) / 2) * width, counts, width=width, label=f"{name} (n={counts.sum()})")
    ax.set_xticks(centres, labels=class_names, rotation=30, ha="right", rotation_mode="anchor")
    ax.set_xlabel("class")
    ax.set_ylabel("images")
    ax.set_ylim(0, 1.25 * max(top, 1))  # room for the legend above the bars
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper center", ncols=min(n_splits, 4), fontsize=9)
    ax.set_title("class distribution per split")
    return fig


def lr_range(etas, accuracies, losses=None, suggestion=None) -> Figure:
    """LR range test: validation accuracy (and loss) along the etas tried.

    The x axis is the one on which the points are evenly spaced, so that each
    gets its share of the width and the low end stays readable: linear for
    the points of a linear ramp (``clrsearch.nn.lrrange``), logarithmic for
    log-spaced etas spanning two decades or more.

    Parameters
    ----------
    etas : (E,) float > 0, learning rates tried
    accuracies : (E,) float, validation accuracy as a fraction
    losses : (E,) float, optional, validation loss, drawn on a second y axis
    suggestion : (eta_min, eta_max), optional, the chosen bounds: shaded, and each marked by a dotted
        line labelled with its value

    Returns
    -------
    Figure with one axes, or two when ``losses`` is given.
    """
    etas = np.asarray(etas, dtype=float)
    order = np.argsort(etas)
    etas, accuracies = etas[order], 100.0 * np.asarray(accuracies, dtype=float)[order]  # (E,)
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.subplots()
    handles = ax.plot(etas, accuracies, "o-", color=TRAIN_COLOR, markersize=4, label="validation accuracy")
    if _log_spaced(etas):
        ax.set_xscale("log")
    else:
        ax.set_xlim(0, etas.max() * 1.02)
    ax.set_xlabel("learning rate η")
    ax.set_ylabel("validation accuracy (%)", color=TRAIN_COLOR)
    ax.grid(True, which="major", alpha=0.3)
    if losses is not None:
        loss_ax = ax.twinx()
        handles += loss_ax.plot(etas, np.asarray(losses, dtype=float)[order], "s--", color=VAL_COLOR,
                                markersize=3, label="validation loss")
        loss_ax.set_ylabel("validation loss", color=VAL_COLOR)
    if suggestion is not None:
        eta_min, eta_max = suggestion
        handles.append(ax.axvspan(eta_min, eta_max, color="tab:green", alpha=0.15,
                                  label=f"η range [{eta_min:.2g}, {eta_max:.2g}]"))
        for name, bound, side in (("η_min", eta_min, "right"), ("η_max", eta_max, "left")):
            ax.axvline(bound, color="tab:green", linestyle=":", linewidth=1.2)
            # Labels inside the range, at the top: η_min to the right of its line, η_max to the left of its own.
            ax.annotate(f"{name} {bound:.2g}", (bound, 1), xycoords=("data", "axes fraction"),
                        xytext=(3 if side == "right" else -3, -4), textcoords="offset points",
                        ha="left" if side == "right" else "right", va="top", color="tab:green", fontsize=9)
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))  # clear of both y axes
    ax.set_title("LR range test")
    return fig


def _log_spaced(values) -> bool:
    """True when sorted positive ``values`` span two decades or more and their ratios vary less than their
    differences: points evenly spaced on a log axis rather than a linear one."""
    if values.size < 3 or np.any(values <= 0) or values.max() < 100 * values.min():
        return False
    steps, ratios = np.diff(values), np.diff(np.log(values))
    return np.std(ratios) / np.mean(ratios) < np.std(steps) / np.mean(steps)


def lr_range_result(result) -> Figure:
    """`lr_range` of an LR range test's result (``clrsearch.nn.lrrange.RangeResult``), its suggestion marked."""
    return lr_range(result.etas, result.accuracy, result.loss, suggestion=(result.eta_min, result.eta_max))


def optuna_figures(study):
    """Optuna's optimisation-history and slice plots of ``study``, by name.

    Optuna draws them with pyplot; they are detached from pyplot here so that
    the caller owns them like every other figure of this module.
    """
    import warnings

    import matplotlib
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as optuna_plots

    figures = {}
    # Optuna switches pyplot's global style; rc_context puts it back for the figures drawn after these.
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
        for name, draw in (("optuna_history", optuna_plots.plot_optimization_history),
                           ("optuna_slice", optuna_plots.plot_slice)):
            axes = draw(study)
            fig = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
            plt.close(fig)
            figures[name] = fig
    return figures
