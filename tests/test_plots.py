"""Figures of ``clrsearch.plots`` on tiny synthetic data, checked against hand counts."""

import io
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from clrsearch import plots
from clrsearch.nn.lrrange import RangeResult

CLASSES = ["cat", "dog", "ship"]
KEYS = ("train_cost", "train_loss", "train_accuracy", "val_cost", "val_loss", "val_accuracy")


def _render(fig):
    """Draw ``fig`` as a PNG file would be drawn (an error in drawing raises)."""
    fig.savefig(io.BytesIO(), format="png")


def _history(n_points=6, n_members=2, seed=0):
    rng = np.random.default_rng(seed)
    steps = np.arange(n_points) * 50  # (P,)
    metrics = {key: rng.random((n_points, n_members)) for key in KEYS}  # (P, K) each
    return SimpleNamespace(steps=steps, epochs=steps / 100.0, metrics=metrics)


def _line(ax, label):
    (line,) = [line for line in ax.get_lines() if line.get_label() == label]
    return line


def test_learning_curves_draws_train_and_val_values_in_three_panels():
    history = _history()
    fig = plots.learning_curves(history, member=1, title="run")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3
    for ax, name, scale in zip(fig.axes, ("cost", "loss", "accuracy"), (1.0, 1.0, 100.0)):
        for split, label in (("train", "training"), ("val", "validation")):
            line = _line(ax, label)
            np.testing.assert_array_equal(line.get_xdata(), history.steps)
            np.testing.assert_allclose(line.get_ydata(), scale * history.metrics[f"{split}_{name}"][:, 1])
        assert ax.get_xlabel() == "update step"
    assert fig.axes[2].get_ylabel() == "accuracy (%)"
    _render(fig)


def test_learning_curves_by_epoch_and_with_nan_gaps():
    history = _history(n_points=8)
    for key in KEYS:
        history.metrics[key][5:, 0] = np.nan  # member 0 stopped after the 5th point
    fig = plots.learning_curves(history, member=0, x="epoch")
    for ax in fig.axes:
        assert ax.get_xlabel() == "epoch"
        ydata = np.asarray(_line(ax, "validation").get_ydata())
        assert np.isnan(ydata[5:]).all() and np.isfinite(ydata[:5]).all()
        assert ax.get_xlim()[1] >= history.epochs[-1]  # the gap stays visible
    _render(fig)


def test_learning_curves_rejects_unknown_x():
    with pytest.raises(ValueError, match="x must be"):
        plots.learning_curves(_history(), x="time")


def test_eta_curve_plots_eta_per_step():
    eta = np.concatenate([np.linspace(1e-5, 1e-1, 11), np.linspace(1e-1, 1e-5, 11)[1:]])  # (21,)
    fig = plots.eta_curve(eta, title="one cycle")
    (ax,) = fig.axes
    (line,) = ax.get_lines()
    np.testing.assert_array_equal(line.get_xdata(), np.arange(21))
    np.testing.assert_array_equal(line.get_ydata(), eta)
    assert ax.get_xlabel() == "update step"
    assert "η" in ax.get_ylabel()
    _render(fig)


def test_confusion_matrix_cells_match_hand_counts_and_title_shows_accuracy():
    y_true = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2]
    y_pred = [0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 2, 2]
    expected = [[0] * 3 for _ in range(3)]
    for t, p in zip(y_true, y_pred):
        expected[t][p] += 1
    fig = plots.confusion_matrix(y_true, y_pred, CLASSES)
    assert len(fig.axes) == 2  # the matrix and its colour bar
    ax = fig.axes[0]
    cells = {}
    for text in ax.texts:
        assert (text.get_horizontalalignment(), text.get_verticalalignment()) == ("center", "center")
        column, row = text.get_position()
        cells[(row, column)] = (text.get_text(), text.get_color())
    assert sorted(cells) == [(i, j) for i in range(3) for j in range(3)]
    for (i, j), (label, _) in cells.items():
        assert label == str(expected[i][j])
    # White on the cells above half the largest count (4): the 3 and the 4, not the 2; black elsewhere.
    assert {cell for cell, (_, color) in cells.items() if color == "white"} == {(0, 0), (2, 2)}
    assert {color for _, color in cells.values()} == {"white", "black"}
    assert ax.get_title() == "test accuracy 75.00%"  # 9 right of 12
    assert [label.get_text() for label in ax.get_xticklabels()] == CLASSES
    assert [label.get_text() for label in ax.get_yticklabels()] == CLASSES
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "true")
    _render(fig)


def test_confusion_matrix_custom_title_keeps_accuracy():
    fig = plots.confusion_matrix([0, 1, 2, 2], [0, 1, 2, 1], CLASSES, title="validation")
    assert fig.axes[0].get_title() == "validation: accuracy 75.00%"


def _errorbar_heights(ax):
    (container,) = ax.containers
    (bars,) = container.lines[2]
    assert isinstance(bars, LineCollection)
    heights = {}
    for segment in bars.get_segments():
        (x0, y0), (x1, y1) = segment
        assert x0 == x1
        heights[x0] = abs(y1 - y0)
    return heights


def test_lambda_search_log_axis_and_three_sigma_bars():
    lams = np.array([1e-2, 1e-5, 1e-3, 1e-4])
    means = np.array([0.44, 0.50, 0.52, 0.51])
    stds = np.array([0.004, 0.001, 0.002, 0.003])
    fig = plots.lambda_search(lams, means, stds)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    assert ax.get_ylabel() == "mean validation accuracy (%)"
    heights = _errorbar_heights(ax)
    for lam, std in zip(lams, stds):
        assert heights[lam] == pytest.approx(2 * 3 * 100 * std)  # from mean - 3σ to mean + 3σ, in percent
    (container,) = ax.containers
    assert container.get_label() == "mean ± 3σ"
    curve = container.lines[0]
    np.testing.assert_array_equal(curve.get_xdata(), np.sort(lams))
    np.testing.assert_allclose(curve.get_ydata(), [50, 51, 52, 44])
    (best,) = [line for line in ax.get_lines() if line.get_label().startswith("best λ")]
    assert list(best.get_xdata()) == [1e-3]  # highest mean
    _render(fig)


def test_lambda_search_linear_axis_when_a_lambda_is_zero_or_asked():
    lams, means, stds = [0.0, 0.001, 0.002], [0.51, 0.52, 0.50], [0.001, 0.002, 0.001]
    fig = plots.lambda_search(lams, means, stds, best_lam=0.002)
    (ax,) = fig.axes
    assert ax.get_xscale() == "linear"
    (best,) = [line for line in ax.get_lines() if line.get_label().startswith("best λ")]
    assert list(best.get_xdata()) == [0.002]
    assert plots.lambda_search([1e-3, 1e-2], [0.5, 0.4], [0.0, 0.0], log_x=False).axes[0].get_xscale() == "linear"
    _render(fig)


def test_class_distribution_bars_count_each_class_per_split():
    labels = {"train": np.array([0, 0, 1, 2, 2, 2]), "test": np.array([1, 1, 0])}
    fig = plots.class_distribution(labels, CLASSES)
    (ax,) = fig.axes
    bars = ax.patches
    assert len(bars) == 2 * 3
    for s, (name, y) in enumerate(labels.items()):
        hand = [sum(1 for v in y if v == c) for c in range(3)]
        assert [bar.get_height() for bar in bars[3 * s:3 * (s + 1)]] == hand
    assert [label.get_text() for label in ax.get_xticklabels()] == CLASSES
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend[0].startswith("train") and legend[1].startswith("test")
    _render(fig)


def test_lr_range_axes_and_suggestion():
    etas = np.logspace(-5, 0, 12)
    accuracies = np.linspace(0.1, 0.45, 12)
    fig = plots.lr_range(etas, accuracies)
    assert len(fig.axes) == 1
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), 100 * accuracies)

    fig = plots.lr_range(etas, accuracies, losses=np.linspace(2.3, 1.5, 12), suggestion=(1e-4, 1e-1))
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    fig.canvas.draw()
    (span,) = ax.patches
    (x0, _), (x1, _) = ax.transData.inverted().transform(span.get_window_extent().get_points())
    assert (x0, x1) == (pytest.approx(1e-4), pytest.approx(1e-1))
    _render(fig)


def test_the_points_of_a_linear_ramp_are_drawn_on_a_linear_axis_from_zero():
    etas = 1e-5 + (0.3 - 1e-5) * np.arange(41) / 40  # what run_range_test measures: eta_low .. eta_high evenly
    fig = plots.lr_range(etas, np.linspace(0.1, 0.4, 41))
    ax = fig.axes[0]
    assert ax.get_xscale() == "linear" and ax.get_xlim()[0] == 0
    # Evenly spaced on the page: the first gap is as wide as the last.
    x = ax.transData.transform(np.column_stack([etas, np.zeros_like(etas)]))[:, 0]
    assert np.allclose(np.diff(x), np.diff(x)[0])


def test_log_spaced_points_keep_a_log_axis():
    fig = plots.lr_range(np.logspace(-5, -1, 9), np.linspace(0.1, 0.4, 9))
    assert fig.axes[0].get_xscale() == "log"


def test_each_suggested_bound_is_a_line_labelled_with_its_value():
    etas = np.linspace(1e-5, 0.3, 31)
    result = RangeResult(etas=etas, accuracy=np.linspace(0.1, 0.4, 31), loss=np.linspace(2.3, 1.7, 31),
                         eta_min=0.0075, eta_max=0.11)
    ax = plots.lr_range_result(result).axes[0]
    labels = {text.get_text(): text.xy[0] for text in ax.texts}
    assert labels == {"η_min 0.0075": 0.0075, "η_max 0.11": 0.11}
    assert sorted(line.get_xdata()[0] for line in ax.get_lines()[1:]) == [0.0075, 0.11]


def test_lr_range_result_draws_a_range_tests_curves_and_marks_its_suggestion():
    etas = np.linspace(0.01, 0.3, 8)
    result = RangeResult(etas=etas, accuracy=np.linspace(0.1, 0.4, 8), loss=np.linspace(2.3, 1.7, 8),
                         eta_min=0.05, eta_max=0.2)
    fig = plots.lr_range_result(result)
    ax, loss_ax = fig.axes
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), etas)
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), 100 * result.accuracy)
    np.testing.assert_allclose(loss_ax.get_lines()[0].get_ydata(), result.loss)
    bounds = sorted(line.get_xdata()[0] for line in ax.get_lines()[1:])  # the dotted lines at the suggestion
    assert bounds == [0.05, 0.2]
    _render(fig)


def test_confusion_counts_match_scikit_learn():
    from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix

    rng = np.random.default_rng(3)
    y_true, y_pred = rng.integers(0, 10, 2000), rng.integers(0, 10, 2000)
    y_true[:5] = 9  # class 9 predicted, class 9 seen; some classes may still be missing from a row
    counts = plots.confusion_counts(y_true, y_pred, 12)  # two classes never seen
    assert counts.shape == (12, 12) and counts.sum() == 2000
    assert np.array_equal(counts, sklearn_confusion_matrix(y_true, y_pred, labels=np.arange(12)))


def test_lambda_search_series_draws_one_line_per_schedule_with_counts_and_the_best_set():
    series = [("n_s_epochs 2", [0.002, 0.0], [0.50, 0.52], [0.01, 0.0], [3, 6], [False, True]),
              ("n_s_epochs 4", [0.0, 0.002], [0.53, 0.51], [0.002, 0.003], [12, 3], [True, False])]
    fig = plots.lambda_search_series(series, winner=("n_s_epochs 4", 0.0))
    ax = fig.axes[0]
    lines = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
    assert [list(line.get_xdata()) for line in lines] == [[0.0, 0.002], [0.0, 0.002]]  # sorted by λ
    assert np.allclose(lines[0].get_ydata(), [52.0, 50.0]) and np.allclose(lines[1].get_ydata(), [53.0, 51.0])
    assert sorted(t.get_text() for t in ax.texts) == ["12", "3", "3", "6"]
    rings = [line for line in ax.get_lines() if line.get_markerfacecolor() == "none"]
    assert sorted((float(x), float(y)) for line in rings for x, y in zip(line.get_xdata(), line.get_ydata())) \
        == [(0.0, 52.0), (0.0, 53.0)]
    star = [line for line in ax.get_lines() if line.get_marker() == "*"]
    assert len(star) == 1 and (star[0].get_xdata()[0], star[0].get_ydata()[0]) == (0.0, 53.0)
    assert any("chosen: n_s_epochs 4, λ = 0 (53.00%)" == t.get_text() for t in ax.get_legend().get_texts())
