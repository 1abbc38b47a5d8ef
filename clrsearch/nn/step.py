"""One update step of a population of K networks: W <- W - eta dJ/dW for every member at once.

Member k has its own lambda_k and learning rate eta_k. On a mini-batch Xb (D, B), Yb (C, B) its cost is

    J = L + lam (|W1|² + |W2|²),  L = mean over the B columns of -log p_true

and, with the gradients of :func:`clrsearch.nn.network.gradients` (G = (P - Yb) / B,
G1 = (W2ᵀ G) ⊙ 1[H > 0]), SPEC's step W <- W - eta dJ/dW is

    W2 <- W2 - eta (G Hᵀ + 2 lam W2)  = d W2 - eta G Hᵀ,   d = 1 - 2 eta lam
    b2 <- b2 - eta G 1
    W1 <- W1 - eta (G1 Xbᵀ + 2 lam W1) = d W1 - eta G1 Xbᵀ
    b1 <- b1 - eta G1 1

The weight decay d multiplies every entry of W1 (K, M, D), the largest array by far, which the step
already sweeps once to subtract the gradient. It is kept as one factor per member instead: W1 is held
as ``scale * V1`` (scale (K,), V1 (K, M, D)), and since

    d W1 - eta G1 Xbᵀ = (d scale) (V1 - eta / (d scale) G1 Xbᵀ),

a step multiplies ``scale`` by d and subtracts the gradient, scaled by eta / scale, from V1: one pass
over the first layer. ``scale`` is folded back into V1 (V1 <- scale V1, scale <- 1) when it falls
below ``MIN_SCALE``, and by :meth:`Population.fold_scale` whenever W1 itself is read. The rounding
of float32 follows from this form: a step written as ``W1 - eta * grad`` gives other bits.

The members are the rows of the arrays (leading axis K). Rows that see the same mini-batch (one
*stream*, see :mod:`.trainer`) are adjacent, so that W1 Xb and G1 Xbᵀ are one large product per
stream, (rows · M, D) @ (D, B), however many networks train. G1 Xbᵀ, as large as W1, is made and
subtracted a few MB of rows at a time, while those rows are in the cache (``GRADIENT_BLOCK_BYTES``).
OpenBLAS rounds an entry of a float32 product by the place of its row in the rows it is given, so
the blocks, like the slices of members that threads update (:mod:`.threads`), are part of the
rounding: other blocks give other bits.
"""

import numpy as np

from . import network

MIN_SCALE = 1e-4  # |scale| below which the first-layer factor is folded back into V1
GRADIENT_BLOCK_BYTES = 2**22  # G1 Xbᵀ is made and subtracted this many bytes of rows at a time


class Population:
    """The parameters of K networks in training (leading axis K) and their update step.

    Parameters
    ----------
    params : dict of a population, ``W1`` (K, M, D), ``b1`` (K, M, 1), ``W2`` (K, C, M), ``b2`` (K, C, 1)
    lams : (K,) float, lambda of each row
    streams : (K,) int, the mini-batch stream of each row; the rows of a stream adjacent
    """

    def __init__(self, params, lams, streams):
        self.V1 = np.ascontiguousarray(params["W1"])  # (K, M, D); W1 = scale V1
        self.scale = np.ones(len(lams))  # (K,)
        self.b1, self.W2, self.b2 = params["b1"], params["W2"], params["b2"]  # (K, M, 1), (K, C, M), (K, C, 1)
        self.lams = np.asarray(lams, dtype=np.float64)  # (K,)
        self.streams = np.asarray(streams)  # (K,)

    def step(self, mini_batches, eta, threads):
        """W <- W - eta dJ/dW for every row, on the mini-batch of its stream.

        Parameters
        ----------
        mini_batches : dict stream -> (Xb (D, B), Yb (C, B))
        eta : (K,) float, the learning rate of each row
        threads : :class:`.threads.MemberThreads` that runs the slices of rows
        """
        eta = np.asarray(eta, dtype=np.float64)  # (K,)
        threads.map(lambda _, a, b: self._step_rows(slice(a, b), mini_batches, eta[a:b]), len(self.lams))

    def _step_rows(self, rows, mini_batches, eta):
        """The step of the rows ``rows`` (a slice); every array below holds only them."""
        V1, b1, W2, b2 = self.V1[rows], self.b1[rows], self.W2[rows], self.b2[rows]  # views, updated in place
        scale, lam = self.scale[rows], self.lams[rows]  # (K,)
        dtype = V1.dtype
        runs = _runs(self.streams[rows])  # (stream, rows of that stream)
        B = next(iter(mini_batches.values()))[0].shape[1]

        # forward
        S1 = np.concatenate([network.first_layer(V1[r], mini_batches[s][0]) for s, r in runs])  # (K, M, B) V1 Xb
        S1 *= scale.astype(dtype)[:, None, None]  # W1 Xb
        S1 += b1
        H = np.maximum(S1, 0, out=S1)  # (K, M, B)
        P = network.softmax(W2 @ H + b2)  # (K, C, B)

        # gradients of the loss
        G = P
        for s, r in runs:
            G[r] -= mini_batches[s][1]
        G *= 1.0 / B  # (K, C, B) dL/dS
        G1 = np.swapaxes(W2, 1, 2) @ G  # (K, M, B)
        G1 *= H > 0  # dL/dS1

        # update: W <- d W - eta dL/dW, d = 1 - 2 eta lam
        rate = eta.astype(dtype)[:, None, None]  # (K, 1, 1)
        decay = 1.0 - 2.0 * eta * lam  # (K,)
        b1 -= rate * G1.sum(axis=2, keepdims=True)
        b2 -= rate * G.sum(axis=2, keepdims=True)
        W2 *= decay.astype(dtype)[:, None, None]
        W2 -= rate * (G @ np.swapaxes(H, 1, 2))  # (K, C, M)
        new_scale = scale * decay  # (K,)
        for k in np.flatnonzero(np.abs(new_scale) < MIN_SCALE):
            V1[k] *= new_scale[k]
            new_scale[k] = 1.0
        scale[:] = new_scale
        G1 *= (eta / new_scale).astype(dtype)[:, None, None]
        for s, r in runs:
            _subtract_gradient(V1[r].reshape(-1, V1.shape[2]), G1[r].reshape(-1, B), mini_batches[s][0])

    def fold_scale(self):
        """V1 <- scale V1, scale <- 1: W1 held in V1 alone, as the trainer does before it reads W1."""
        self.V1 *= self.scale.astype(self.V1.dtype)[:, None, None]
        self.scale = np.ones_like(self.scale)

    def params(self):
        """The rows as network parameters (views of the live arrays once the scale is folded)."""
        W1 = self.V1 if np.all(self.scale == 1) else self.V1 * self.scale.astype(self.V1.dtype)[:, None, None]
        return {"W1": W1, "b1": self.b1, "W2": self.W2, "b2": self.b2}

    def keep(self, rows):
        """Keep only the rows ``rows`` (a list of indices), in that order."""
        self.V1, self.b1, self.W2, self.b2 = (a[rows] for a in (self.V1, self.b1, self.W2, self.b2))
        self.scale, self.lams, self.streams = self.scale[rows], self.lams[rows], self.streams[rows]

    def nonfinite_rows(self):
        """Indices of the rows whose parameters hold NaN or inf.

        The first layer is not swept here: NaN or inf there reaches b2 within
        a step, or else the evaluated cost (which holds the weight norm) at the
        next evaluation point.
        """
        parts = (self.scale, self.b1, self.W2, self.b2)
        if np.isfinite(sum(float(p.sum()) for p in parts)):  # one scalar: the common case costs little
            return []
        bad = ~np.isfinite(self.scale)
        for p in parts[1:]:
            bad |= ~np.isfinite(p).all(axis=(1, 2))
        return list(np.flatnonzero(bad))


def _subtract_gradient(V1, G1, Xb):
    """V1 -= G1 Xbᵀ, in equal blocks of rows of at most ``GRADIENT_BLOCK_BYTES``.

    V1 : (rows, D), G1 : (rows, B), Xb : (D, B)
    """
    rows, D = V1.shape
    blocks = -(-rows // max(1, GRADIENT_BLOCK_BYTES // (D * V1.itemsize)))
    size = -(-rows // blocks)  # equal blocks: no small remainder
    for start in range(0, rows, size):
        V1[start:start + size] -= G1[start:start + size] @ Xb.T  # (size, D)


def _runs(streams):
    """[(stream, slice of its adjacent rows)] of the rows' streams (K,)."""
    starts = [0] + [i for i in range(1, len(streams)) if streams[i] != streams[i - 1]]
    return [(int(streams[a]), slice(a, b)) for a, b in zip(starts, starts[1:] + [len(streams)])]
