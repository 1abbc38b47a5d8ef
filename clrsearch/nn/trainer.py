"""Mini-batch gradient descent under a cyclical learning rate, for a population.

K networks train side by side on the same mini-batch order, each with its own
lambda and initial-weight seed; K = 1 is an ordinary run. The population's
first layer is one (K·M, D) matrix, so every update is two large matrix
products however many networks train.

Members may also follow schedules of their own (one TrainConfig each, equal
but for the fields in ``SCHEDULE_FIELDS``): each member updates with its own
learning rate, and a member leaves the population at its own last step. They
may also differ in ``shuffle_seed``: the members of one seed form a *stream*
that sees its own mini-batch order, its rows of the first layer multiplied by
its own mini-batch (one product per stream instead of one for all). A member
trains exactly as it would in a population of its stream alone. With
``augment="flip"`` each image of a mini-batch is mirrored left-right with
probability 1/2 (the flips belong to the stream's order).

The ``train`` command (:mod:`clrsearch.cli.train`) runs one network through
this loop; studies run populations of many.
"""

import time
from dataclasses import dataclass, field, fields, replace

import numpy as np

from ..config import TrainConfig, check_lam
from ..errors import UsageError
from . import network
from .schedule import cyclic_lr
from .threads import MemberThreads

METRICS = ("train_loss", "train_cost", "train_accuracy", "val_loss", "val_cost", "val_accuracy")
# The TrainConfig fields in which the members of one population may differ; all others are shared.
SCHEDULE_FIELDS = ("n_s", "cycles", "eta_min", "eta_max", "clr_mode", "gamma", "max_steps", "evals_per_cycle")
STREAM_FIELD = "shuffle_seed"  # members may also differ here: each seed is a stream of mini-batches of its own
# A CIFAR-10 row: 1024 red, then 1024 green, then 1024 blue values, each channel row-major.
IMAGE_SHAPE = (3, 32, 32)

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
    eta : (T,) float, learning rate of every update step of the one schedule; with one
        schedule per member (T_max, K), NaN after member k's last step (see ``eta_of``)
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

    def eta_of(self, k):
        """(T_k,) learning rate of every update step of member k's schedule."""
        if self.eta.ndim == 1:
            return self.eta
        column = self.eta[:, k]  # (T_max,)
        return column[~np.isnan(column)]


@dataclass(frozen=True)
class EvalPoint:
    """What an ``on_eval`` callback sees at one evaluation point.

    ``metrics`` holds (K,) arrays over the whole population (NaN for stopped
    members); ``active`` the indices of the members still training, evaluated
    here. ``cycle_end`` is true where the schedule of some member ends a
    cycle, and ``cycle_end_members`` lists the active members whose cycle ends
    here (all active members at a cycle end of a single schedule).
    """

    step: int
    epoch: float
    cycle_end: bool
    metrics: dict
    active: tuple
    cycle_end_members: tuple = ()


@dataclass
class TrainResult:
    """Final networks (leading axis K), curves, and how each member ended.

    ``status[k]`` is "finished", "diverged" (NaN or inf appeared) or
    "stopped" (an ``on_eval`` callback stopped it, e.g. pruning), and
    ``stopped_at[k]`` the update step where it ended: None for a member that
    finished a single schedule, its own last step for one that finished one of
    several schedules.

    ``snapshots``, when the config asks for them: for a single schedule, the
    whole population (leading axis K, stopped members as they stopped) at
    every cycle end; for one schedule per member, K lists, ``snapshots[k][c]``
    member k's network (no leading axis) at the end of its cycle c + 1, taken
    while it was still training.
    """

    params: dict
    history: History
    lams: np.ndarray
    seeds: tuple
    status: list
    stopped_at: list
    snapshots: list = field(default_factory=list)
    eval_seconds: float = 0.0


def train(train_set, val_set, config, lams, seeds, *, on_eval=None, progress=None):
    """Train K networks, member k with lambda ``lams[k]`` and init seed ``seeds[k]``.

    Parameters
    ----------
    train_set, val_set : objects with ``X`` (D, N), ``Y`` (C, N) one-hot and ``y`` (N,)
    config : TrainConfig, or a sequence of K TrainConfigs, one per member, that
        differ only in the fields of ``SCHEDULE_FIELDS``
    lams : sequence of K floats >= 0
    seeds : sequence of K ints
    on_eval : callable(EvalPoint) -> iterable of member indices to stop, or None
    progress : object with ``update(n_steps)`` (e.g. tqdm), or None; when it also has
        ``cores()`` (see :mod:`clrsearch.search.cores`), the update steps and
        evaluations are split over that many threads (:mod:`.threads`)

    Returns
    -------
    TrainResult

    Notes
    -----
    With one config per member, member k updates with its own learning rate
    and stops as "finished" after its own ``total_steps``; members of one
    ``shuffle_seed`` share the mini-batches of that seed, every step gathering
    one mini-batch per seed still training. The curves are measured at the
    union of the members' evaluation points, for every member still training;
    the population is done when its longest run is.
    """
    lams = np.asarray(lams, dtype=np.float64).reshape(-1)
    seeds = tuple(int(s) for s in seeds)
    if lams.size != len(seeds) or not seeds:
        raise UsageError(f"need one lambda per seed, got {lams.size} lambdas and {len(seeds)} seeds")
    for lam in lams:
        check_lam(float(lam))
    n_train = train_set.X.shape[1]
    schedule = _member_configs(config, len(seeds))  # one TrainConfig, or a list of one per member
    config = schedule if isinstance(schedule, TrainConfig) else schedule[0]  # the shared fields
    streams = _Streams.of(schedule, len(seeds))
    schedule = _one_schedule(schedule)
    config.check_fits(n_train)

    dtype = np.dtype(config.dtype)
    X = np.asfortranarray(train_set.X, dtype=dtype)  # (D, N), one image per contiguous column
    Y = np.asarray(train_set.Y, dtype=dtype)  # (C, N)
    D, C = X.shape[0], Y.shape[0]
    if config.augment == "flip" and D != np.prod(IMAGE_SHAPE):
        raise UsageError(f"augment='flip' mirrors CIFAR-10 images of {np.prod(IMAGE_SHAPE)} values, not {D}")
    eval_sets = _eval_sets(train_set, val_set, config, dtype)

    population = _Population(network.init_population(D, config.hidden, C, seeds, dtype), lams, config.n_batch,
                             streams)
    batches_per_epoch = n_train // config.n_batch
    plan = _Plan.of(schedule, len(seeds), batches_per_epoch)
    recorder = _Recorder(len(seeds), batches_per_epoch)
    snapshots = [[] for _ in seeds] if plan.mixed else []
    eval_seconds = 0.0

    def evaluate(step):
        nonlocal eval_seconds
        started = time.perf_counter()
        params = population.params()
        if step == 0:  # members of one init seed start as one network: evaluate each network once
            metrics = _evaluate_initial(params, eval_sets, lams[population.members],
                                        [seeds[m] for m in population.members], threads)
        else:
            metrics = _evaluate(params, eval_sets, lams[population.members], threads)
        eval_seconds += time.perf_counter() - started
        ending = plan.cycle_ends.get(step, ())
        point = recorder.record(step, step in plan.cycle_ends, population.members, metrics,
                                tuple(m for m in population.members if m in ending))
        population.stop(population.nonfinite(metrics), step, "diverged")
        if config.snapshots and point.cycle_end:
            _take_snapshots(snapshots, population, point.cycle_end_members, plan.mixed)
        if on_eval is not None:
            population.stop(on_eval(point) or (), step, "stopped")

    batches = [_mini_batches(X, Y, replace(config, shuffle_seed=seed)) for seed in streams.seeds]
    step = 0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"), \
            MemberThreads(getattr(progress, "cores", None)) as threads:  # divergence is detected, not warned
        evaluate(0)
        coming = {s: next(batches[s]) for s in population.active_streams()}  # s -> (D, B), (C, B)
        while step < plan.total and population.members:
            mini_batches, coming = coming, {}
            population.step(mini_batches, plan.eta[step, population.members] if plan.mixed else plan.eta[step],
                            threads, then=_gather_next(batches, population.active_streams(), coming))
            step += 1
            population.stop(population.diverged(), step, "diverged")
            if progress is not None:
                progress.update(1)
            if step in plan.eval_steps and population.members:
                evaluate(step)
            population.stop(plan.last_steps.get(step, ()), step, "finished")

    history = History(recorder.steps_array(), recorder.epochs_array(), recorder.metrics_arrays(), plan.eta,
                      batches_per_epoch)
    return TrainResult(population.full_params(), history, lams, seeds, population.status,
                       population.stopped_at, snapshots, eval_seconds)


def flip_rows(rows, mask):
    """Mirror left-right, in place, the CIFAR-10 images of ``rows`` that ``mask`` selects.

    Parameters
    ----------
    rows : (B, D) C-contiguous array, each row an image of ``IMAGE_SHAPE`` (D = 3 * 32 * 32)
    mask : (B,) bool, the rows to mirror
    """
    if not rows.flags.c_contiguous:
        raise ValueError("flip_rows works in place on a C-contiguous (B, D) array")
    picked = np.flatnonzero(mask)
    lines = rows.reshape(rows.shape[0], -1, IMAGE_SHAPE[-1])  # (B, 3 * 32, 32) view: one image row per line
    lines[picked] = lines[picked, :, ::-1]


def _mini_batches(X, Y, config):
    """Endless mini-batches (D, B), (C, B) of X (D, N), Y (C, N): a new permutation every epoch.

    The order comes from ``shuffle_seed`` alone; the flips of ``augment="flip"`` from a
    generator of their own, so that augmenting leaves the order as it is. The batches
    (D, B) take turns in two buffers: one stays valid while the next one is gathered,
    and is overwritten by the one after.
    """
    n_train, B = X.shape[1], config.n_batch
    order_rng = np.random.default_rng(config.shuffle_seed)
    flip_rng = np.random.default_rng([config.shuffle_seed, 1]) if config.augment == "flip" else None
    XT = X.T  # (N, D) C-order view of the same memory: gathering rows is contiguous
    buffers = np.empty((2, B, X.shape[0]), X.dtype)  # (2, B, D)
    turn = 0
    while True:
        order = order_rng.permutation(n_train)
        for b in range(n_train // B):
            idx = order[b * B:(b + 1) * B]
            batch_T = buffers[turn]
            turn = 1 - turn
            np.take(XT, idx, axis=0, out=batch_T, mode="clip")  # indices come from a permutation; clip avoids a buffered copy
            if flip_rng is not None:
                flip_rows(batch_T, flip_rng.random(B) < 0.5)
            yield batch_T.T, Y[:, idx]


def _gather_next(batches, streams, coming):
    """``then`` of a step: slice i of n gathers the next mini-batches of streams i, i + n, ... into ``coming``
    once its update is done, while the other slices still update (see ``_mini_batches``: a batch stays valid
    while the next one is gathered)."""
    def gather(i, n):
        for s in streams[i::n]:
            coming[s] = next(batches[s])

    return gather


def _member_configs(config, K):
    """``config`` itself for one schedule, else the list of the K members' configs, checked.

    Raises UsageError unless ``config`` is a TrainConfig, or K TrainConfigs equal
    in every field outside ``SCHEDULE_FIELDS`` and ``STREAM_FIELD``.
    """
    if isinstance(config, TrainConfig):
        return config
    if not isinstance(config, (tuple, list)) or not all(isinstance(c, TrainConfig) for c in config):
        raise UsageError(f"config must be a TrainConfig or a sequence of TrainConfigs, not {type(config).__name__}")
    configs = list(config)
    if len(configs) != K:
        raise UsageError(f"need one TrainConfig per member, got {len(configs)} for {K} members")
    shared = [f.name for f in fields(TrainConfig) if f.name not in (*SCHEDULE_FIELDS, STREAM_FIELD)]
    for k, member_config in enumerate(configs):
        for name in shared:
            if getattr(member_config, name) != getattr(configs[0], name):
                raise UsageError(f"the members of a population may differ only in "
                                 f"{', '.join((*SCHEDULE_FIELDS, STREAM_FIELD))}; "
                                 f"member {k} has {name} = {getattr(member_config, name)!r}, "
                                 f"member 0 {getattr(configs[0], name)!r}")
    return configs


def _one_schedule(schedule):
    """One TrainConfig when the members' configs differ at most in their stream, else the list as it is."""
    if isinstance(schedule, TrainConfig):
        return schedule
    first = replace(schedule[0], shuffle_seed=0)
    return schedule[0] if all(replace(c, shuffle_seed=0) == first for c in schedule) else schedule


@dataclass(frozen=True)
class _Streams:
    """Which mini-batch stream each member sees: the distinct shuffle seeds, in order of first appearance."""

    seeds: tuple  # shuffle seed of stream s
    of_member: np.ndarray  # (K,) stream of member k
    rows: tuple  # the members in the order of the population's rows: stream by stream, stably

    @classmethod
    def of(cls, schedule, K):
        """The streams of one TrainConfig, of a list of K, or (None) of a single unnamed stream."""
        if schedule is None or isinstance(schedule, TrainConfig):
            member_seeds = [getattr(schedule, "shuffle_seed", 0)] * K
        else:
            member_seeds = [c.shuffle_seed for c in schedule]
        seeds = tuple(dict.fromkeys(member_seeds))
        of_member = np.array([seeds.index(seed) for seed in member_seeds], dtype=np.int64)
        return cls(seeds, of_member, tuple(int(k) for k in np.argsort(of_member, kind="stable")))


@dataclass(frozen=True)
class _Plan:
    """Where each member's run goes: its learning rates, last step, evaluation points and cycle ends.

    ``eta`` is (T,) for one schedule and (T_max, K) for one per member, NaN after
    a member's last step; ``last_steps`` maps a step to the members of several
    schedules whose run ends there (empty for one schedule: its members finish
    with the loop).
    """

    eta: np.ndarray  # (T,) or (T_max, K)
    total: int  # update steps of the longest run
    eval_steps: frozenset  # steps after which the curves are measured, for any member
    cycle_ends: dict  # step -> members whose cycle ends after it
    last_steps: dict  # step -> members whose run ends after it

    @property
    def mixed(self):
        return self.eta.ndim == 2

    @classmethod
    def of(cls, config, K, batches_per_epoch):
        """The plan of one TrainConfig for all K members, or of a list of K, one per member."""
        if isinstance(config, TrainConfig):
            total = config.total_steps
            eta = cyclic_lr(np.arange(total), config.eta_min, config.eta_max, config.n_s, config.clr_mode,
                            config.gamma)  # (T,)
            ends = {s: tuple(range(K)) for s in _cycle_ends(config)}
            return cls(eta, total, frozenset(_evaluation_steps(config, batches_per_epoch)), ends, {})
        total = max(c.total_steps for c in config)
        eta = np.full((total, K), np.nan)  # (T_max, K)
        eval_steps, ends, last_steps = set(), {}, {}
        for k, c in enumerate(config):
            eta[:c.total_steps, k] = cyclic_lr(np.arange(c.total_steps), c.eta_min, c.eta_max, c.n_s, c.clr_mode,
                                               c.gamma)
            eval_steps |= _evaluation_steps(c, batches_per_epoch)
            for s in _cycle_ends(c):
                ends[s] = ends.get(s, ()) + (k,)
            last_steps[c.total_steps] = last_steps.get(c.total_steps, ()) + (k,)
        return cls(eta, total, frozenset(eval_steps), ends, last_steps)


def _cycle_ends(config):
    """Update steps after which a cycle of ``config``'s schedule ends, within its run."""
    return range(2 * config.n_s, config.total_steps + 1, 2 * config.n_s)


def _take_snapshots(snapshots, population, members, mixed):
    """Append the networks at a cycle end: the population (one schedule), else each member to its own list."""
    if not mixed:
        snapshots.append(population.full_params())
        return
    params = population.params()
    for m in members:
        if m in population.members:  # not just stopped as diverged
            snapshots[m].append(network.member(params, population.members.index(m)))


class _Population:
    """Parameters of the members still training, and the fused update step.

    The step is ``params - eta * network.gradients(params, X, Y, lam)`` computed
    with two large matrix products and one pass over W1; the second product is
    made and subtracted a few MB of rows at a time, while they are in the cache.
    """

    def __init__(self, params, lams, n_batch, streams=None):
        K = lams.size
        streams = streams or _Streams.of(None, K)
        rows = list(streams.rows)  # member of each row: the members of one stream are adjacent rows
        self.V1 = np.ascontiguousarray(params["W1"][rows])  # (K, M, D); W1 = scale * V1
        self.scale = np.ones(K)  # (K,)
        self.b1, self.W2, self.b2 = (params[name][rows] for name in ("b1", "W2", "b2"))  # (K, M, 1), (K, C, M), (K, C, 1)
        self.lams = lams  # (K,) of the whole population
        self.members = rows  # original indices of the rows above
        self._lam = lams[rows]  # (K,) lambdas of the rows above
        self._stream_of = streams.of_member  # (K,) stream of each original member
        self._runs = self._stream_runs()
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
        self._block_rows = min(K * M, max(1, _GRADIENT_BLOCK_BYTES // (D * dtype.itemsize)))
        self._dV1 = {}  # slice index -> (block rows, D) gradient buffer of that slice's thread

    def _stream_runs(self):
        """(stream, first row, last row + 1) of each stream's adjacent rows."""
        runs = []
        for row, m in enumerate(self.members):
            stream = int(self._stream_of[m])
            if runs and runs[-1][0] == stream:
                runs[-1][2] = row + 1
            else:
                runs.append([stream, row, row + 1])
        return [tuple(run) for run in runs]

    def active_streams(self):
        """The streams that still have members training."""
        return [stream for stream, _, _ in self._runs]

    def step(self, mini_batches, eta, threads=MemberThreads(), then=None):
        """One update of every member on its stream's mini-batch, the members cut into ``threads``' slices
        (by default one: this thread).

        ``mini_batches`` maps each active stream to its Xb (D, B), Yb (C, B);
        ``eta`` is one learning rate for all members, or a (K,) array of one per member;
        ``then(i, n)``, if given, runs on the thread of slice i of n once that slice is updated.
        """
        dtype = self.V1.dtype
        if np.ndim(eta) == 0:
            eta = rate = float(eta)
        else:
            eta = np.asarray(eta, dtype=np.float64)  # (K,)
            rate = eta.astype(dtype)[:, None, None]  # (K, 1, 1): rounded to dtype as a Python float would be
        slices = threads.slices(self.V1.shape[0])

        def update(i, start, stop):
            self._step_members(i, start, stop, mini_batches, (eta, rate))
            if then is not None:
                then(i, len(slices))

        threads.map_slices(update, slices)

    def _step_members(self, slice_index, a, b, mini_batches, rates):
        """The update of members a .. b - 1, in the population's row order (every array below holds only them).

        ``rates`` is (eta, rate): a float each, or (K,) float64 and (K, 1, 1) dtype arrays.
        """
        _, M, D = self.V1.shape
        K = b - a
        B = next(iter(mini_batches.values()))[0].shape[1]
        dtype = self.V1.dtype
        eta, rate = (r if np.ndim(r) == 0 else r[a:b] for r in rates)
        runs = [(stream, max(start, a) - a, min(stop, b) - a) for stream, start, stop in self._runs
                if start < b and stop > a]  # this slice's part of each stream, in its own member indices
        V1 = self.V1[a:b].reshape(K * M, D)
        H_rows = self._H[a * M:b * M]  # (K·M, B)
        for stream, start, stop in runs:  # V1 X, stream by stream
            np.matmul(V1[start * M:stop * M], mini_batches[stream][0], out=H_rows[start * M:stop * M])
        H = H_rows.reshape(K, M, B)
        scale = self.scale[a:b]
        H *= scale.astype(dtype)[:, None, None]  # W1 X
        H += self.b1[a:b]
        np.maximum(H, 0, out=H)  # (K, M, B) hidden activations
        W2 = self.W2[a:b]
        S2 = np.matmul(W2, H, out=self._S2[a:b])  # (K, C, B)
        S2 += self.b2[a:b]
        G = network.softmax(S2, out=S2)  # (K, C, B), probabilities P
        for stream, start, stop in runs:
            G[start:stop] -= mini_batches[stream][1]
        G *= 1.0 / B  # dJ/dS2
        G1 = np.matmul(np.swapaxes(W2, 1, 2), G, out=self._G1[a:b])  # (K, M, B)
        G1 *= np.greater(H, 0, out=self._active[a:b])
        decay = 1.0 - 2.0 * eta * self._lam[a:b]  # (K,)

        self.b1[a:b] -= rate * G1.sum(axis=2, keepdims=True)
        self.b2[a:b] -= rate * G.sum(axis=2, keepdims=True)
        W2 *= decay.astype(dtype)[:, None, None]
        W2 -= rate * (G @ np.swapaxes(H, 1, 2))  # (K, C, M)

        new_scale = scale * decay
        for k in np.flatnonzero(np.abs(new_scale) < _MIN_SCALE):
            self.V1[a + k] *= new_scale[k]
            new_scale[k] = 1.0
        scale[:] = new_scale
        G1 *= (eta / new_scale).astype(dtype)[:, None, None]
        G1 = G1.reshape(K * M, B)
        dV1 = self._gradient_buffer(slice_index)
        for stream, start, stop in runs:
            rows = slice(start * M, stop * M)
            _subtract_gradient(V1[rows], G1[rows], mini_batches[stream][0], dV1)

    def _gradient_buffer(self, slice_index):
        """The (rows, D) buffer of one slice's gradient blocks, made on first use."""
        if slice_index not in self._dV1:
            self._dV1[slice_index] = np.empty((self._block_rows, self.V1.shape[2]), self.V1.dtype)
        return self._dV1[slice_index]

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
        self._runs = self._stream_runs()

    def full_params(self):
        """All K members, stopped ones as they were when they stopped (copies)."""
        params = self.params()
        nets = {m: network.member(params, i) for i, m in enumerate(self.members)}
        nets.update(self._final)
        return network.stack([nets[m] for m in range(len(self.status))])


def _subtract_gradient(V1, G1, Xb, dV1):
    """V1 -= G1 Xbᵀ, in blocks of rows whose gradient stays in the cache.

    V1 : (rows, D), G1 : (rows, B), Xb : (D, B), dV1 : (block rows, D) buffer
    """
    rows = V1.shape[0]
    blocks = -(-rows // dV1.shape[0])
    size = -(-rows // blocks)  # equal blocks: no small remainder
    for start in range(0, rows, size):
        stop = min(start + size, rows)
        gradient = np.matmul(G1[start:stop], Xb.T, out=dV1[:stop - start])  # (rows, D)
        V1[start:stop] -= gradient


def _eval_sets(train_set, val_set, config, dtype):
    """(name, X (D, n), Y (C, n), y (n,)) for the curves; the training curve may use a subset."""
    n = train_set.X.shape[1] if config.eval_train_size is None else min(config.eval_train_size, train_set.X.shape[1])
    sets = [("train", train_set.X[:, :n], train_set.Y[:, :n], train_set.y[:n])]
    if val_set is not None:
        sets.append(("val", val_set.X, val_set.Y, val_set.y))
    return [(name, np.asarray(X, dtype=dtype), np.asarray(Y, dtype=dtype), np.asarray(y)) for name, X, Y, y in sets]


def _evaluate(params, eval_sets, lams, threads, chunk=None):
    """Loss, cost and accuracy of every member on each evaluation set; (K,) arrays.

    The members are evaluated in ``threads``' slices, each in column chunks
    sized for the whole population (``chunk`` columns, by default those of
    ``params``' K), so that the slicing changes no sum.
    """
    K, M, _ = params["W1"].shape
    chunk = chunk or max(1, _EVAL_ELEMENTS // (K * M))  # columns evaluated at once

    def evaluate_rows(_, a, b):
        rows = {name: value[a:b] for name, value in params.items()}
        return _evaluate_rows(rows, eval_sets, lams[a:b], chunk)

    parts = threads.map(evaluate_rows, K)
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _evaluate_initial(params, eval_sets, lams, seeds, threads):
    """``_evaluate`` before the first step, each distinct initial network (one per seed) evaluated once."""
    _, first, of_member = np.unique(np.asarray(seeds), return_index=True, return_inverse=True)  # (S,), (K,)
    K, M, _ = params["W1"].shape
    distinct = _evaluate({name: value[first] for name, value in params.items()}, eval_sets, np.zeros(first.size),
                         threads, chunk=max(1, _EVAL_ELEMENTS // (K * M)))  # chunks of the whole population's
    metrics = {name: values[of_member] for name, values in distinct.items()}
    norm = network.weight_norm(params)  # (K,)
    for name, _, _, _ in eval_sets:
        metrics[f"{name}_cost"] = metrics[f"{name}_loss"] + lams * norm
    return metrics


def _evaluate_rows(params, eval_sets, lams, chunk):
    """``_evaluate`` of the members in ``params``, ``chunk`` columns at a time."""
    K = params["W1"].shape[0]
    norm = network.weight_norm(params)  # (K,)
    metrics = {}
    for name, X, Y, y in eval_sets:
        n = X.shape[1]
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

    def record(self, step, cycle_end, members, metrics, cycle_end_members):
        full = {}
        for name in METRICS:
            row = np.full(self.K, np.nan)
            if name in metrics:
                row[members] = metrics[name]
            self.rows[name].append(row)
            full[name] = row
        self.steps.append(step)
        return EvalPoint(step, step / self.batches_per_epoch, cycle_end, full, tuple(sorted(members)),
                         tuple(sorted(cycle_end_members)))

    def steps_array(self):
        return np.asarray(self.steps, dtype=np.int64)

    def epochs_array(self):
        return self.steps_array() / self.batches_per_epoch

    def metrics_arrays(self):
        return {name: np.asarray(rows).reshape(-1, self.K) for name, rows in self.rows.items()}

