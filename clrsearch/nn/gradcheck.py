"""Check the analytic gradients of the network against centred finite differences.

For every parameter (W1, b1, W2, b2) the check reports the share of absolute
errors below 1e-6, the largest absolute error, the share of relative errors
below 1e-6 and the largest relative error, where

    relative error = |ga - gn| / max(eps, |ga| + |gn|).

The two scenarios of SPEC run on the first training images of split batch1,
in float64, with M = 50 hidden units:

1. the first 20 input dimensions of the first image, lam = 0;
2. all 3072 dimensions of the first 5 images, lam > 0.

``python -m clrsearch.gradcheck`` runs both (:mod:`clrsearch.cli.gradcheck`).
"""

import math
import time

import numpy as np

from ..errors import UsageError
from . import network

TOLERANCE = 1e-6  # errors below this count as agreeing, absolute and relative alike
SCENARIOS = (1, 2)
HIDDEN = 50  # units M of the checked network, as in SPEC


def numerical_gradients(params, X, Y, lam, h=1e-5, entries=None):
    """Centred differences (J(p + h) - J(p - h)) / 2h of ``network.cost``, in float64.

    Each entry is the same number as perturbing that one entry and calling
    ``network.cost`` twice, but the perturbations are batched: moving W1[i, j]
    by h moves only the hidden pre-activation row i, by h X[j, :], so the
    costs for all j of one hidden unit come from one (D, C, N) block of
    scores. W2[c, i] likewise moves only score row c, by h H[i, :].

    Parameters
    ----------
    params : dict of one network, ``W1`` (M, D), ``b1`` (M, 1), ``W2`` (C, M), ``b2`` (C, 1)
    X : (D, N) inputs
    Y : (C, N) one-hot labels
    lam : float, L2 strength
    h : float, step of the differences
    entries : iterable of str or None
        Names of the parameters to difference; all four when None.

    Returns
    -------
    dict name -> float64 array shaped like ``params[name]``
    """
    p = {name: np.asarray(params[name], dtype=np.float64) for name in network.PARAM_NAMES}
    if p["W1"].ndim != 2:
        raise ValueError(f"numerical_gradients takes one network, got W1 of shape {p['W1'].shape}")
    names = network.PARAM_NAMES if entries is None else tuple(entries)
    unknown = sorted(set(names) - set(network.PARAM_NAMES))
    if unknown:
        raise ValueError(f"unknown parameters {unknown}; choose from {network.PARAM_NAMES}")
    X = np.asarray(X, dtype=np.float64)  # (D, N)
    Y = np.asarray(Y, dtype=np.float64)  # (C, N)
    lam = float(lam)

    S1 = p["W1"] @ X + p["b1"]  # (M, N)
    H = np.maximum(S1, 0)  # (M, N)
    S = p["W2"] @ H + p["b2"]  # (C, N)
    ones = np.ones((1, X.shape[1]))  # (1, N)
    block = _block_rows(*S.shape)

    def hidden_loss(i, shift):
        """Loss when pre-activation row i moves by each row of ``shift`` (J, N) -> (J,)."""
        dH = np.maximum(S1[i] + shift, 0) - H[i]  # (J, N)
        return _loss(S + p["W2"][:, i, None] * dH[:, None, :], Y)  # (J, C, N) -> (J,)

    def output_loss(c, shift):
        """Loss when score row c moves by each row of ``shift`` (J, N) -> (J,)."""
        S_new = np.repeat(S[None], shift.shape[0], axis=0)  # (J, C, N)
        S_new[:, c, :] += shift
        return _loss(S_new, Y)  # (J,)

    # Per parameter: the function of the row an entry moves (hidden unit or
    # class), the (J, N) move of that row per unit step of entries 0..J-1 of a
    # parameter row, and the decay. The regulariser enters as its change
    # lam ((w +- h)² - w²); lam |W|², common to both sides, cancels.
    plans = {
        "W1": (hidden_loss, X, lam),
        "b1": (hidden_loss, ones, 0.0),
        "W2": (output_loss, H, lam),
        "b2": (output_loss, ones, 0.0),
    }
    grads = {}
    for name in names:
        loss_of, direction, decay = plans[name]
        values = p[name]  # (rows, J)
        grad = np.empty_like(values)
        for r in range(values.shape[0]):
            for start in range(0, direction.shape[0], block):
                part = slice(start, start + block)
                w = values[r, part]  # (J,)
                plus = loss_of(r, h * direction[part]) + decay * ((w + h) ** 2 - w**2)  # (J,)
                minus = loss_of(r, -h * direction[part]) + decay * ((w - h) ** 2 - w**2)  # (J,)
                grad[r, part] = (plus - minus) / (2 * h)
        grads[name] = grad
    return grads


def _loss(S, Y):
    """Cross-entropy of a stack of scores S (J, C, N) against Y (C, N) -> (J,)."""
    return network.cross_entropy(network.softmax(S), Y)


def _block_rows(c, n, elements=1 << 20):
    """Perturbations per block so that one (J, C, N) block of scores holds ~`elements`."""
    return max(1, elements // (c * n))


def compare(analytic, numeric, eps=1e-12, tol=TOLERANCE):
    """Error table of analytic against numerical gradients.

    Parameters
    ----------
    analytic, numeric : dict name -> array, same shapes; the names of
        ``numeric`` are compared, in ``network.PARAM_NAMES`` order
    eps : float, floor of the denominator of the relative error
    tol : float, threshold of the shares

    Returns
    -------
    dict name -> row, a row being a dict with ``pct_abs_below`` (% of absolute
    errors < tol), ``max_abs``, ``pct_rel_below`` (% of relative errors < tol)
    and ``max_rel``
    """
    table = {}
    for name in (n for n in network.PARAM_NAMES if n in numeric):
        ga = np.asarray(analytic[name], dtype=np.float64)
        gn = np.asarray(numeric[name], dtype=np.float64)
        if ga.shape != gn.shape:
            raise ValueError(f"{name}: analytic shape {ga.shape} differs from numeric {gn.shape}")
        abs_err = np.abs(ga - gn)
        rel_err = abs_err / np.maximum(eps, np.abs(ga) + np.abs(gn))
        table[name] = {
            "pct_abs_below": 100.0 * float(np.mean(abs_err < tol)),
            "max_abs": float(abs_err.max()),
            "pct_rel_below": 100.0 * float(np.mean(rel_err < tol)),
            "max_rel": float(rel_err.max()),
        }
    return table


def passed(table, tol=TOLERANCE):
    """True when every absolute error of a `compare` table is below ``tol``."""
    return all(row["max_abs"] < tol for row in table.values())


def scenario_inputs(X, Y, scenario):
    """The slice of the training set a SPEC scenario uses.

    Parameters
    ----------
    X : (D, N) training inputs, Y : (C, N) one-hot labels
    scenario : 1 (first 20 dimensions of the first image) or 2 (all
        dimensions of the first 5 images)

    Returns
    -------
    X (20, 1) or (D, 5), Y (C, 1) or (C, 5), as float64
    """
    dims, images = {1: (20, 1), 2: (X.shape[0], 5)}[scenario]
    if X.shape[0] < dims or X.shape[1] < images:
        raise UsageError(f"scenario {scenario} needs {images} training images of at least "
                         f"{dims} dimensions; the data hold {X.shape[1]} of {X.shape[0]}")
    X_s = np.array(X[:dims, :images], dtype=np.float64)  # (dims, images)
    Y_s = np.array(Y[:, :images], dtype=np.float64)  # (C, images)
    return X_s, Y_s


def run_check(X, Y, lam, m, rng, h=1e-5):
    """Gradient check of a freshly initialised network on (X, Y).

    Parameters
    ----------
    X : (D, N), Y : (C, N), float64
    lam : float, L2 strength
    m : int, hidden units
    rng : np.random.Generator for ``network.init_params``
    h : float, step of the differences

    Returns
    -------
    dict with the sizes (``dims``, ``images``, ``hidden``, ``classes``),
    ``lam``, ``h``, ``seconds`` (analytic plus numerical gradients) and
    ``table`` (see `compare`)
    """
    (d, n), c = X.shape, Y.shape[0]
    params = network.init_params(d, m, c, rng, np.float64)
    start = time.perf_counter()
    analytic = network.gradients(params, X, Y, lam)
    numeric = numerical_gradients(params, X, Y, lam, h)
    seconds = time.perf_counter() - start
    return {"dims": d, "images": n, "hidden": m, "classes": c, "lam": lam, "h": h,
            "seconds": seconds, "table": compare(analytic, numeric)}


def format_result(scenario, result):
    """A small aligned table of one scenario, with its sizes and elapsed time."""
    lines = [f"scenario {scenario}: D = {result['dims']}, N = {result['images']}, "
             f"M = {result['hidden']}, C = {result['classes']}, lam = {result['lam']:g}, "
             f"h = {result['h']:g}",
             f"{'param':<6}{'abs<1e-6':>10}{'max abs':>11}{'rel<1e-6':>10}{'max rel':>11}"]
    for name, row in result["table"].items():
        lines.append(f"{name:<6}{share(row['pct_abs_below']):>10}{row['max_abs']:>11.2e}"
                     f"{share(row['pct_rel_below']):>10}{row['max_rel']:>11.2e}")
    lines.append(f"{result['seconds']:.2f} s")
    return "\n".join(lines)


def share(pct):
    """A percentage rounded down to 0.01, so that 100.00% means every entry."""
    return f"{math.floor(pct * 100) / 100:.2f}%"
