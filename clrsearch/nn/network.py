"""The two-layer network of SPEC as pure functions.

    S1 = W1 X + b1,  H = max(0, S1),  S = W2 H + b2,  P = softmax(S)
    J  = L + lam (|W1|² + |W2|²),  L = mean over columns of -log p_true

Every function serves one network (``W1`` of shape (M, D)) and a population of
K networks alike (the same arrays with a leading axis: ``W1`` (K, M, D)); then
``lam`` may be one value or one per member, shape (K,), and the scalar results
(loss, cost, accuracy) come back as (K,) arrays.

Data is column-major throughout: ``X`` (D, N), ``Y`` (C, N) one-hot, ``y`` (N,).
"""

import numpy as np

PARAM_NAMES = ("W1", "b1", "W2", "b2")


def init_params(d, m, c, rng, dtype=np.float64):
    """One network: W1 ~ N(0, 1/d), W2 ~ N(0, 1/m), biases zero.

    Parameters
    ----------
    d, m, c : int, input size, hidden units, classes
    rng : np.random.Generator

    Returns
    -------
    dict with ``W1`` (m, d), ``b1`` (m, 1), ``W2`` (c, m), ``b2`` (c, 1)
    """
    return {
        "W1": (rng.standard_normal((m, d)) / np.sqrt(d)).astype(dtype),
        "b1": np.zeros((m, 1), dtype),
        "W2": (rng.standard_normal((c, m)) / np.sqrt(m)).astype(dtype),
        "b2": np.zeros((c, 1), dtype),
    }


def init_population(d, m, c, seeds, dtype=np.float64):
    """K networks stacked on a leading axis; member k is
    ``init_params(d, m, c, np.random.default_rng(seeds[k]), dtype)``.

    Returns
    -------
    dict with ``W1`` (K, m, d), ``b1`` (K, m, 1), ``W2`` (K, c, m), ``b2`` (K, c, 1)
    """
    members = [init_params(d, m, c, np.random.default_rng(seed), dtype) for seed in seeds]
    return stack(members)


def stack(members):
    """Stack a list of networks into a population (leading axis K)."""
    return {name: np.stack([p[name] for p in members]) for name in PARAM_NAMES}


def member(params, k):
    """Network k of a population, as copies (no leading axis)."""
    return {name: params[name][k].copy() for name in PARAM_NAMES}


def first_layer(W1, X):
    """W1 @ X as one matrix product, whatever the leading axes of W1.

    Parameters
    ----------
    W1 : (..., M, D)
    X : (D, N)

    Returns
    -------
    (..., M, N)
    """
    M, D = W1.shape[-2:]
    return (W1.reshape(-1, D) @ X).reshape(W1.shape[:-1] + (X.shape[-1],))


def softmax(S, out=None):
    """Column-wise softmax over the class axis (-2), stable for large scores.

    ``out=S`` computes it in place of the scores.
    """
    E = np.subtract(S, S.max(axis=-2, keepdims=True), out=out)
    np.exp(E, out=E)
    E /= E.sum(axis=-2, keepdims=True)
    return E


def layers(params, X):
    """Hidden activations and class probabilities.

    Returns
    -------
    H : (..., M, N), P : (..., C, N)
    """
    H = np.maximum(first_layer(params["W1"], X) + params["b1"], 0)  # (..., M, N)
    P = softmax(params["W2"] @ H + params["b2"])  # (..., C, N)
    return H, P


def forward(params, X):
    """Class probabilities P (..., C, N) for the columns of X (D, N)."""
    return layers(params, X)[1]


def cross_entropy(P, Y):
    """Mean over columns of -log p_true; P (..., C, N), Y (C, N) -> float or (K,)."""
    p_true = np.sum(P * Y, axis=-2)  # (..., N)
    return -np.mean(np.log(p_true), axis=-1)


def loss(params, X, Y):
    """L: float for one network, (K,) for a population."""
    return _scalar(cross_entropy(forward(params, X), Y))


def weight_norm(params):
    """|W1|² + |W2|²: float for one network, (K,) for a population."""
    return _scalar(_sum_squares(params["W1"]) + _sum_squares(params["W2"]))


def cost(params, X, Y, lam):
    """J = L + lam (|W1|² + |W2|²); ``lam`` is a float or (K,)."""
    return _scalar(loss(params, X, Y) + np.asarray(lam) * weight_norm(params))


def gradients(params, X, Y, lam):
    """dJ/dparam for every parameter, same keys and shapes as ``params``.

    G = P - Y;  dW2 = G Hᵀ/N + 2 lam W2;  db2 = G 1/N;
    G1 = (W2ᵀ G) ⊙ 1[H > 0];  dW1 = G1 Xᵀ/N + 2 lam W1;  db1 = G1 1/N.
    """
    n = X.shape[-1]
    H, P = layers(params, X)
    G = (P - Y) / n  # (..., C, N)
    G1 = (np.swapaxes(params["W2"], -1, -2) @ G) * (H > 0)  # (..., M, N)
    decay = 2 * per_member(lam, params["W1"])  # () or (K, 1, 1)
    return {
        "W1": first_layer(G1, X.T) + decay * params["W1"],
        "b1": G1.sum(axis=-1, keepdims=True),
        "W2": G @ np.swapaxes(H, -1, -2) + decay * params["W2"],
        "b2": G.sum(axis=-1, keepdims=True),
    }


def predict(params, X):
    """Predicted labels: (N,) for one network, (K, N) for a population."""
    return np.argmax(forward(params, X), axis=-2)


def ensemble_predict(networks, X):
    """Labels (N,) int64 of an ensemble: the argmax of its members' mean class probabilities.

    Parameters
    ----------
    networks : list of dicts of one network each, ``W1`` (M, D), ``b1`` (M, 1), ``W2`` (C, M), ``b2`` (C, 1)
    X : (D, N) normalised pixels
    """
    P = sum(forward(params, X) for params in networks) / len(networks)  # (C, N)
    return np.argmax(P, axis=0).astype(np.int64)


def accuracy(params, X, y):
    """Fraction of columns predicted right: float or (K,)."""
    return _scalar(np.mean(predict(params, X) == y, axis=-1))


def per_member(lam, W):
    """``lam`` (float or (K,)) shaped to broadcast against a weight W (..., a, b)."""
    lam = np.asarray(lam, dtype=np.float64)
    if lam.ndim == 0:
        return lam
    return lam.reshape(lam.shape + (1,) * (W.ndim - lam.ndim))


def _sum_squares(W):
    flat = W.reshape(W.shape[:-2] + (-1,))
    return np.einsum("...i,...i->...", flat, flat, dtype=np.float64)


def _scalar(value):
    return float(value) if np.ndim(value) == 0 else np.asarray(value)
