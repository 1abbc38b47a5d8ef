"""Cyclical learning rates (Smith 2015, arXiv:1506.01186) as pure functions of the step.

One cycle is 2·n_s update steps: eta rises linearly from eta_min at t = 2l·n_s to
the top at t = (2l+1)·n_s and falls back to eta_min at t = 2(l+1)·n_s.

- ``triangular``: the top is eta_max in every cycle;
- ``triangular2``: the amplitude halves after every cycle;
- ``exp_range``: the amplitude is scaled by gamma**t.
"""

import numpy as np

MODES = ("triangular", "triangular2", "exp_range")


def cyclic_lr(t, eta_min, eta_max, n_s, mode="triangular", gamma=1.0):
    """Learning rate at update step ``t`` (an int, or an integer array of steps).

    Parameters
    ----------
    t : int or ndarray of int, >= 0
    eta_min, eta_max : float, eta_min < eta_max
    n_s : int, half a cycle in update steps
    mode : one of ``MODES``
    gamma : float, per-step decay of the amplitude for ``exp_range``

    Returns
    -------
    float for a scalar ``t``, else an ndarray shaped like ``t``.
    """
    if mode not in MODES:
        raise ValueError(f"unknown schedule mode {mode!r}; use one of {', '.join(MODES)}")
    steps = np.asarray(t, dtype=np.float64)
    cycle = np.floor(steps / (2 * n_s))
    ramp = 1.0 - np.abs(steps / n_s - 2 * cycle - 1)  # 0 at the cycle ends, 1 at the top
    amplitude = eta_max - eta_min
    if mode == "triangular2":
        amplitude = amplitude / 2.0**cycle
    elif mode == "exp_range":
        amplitude = amplitude * gamma**steps
    eta = eta_min + amplitude * np.maximum(0.0, ramp)
    return float(eta) if np.ndim(t) == 0 else eta
