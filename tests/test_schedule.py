"""The cyclical learning rate against its closed form and hand-picked points."""

import numpy as np
import pytest

from clrsearch.nn.schedule import MODES, cyclic_lr

ETA_MIN, ETA_MAX, N_S = 1e-5, 1e-1, 500


def ramp(t, n_s):
    """0 at the cycle ends, 1 at the top, linear in between: the triangle of SPEC, step by step."""
    phase = t % (2 * n_s)
    return phase / n_s if phase <= n_s else (2 * n_s - phase) / n_s


def test_triangular_hits_min_max_and_midpoints():
    mid = (ETA_MIN + ETA_MAX) / 2
    for t, expected in [(0, ETA_MIN), (N_S // 2, mid), (N_S, ETA_MAX), (3 * N_S // 2, mid), (2 * N_S, ETA_MIN)]:
        assert cyclic_lr(t, ETA_MIN, ETA_MAX, N_S) == pytest.approx(expected, rel=1e-12), f"t = {t}"


def test_triangular_is_linear_between_the_turning_points():
    for t in (1, 123, 499, 501, 777, 999):
        expected = ETA_MIN + (ETA_MAX - ETA_MIN) * ramp(t, N_S)
        assert cyclic_lr(t, ETA_MIN, ETA_MAX, N_S) == pytest.approx(expected, rel=1e-12), f"t = {t}"


def test_triangular_repeats_every_cycle():
    t = np.arange(2 * N_S)
    first = cyclic_lr(t, ETA_MIN, ETA_MAX, N_S)
    for cycle in (1, 2, 7):
        np.testing.assert_allclose(cyclic_lr(t + 2 * N_S * cycle, ETA_MIN, ETA_MAX, N_S), first, rtol=1e-12)


def test_triangular2_halves_the_amplitude_every_cycle():
    for cycle in range(4):
        top = cyclic_lr((2 * cycle + 1) * N_S, ETA_MIN, ETA_MAX, N_S, "triangular2")
        assert top == pytest.approx(ETA_MIN + (ETA_MAX - ETA_MIN) / 2**cycle, rel=1e-12), f"cycle {cycle}"
        start = cyclic_lr(2 * cycle * N_S, ETA_MIN, ETA_MAX, N_S, "triangular2")
        assert start == pytest.approx(ETA_MIN, rel=1e-12), f"cycle {cycle}"
        quarter = cyclic_lr(2 * cycle * N_S + N_S // 2, ETA_MIN, ETA_MAX, N_S, "triangular2")
        assert quarter == pytest.approx(ETA_MIN + (ETA_MAX - ETA_MIN) / 2**cycle / 2, rel=1e-12)


def test_exp_range_scales_the_amplitude_by_gamma_to_the_step():
    gamma, n_s = 0.999, 50
    for t in (0, 1, 25, 50, 75, 100, 130, 299):
        expected = ETA_MIN + (ETA_MAX - ETA_MIN) * gamma**t * ramp(t, n_s)
        assert cyclic_lr(t, ETA_MIN, ETA_MAX, n_s, "exp_range", gamma) == pytest.approx(expected, rel=1e-12)


def test_exp_range_with_gamma_one_is_triangular():
    t = np.arange(0, 3000, 7)
    np.testing.assert_allclose(cyclic_lr(t, ETA_MIN, ETA_MAX, N_S, "exp_range", 1.0),
                               cyclic_lr(t, ETA_MIN, ETA_MAX, N_S), rtol=1e-15)


@pytest.mark.parametrize("mode", MODES)
def test_array_input_gives_an_array_of_the_scalar_values(mode):
    t = np.array([[0, 10, 250], [500, 999, 1500]])
    eta = cyclic_lr(t, ETA_MIN, ETA_MAX, N_S, mode, 0.999)
    assert isinstance(eta, np.ndarray) and eta.shape == t.shape
    for idx in np.ndindex(t.shape):
        assert eta[idx] == cyclic_lr(int(t[idx]), ETA_MIN, ETA_MAX, N_S, mode, 0.999)


def test_scalar_input_gives_a_float():
    assert isinstance(cyclic_lr(3, ETA_MIN, ETA_MAX, N_S), float)


def test_values_stay_within_eta_min_and_eta_max():
    eta = cyclic_lr(np.arange(6 * N_S + 1), ETA_MIN, ETA_MAX, N_S)
    assert eta.min() == pytest.approx(ETA_MIN) and eta.max() == pytest.approx(ETA_MAX)


def test_unknown_mode_raises():
    with pytest.raises(ValueError, match="cosine"):
        cyclic_lr(0, ETA_MIN, ETA_MAX, N_S, "cosine")
