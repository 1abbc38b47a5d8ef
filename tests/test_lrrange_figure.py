"""The LR range test figure (clrsearch.plots.lr_range) is readable at its low end: a linear ramp's
evenly spaced points on a linear axis, log-spaced points on a log axis, each suggested bound labelled."""

import numpy as np

from clrsearch import plots
from clrsearch.nn.lrrange import RangeResult


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
