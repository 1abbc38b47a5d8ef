"""What runs hold besides scalars (clrsearch.tracking.artifacts): eta thinned to its turning points."""

import numpy as np
import pytest

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
