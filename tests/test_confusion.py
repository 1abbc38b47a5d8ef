"""Confusion matrices (clrsearch.confusion): reports and the labels of a reused figure checked against hand
counts, and the reused figure's pixels against the whole figure drawn anew."""

import matplotlib
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from clrsearch import confusion

NAMES = tuple("abcdefghij")


def matrices(n=3):
    """``n`` predictions of 2000 labels, more accurate each time, and the labels."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 2000)
    return y, [np.where(rng.random(2000) < 0.4 + 0.2 * k, y, rng.integers(0, 10, 2000)) for k in range(n)]


def hand_counts(y, pred):
    counts = np.zeros((10, 10), int)
    for true, predicted in zip(y, pred):
        counts[true, predicted] += 1
    return counts


def full_redraw(figure):
    """Pixels of the reused figure drawn whole, as a new figure would be."""
    for artist in [*figure.figure.get_children(), *figure.figure.axes[0].get_children()]:
        artist.set_animated(False)
    canvas = FigureCanvasAgg(figure.figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())


def test_a_reused_figure_writes_each_matrix_counted_by_hand():
    y, predictions = matrices()
    figure = confusion.ConfusionFigure()
    for k, pred in enumerate(predictions):
        pixels = figure.draw(y, pred, NAMES, title=f"validation, seed {k}").copy()
        counts = hand_counts(y, pred)
        ax = figure.figure.axes[0]
        labels = {(round(text.get_position()[1]), round(text.get_position()[0])): text for text in ax.texts}
        assert sorted(labels) == [(i, j) for i in range(10) for j in range(10)]
        for (i, j), text in labels.items():
            assert text.get_text() == str(counts[i, j])
            assert text.get_color() == ("white" if 2 * counts[i, j] > counts.max() else "black")
        assert ax.get_title() == f"validation, seed {k}: accuracy {100 * np.mean(pred == y):.2f}%"
        np.testing.assert_array_equal(ax.images[0].get_array(), counts)
        assert ax.images[0].get_clim() == (0, counts.max())
        assert figure.figure.axes[1].get_ylim() == (0, counts.max())  # the colour bar follows
    assert pixels.shape == (576, 648, 4)  # 9 x 8 inches at 72 dpi
    # Composed over the kept background, the pixels are those of the whole figure drawn anew
    # (but for the odd anti-aliased pixel where the left spine meets the cells).
    assert np.mean(np.any(full_redraw(figure) != pixels, axis=-1)) < 1e-4


def test_a_style_drawing_over_the_cells_makes_the_figure_redraw_whole():
    y, predictions = matrices()
    with matplotlib.rc_context({"axes.grid": True, "xtick.direction": "in"}):
        figure = confusion.ConfusionFigure()
        for k, pred in enumerate(predictions):
            pixels = figure.draw(y, pred, NAMES, title=f"seed {k}").copy()
        np.testing.assert_array_equal(full_redraw(figure), pixels)


def test_confusion_report_counts_true_rows_against_predicted_columns():
    report = confusion.confusion_report([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], ("a", "b", "c"))
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["class_names"] == ["a", "b", "c"] and report["n_images"] == 6
