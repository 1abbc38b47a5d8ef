"""What runs hold besides scalars (clrsearch.tracking.artifacts): eta thinned to its turning points,
confusion reports counted by hand, and the reused confusion figure drawing what plots.confusion_matrix draws."""

import matplotlib
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from clrsearch import confusion, plots
from clrsearch.nn.schedule import cyclic_lr
from clrsearch.tracking import artifacts


@pytest.mark.parametrize("mode", ["triangular", "triangular2"])
def test_a_triangular_eta_is_logged_at_its_vertices_and_a_line_through_them_is_every_step(mode):
    eta = cyclic_lr(np.arange(3600), 1e-5, 1e-1, 900, mode, 1.0)  # 2 cycles of the coarse study
    steps = artifacts.eta_steps(eta)
    assert steps.tolist() == [0, 900, 1800, 2700, 3599]
    metrics = artifacts.eta_metrics(eta, timestamp=0)
    assert [m.step for m in metrics] == steps.tolist()
    assert [m.value for m in metrics] == eta[steps].tolist()
    drawn = np.interp(np.arange(3600), [m.step for m in metrics], [m.value for m in metrics])
    np.testing.assert_allclose(drawn, eta, rtol=1e-9, atol=1e-15)


def test_a_curved_eta_keeps_every_turning_point_and_at_most_about_eta_points():
    eta = cyclic_lr(np.arange(3600), 1e-5, 1e-1, 900, "exp_range", 0.9995)
    steps = artifacts.eta_steps(eta)
    assert artifacts.ETA_POINTS <= len(steps) <= artifacts.ETA_POINTS + 5
    assert {0, 900, 1800, 2700, 3599} <= set(steps.tolist())
    assert np.all(np.diff(steps) > 0)
    short = np.cos(np.linspace(0, 1, 50))
    assert artifacts.eta_steps(short).tolist() == list(range(50))


def matrices(n=3):
    """``n`` predictions of 2000 labels, more accurate each time, and the labels."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 2000)
    return y, [np.where(rng.random(2000) < 0.4 + 0.2 * k, y, rng.integers(0, 10, 2000)) for k in range(n)]


def full_redraw(figure):
    """Pixels of the reused figure drawn whole, as a new figure would be."""
    for artist in figure.figure.get_children():
        artist.set_animated(False)
    for artist in figure.figure.axes[0].get_children():
        artist.set_animated(False)
    canvas = FigureCanvasAgg(figure.figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())


def test_reused_confusion_figure_draws_what_plots_draws():
    names = tuple("abcdefghij")
    y, predictions = matrices()
    figure = confusion.ConfusionFigure()
    for k, pred in enumerate(predictions):
        pixels = figure.draw(y, pred, names, title=f"validation, seed {k}").copy()
    assert pixels.shape == (576, 648, 4)  # 9 x 8 inches at 72 dpi
    fresh = plots.confusion_matrix(y, pred, names, title="validation, seed 2")
    ax, fresh_ax = figure.figure.axes[0], fresh.axes[0]
    (labels,), (fresh_labels,) = ax.collections, fresh_ax.collections
    assert labels.labels == fresh_labels.labels == [str(count) for count in fresh_ax.images[0].get_array().ravel()]
    np.testing.assert_array_equal(labels.get_facecolor(), fresh_labels.get_facecolor())
    assert ax.get_title() == fresh_ax.get_title()
    np.testing.assert_array_equal(ax.images[0].get_array(), fresh_ax.images[0].get_array())
    assert ax.images[0].get_clim() == fresh_ax.images[0].get_clim()
    assert figure.figure.axes[1].get_ylim() == fresh.axes[1].get_ylim()  # the colour bar follows
    # Composed over the kept background, the pixels are those of the whole figure drawn anew
    # (but for the odd anti-aliased pixel where the left spine meets the cells).
    assert np.mean(np.any(full_redraw(figure) != pixels, axis=-1)) < 1e-4


def test_a_style_drawing_over_the_cells_makes_the_figure_redraw_whole():
    y, predictions = matrices()
    with matplotlib.rc_context({"axes.grid": True, "xtick.direction": "in"}):
        figure = confusion.ConfusionFigure()
        for k, pred in enumerate(predictions):
            pixels = figure.draw(y, pred, tuple("abcdefghij"), title=f"seed {k}").copy()
        np.testing.assert_array_equal(full_redraw(figure), pixels)


def test_confusion_report_counts_true_rows_against_predicted_columns():
    report = confusion.confusion_report([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], ("a", "b", "c"))
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["class_names"] == ["a", "b", "c"] and report["n_images"] == 6
