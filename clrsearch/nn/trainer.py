"""Mini-batch gradient descent under a cyclical learning rate, for a population.

K networks train side by side on the same mini-batch order, each with its own
lambda and initial-weight seed; K = 1 is an ordinary run. The population's
first layer is one (K·M, D) matrix, so every update is two large matrix
products however many networks train.

The ``train`` command (:mod:`clrsearch.cli.train`) runs one network through
this loop; studies run populations of many.
"""

import time
from dataclasses import dataclass, field

import numpy as np

from ..config import TrainConfig, check_lam
from ..errors import UsageError
from . import network
from .schedule import cyclic_lr

METRICS = ("train_loss", "train_cost", "train_accuracy", "val_loss", "val_cost", "val_accuracy")

# The first-layer weights of member k are scale[k] * V1[k]: weight decay then
# multiplies one number per member instead of sweeping (K, M, D) every step.
# Below this scale the factor is folded back into V1.
_MIN_SCALE = 1e-4
_GRADIENT_BLOCK_BYTES = 2**22  # first-layer gradient rows computed and applied at once
_EVAL_ELEMENTS = 2**24  # hidden activations held at once while evaluating: (K, M, columns)


@dataclass
class History:
    """Learning curves of a population.

    Attributes
    ----------
    steps : (P,) int, update step of each evaluation point (0 = before training)
    epochs : (P,) float, the same points in epochs
    metrics : dict name -> (P, K) float, for the names in ``METRICS``;
        NaN once a member has stopped
    eta : (T,) float, learning rate of every update step
    batches_per_epoch : int
    """

    steps: np.ndarray
    epochs: np.ndarray
    metrics: dict
    eta: np.ndarray
    batches_per_epoch: int

    def final(self, name):
        """(K,) last finite value of metric ``name`` for each member."""
        values = self.metrics[name]
        out = np.full(values.shape[1], np.nan)
        for k in range(values.shape[1]):
            finite = np.flatnonzero(np.isfinite(values[:, k]))
            if finite.size:
                out[k] = values[finite[-1], k]
        return out


@dataclass(frozen=True)
class EvalPoint:
    """What an ``on_eval`` callback sees at one evaluation point.

    ``metrics`` holds (K,) arrays over the whole population (NaN for stopped
    members); ``active`` the indices of the members still training.
    """

    step: int
    epoch: float
    cycle_end: bool
    metrics: dict
    active: tuple


@dataclass
class TrainResult:
    """Final networks (leading axis K), curves, and how each member ended.

    ``status[k]`` is "finished", "diverged" (NaN or inf appeared) or
    "stopped" (an ``on_eval`` callback stopped it, e.g. pruning), and
    ``stopped_at[k]`` the update step where it ended. ``snapshots`` holds the
    population at the end of every cycle when the config asks for them.
    """

    params: dict
    history: History
    lams: np.ndarray
    seeds: tuple
    status: list
    stopped_at: list
    snapshots: list = field(default_factory=list)
    eval_seconds: float = 0.0


def train(train_set, val_set, config: TrainConfig, lams, seeds, *, on_eval=None, progress=None):
    """Train K networks, member k with lambda ``lams[k]`` and init seed ``seeds[k]``.

    Parameters
    ----------
    train_set, val_set : objects with ``X`` (D, N), ``Y`` (C, N) one-hot and ``y`` (N,)
    config : TrainConfig
    lams : sequence of K floats >= 0
    seeds : sequence of K ints
    on_eval : callable(EvalPoint) -> iterable of member indices to stop, or None
    progress : object with ``update(n_steps)`` (e.g. tqdm), or None

    Returns
    -------
    TrainResult
    """
    lams = np.asarray(lams, dtype=np.float64).reshape(-1)
    seeds = tuple(int(s) for s in seeds)
    if lams.size != len(seeds) or not seeds:
        raise UsageError(f"need one lambda per seed, got {lams.size} lambdas and {len(seeds)} seeds")
    for lam in lams:
        check_lam(float(lam))
    n_train = train_set.X.shape[1]
    if config.n_batch > n_train:
        raise UsageError(f"n_batch ({config.n_batch}) is larger than the training set ({n_train} images)")

    dtype = np.dtype(config.dtype)
    X = np.asfortranarray(train_set.X, dtype=dtype)  # (D, N), one image per contiguous column
    Y = np.asarray(train_set.Y, dtype=dtype)  # (C, N)
    eval_sets = _eval_sets(train_set, val_set, config, dtype)
    D, C = X.shape[0], Y.shape[0]

    population = _Population(network.init_population(D, config.hidden, C, seeds, dtype), lams, config.n_batch)
    batches_per_epoch = n_train // config.n_batch
    total = config.total_steps
    eta = cyclic_lr(np.arange(total), config.eta_min, config.eta_max, config.n_s, config.clr_mode, config.gamma)
    eval_steps = _evaluation_steps(config, batches_per_epoch)
    cycle_ends = set(range(2 * config.n_s, total + 1, 2 * config.n_s))
    recorder = _Recorder(len(seeds), batches_per_epoch)
    snapshots = []
    eval_seconds = 0.0

    def evaluate(step):
        nonlocal eval_seconds
        started = time.perf_counter()
        params = population.params()
        metrics = _evaluate(params, eval_sets, lams[population.members])
        eval_seconds += time.perf_counter() - started
        point = recorder.record(step, step in cycle_ends, population.members, metrics)
        population.stop(population.nonfinite(metrics), step, "diverged")
        if config.snapshots and step in cycle_ends:
            snapshots.append(population.full_params())
        if on_eval is not None:
            population.stop(on_eval(point) or (), step, "stopped")

    rng = np.random.default_rng(config.shuffle_seed)
    XT = X.T  # (N, D) C-order view of the same memory: gathering rows is contiguous
    batch_T = np.empty((config.n_batch, D), dtype)  # (B, D)
    step = 0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # divergence is detected, not warned
        evaluate(0)
        while step < total and population.members:
            order = rng.permutation(n_train)
            for b in range(min(batches_per_epoch, total - step)):
                idx = order[b * config.n_batch:(b + 1) * config.n_batch]
                np.take(XT, idx, axis=0, out=batch_T, mode="clip")  # indices come from a permutation; clip avoids a buffered copy
                population.step(batch_T.T, Y[:, idx], eta[step])  # (D, B), (C, B)
                step += 1
                population.stop(population.diverged(), step, "diverged")
                if progress is not None:
                    progress.update(1)
                if step in eval_steps and population.members:
                    evaluate(step)
                if not population.members:
                    break

    history = History(recorder.steps_array(), recorder.epochs_array(), recorder.metrics_arrays(), eta,
                      batches_per_epoch)
    return TrainResult(population.full_params(), history, lams, seeds, population.status,
                       population.stopped_at, snapshots, eval_seconds)


class _Population:
    """Parameters of the members still training, and the fused update step.

    The step is ``params - eta * network.gradients(params, X, Y, lam)`` computed
    with two large matrix products and one pass over W1; the second product is
    made and subtracted a few MB of rows at a time, while they are in the cache.
    """

    def __init__(self, params, lams, n_batch):
        K = lams.size
        self.V1 = np.ascontiguousarray(params["W1"])  # (K, M, D); W1 = scale * V1
        self.scale = np.ones(K)  # (K,)
        self.b1, self.W2, self.b2 = params["b1"], params["W2"], params["b2"]  # (K, M, 1), (K, C, M), (K, C, 1)
        self.lams = lams  # (K,) of the whole population
        self.members = list(range(K))  # original indices of the rows above
        self._lam = lams.copy()  # (K,) lambdas of the rows above
        self.status = ["finished"] * K
        self.stopped_at = [None] * K
        self._final = {}  # member -> params at the moment it stopped
        K, M, D = self.V1.shape
        C = self.W2.shape[1]
        dtype = self.V1.dtype
        self._H = np.empty((K * M, n_batch), dtype)  # (K·M, B)
        self._S2 = np.empty((K, C, n_batch), dtype)
        self._G1 = np.empty((K, M, n_batch), dtype)
        self._active = np.empty((K, M, n_batch), bool)
        self._block_rows = max(1, _GRADIENT_BLOCK_BYTES // (D * dtype.itemsize))
        self._dV1 = np.empty((min(K * M, self._block_rows), D), dtype)  # (rows, D)

    def step(self, Xb, Yb, eta):
        """One update of every member on the mini-batch Xb (D, B), Yb (C, B)."""
        K, M, D = self.V1.shape
        B = Xb.shape[1]
        eta = float(eta)
        dtype = self.V1.dtype
        H = np.matmul(self.V1.reshape(K * M, D), Xb, out=self._H[:K * M]).reshape(K, M, B)  # V1 X
        H *= self.scale.astype(dtype)[:, None, None]  # W1 X
        H += self.b1
        np.maximum(H, 0, out=H)  # (K, M, B) hidden activations
        S2 = np.matmul(self.W2, H, out=self._S2[:K])  # (K, C, B)
        S2 += self.b2
        G = network.softmax(S2, out=S2)  # (K, C, B), probabilities P
        G -= Yb
        G *= 1.0 / B  # dJ/dS2
        G1 = np.matmul(np.swapaxes(self.W2, 1, 2), G, out=self._G1[:K])  # (K, M, B)
        G1 *= np.greater(H, 0, out=self._active[:K])
        decay = 1.0 - 2.0 * eta * self._lam  # (K,)

        self.b1 -= eta * G1.sum(axis=2, keepdims=True)
        self.b2 -= eta * G.sum(axis=2, keepdims=True)
        self.W2 *= decay.astype(dtype)[:, None, None]
        self.W2 -= eta * (G @ np.swapaxes(H, 1, 2))  # (K, C, M)

        new_scale = self.scale * decay
        for k in np.flatnonzero(np.abs(new_scale) < _MIN_SCALE):
            self.V1[k] *= new_scale[k]
            new_scale[k] = 1.0
        self.scale = new_scale
        G1 *= (eta / new_scale).astype(dtype)[:, None, None]
        self._subtract_gradient(G1.reshape(K * M, B), Xb)

    def _subtract_gradient(self, G1, Xb):
        """V1 -= G1 Xbᵀ, in blocks of rows whose gradient stays in the cache.

        G1 : (K·M, B), Xb : (D, B)
        """
        V1 = self.V1.reshape(-1, Xb.shape[0])  # (K·M, D)
        rows = V1.shape[0]
        blocks = -(-rows // self._block_rows)
        size = -(-rows // blocks)  # equal blocks: no small remainder
        for start in range(0, rows, size):
            stop = min(start + size, rows)
            dV1 = np.matmul(G1[start:stop], Xb.T, out=self._dV1[:stop - start])  # (rows, D)
            V1[start:stop] -= dV1

    def params(self):
        """The active members as network parameters (folds the W1 scale in)."""
        self.V1 *= self.scale.astype(self.V1.dtype)[:, None, None]
        self.scale = np.ones_like(self.scale)
        return {"W1": self.V1, "b1": self.b1, "W2": self.W2, "b2": self.b2}

    def diverged(self):
        """Indices of active members whose parameters hold NaN or inf.

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
        return [self.members[i] for i in np.flatnonzero(bad)]

    def nonfinite(self, metrics):
        """Indices of active members whose evaluated cost is NaN or inf."""
        bad = np.zeros(len(self.members), bool)
        for name, values in metrics.items():
            if name.endswith("_cost"):
                bad |= ~np.isfinite(values)
        return [self.members[i] for i in np.flatnonzero(bad)]

    def stop(self, members, step, reason):
        """Take ``members`` (original indices) out of training."""
        members = [m for m in members if m in self.members]
        if not members:
            return
        params = self.params()
        for m in members:
            self._final[m] = network.member(params, self.members.index(m))
            self.status[m] = reason
            self.stopped_at[m] = step
        keep = [i for i, m in enumerate(self.members) if m not in members]
        self.V1, self.b1, self.W2, self.b2 = (a[keep] for a in (self.V1, self.b1, self.W2, self.b2))
        self.scale = self.scale[keep]
        self.members = [self.members[i] for i in keep]
        self._lam = self.lams[self.members]

    def full_params(self):
        """All K members, stopped ones as they were when they stopped (copies)."""
        params = self.params()
        nets = {m: network.member(params, i) for i, m in enumerate(self.members)}
        nets.update(self._final)
        return network.stack([nets[m] for m in range(len(self.status))])


def _eval_sets(train_set, val_set, config, dtype):
    """(name, X (D, n), Y (C, n), y (n,)) for the curves; the training curve may use a subset."""
    n = train_set.X.shape[1] if config.eval_train_size is None else min(config.eval_train_size, train_set.X.shape[1])
    sets = [("train", train_set.X[:, :n], train_set.Y[:, :n], train_set.y[:n])]
    if val_set is not None:
        sets.append(("val", val_set.X, val_set.Y, val_set.y))
    return [(name, np.asarray(X, dtype=dtype), np.asarray(Y, dtype=dtype), np.asarray(y)) for name, X, Y, y in sets]


def _evaluate(params, eval_sets, lams):
    """Loss, cost and accuracy of every member on each evaluation set; (K,) arrays."""
    K, M, _ = params["W1"].shape
    norm = network.weight_norm(params)  # (K,)
    metrics = {}
    for name, X, Y, y in eval_sets:
        n = X.shape[1]
        chunk = max(1, _EVAL_ELEMENTS // (K * M))
        log_loss = np.zeros(K)
        correct = np.zeros(K)
        for start in range(0, n, chunk):
            P = network.forward(params, X[:, start:start + chunk])  # (K, C, n_chunk)
            log_loss += network.cross_entropy(P, Y[:, start:start + chunk]) * P.shape[-1]
            correct += np.sum(np.argmax(P, axis=1) == y[start:start + chunk], axis=-1)
        metrics[f"{name}_loss"] = log_loss / n
        metrics[f"{name}_cost"] = log_loss / n + lams * norm
        metrics[f"{name}_accuracy"] = correct / n
    return metrics


def _evaluation_steps(config, batches_per_epoch):
    """Update steps after which the curves are measured; always the cycle ends and the last step."""
    total = config.total_steps
    if config.evals_per_cycle is None:
        steps = set(range(batches_per_epoch, total, batches_per_epoch))
    else:
        cycle = 2 * config.n_s
        steps = {round(j * cycle / config.evals_per_cycle) for j in range(1, config.evals_per_cycle * config.cycles)}
    steps |= set(range(2 * config.n_s, total + 1, 2 * config.n_s)) | {total}
    return {s for s in steps if 0 < s <= total}


class _Recorder:
    """Collects the evaluation points into (P, K) arrays, NaN for stopped members."""

    def __init__(self, K, batches_per_epoch):
        self.K = K
        self.batches_per_epoch = batches_per_epoch
        self.steps = []
        self.rows = {name: [] for name in METRICS}

    def record(self, step, cycle_end, members, metrics):
        full = {}
        for name in METRICS:
            row = np.full(self.K, np.nan)
            if name in metrics:
                row[members] = metrics[name]
            self.rows[name].append(row)
            full[name] = row
        self.steps.append(step)
        return EvalPoint(step, step / self.batches_per_epoch, cycle_end, full, tuple(members))

    def steps_array(self):
        return np.asarray(self.steps, dtype=np.int64)

    def epochs_array(self):
        return self.steps_array() / self.batches_per_epoch

    def metrics_arrays(self):
        return {name: np.asarray(rows).reshape(-1, self.K) for name, rows in self.rows.items()}

