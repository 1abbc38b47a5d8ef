"""Mini-batch gradient descent under a cyclical learning rate, for a population.

K networks train side by side on the same mini-batch order, each with its own
lambda and initial-weight seed; K = 1 is an ordinary run. Every update step is
W <- W - eta dJ/dW for all members at once (:mod:`.step`).

Members may also follow schedules of their own (one TrainConfig each, equal
but for the fields in ``SCHEDULE_FIELDS``): each member updates with its own
learning rate, and a member leaves the population at its own last step. They
may also differ in ``shuffle_seed``: the members of one seed form a *stream*
that sees its own mini-batch order. A member trains exactly as it would in a
population of its stream alone. With ``augment="flip"`` each image of a
mini-batch is mirrored left-right with probability 1/2 (the flips belong to
the stream's order).

Each stream may also have images of its own (``data`` as a dict shuffle seed
-> TrainingData): it trains on its own training set and each member's curves
are measured on its stream's sets. A set may be a subset of a shared array by
column index (an object with ``source`` and ``index``, e.g.
:class:`clrsearch.data.Subset`): its images are gathered per mini-batch and
per evaluation chunk, with the values a copied array would hold.
"""

import time
from dataclasses import dataclass, field, fields

import numpy as np

from ..config import TrainConfig, check_lam
from ..errors import UsageError
from . import network
from .schedule import cyclic_lr
from .step import Population
from .threads import MemberThreads

METRICS = ("train_loss", "train_cost", "train_accuracy", "val_loss", "val_cost", "val_accuracy")
# The TrainConfig fields in which the members of one population may differ; all others are shared.
SCHEDULE_FIELDS = ("n_s", "cycles", "eta_min", "eta_max", "clr_mode", "gamma", "max_steps", "evals_per_cycle")
STREAM_FIELD = "shuffle_seed"  # members may also differ here: each seed is a stream of mini-batches of its own
# A CIFAR-10 row: 1024 red, then 1024 green, then 1024 blue values, each channel row-major.
IMAGE_SHAPE = (3, 32, 32)
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
    eta : (T_max, K) float, learning rate of every update step of member k's schedule,
        NaN after its last step (see ``eta_of``)
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
    ``stopped_at[k]`` the update step where it ended (its last step for a
    member that finished).

    ``snapshots`` holds K lists, ``snapshots[k][c]`` member k's network (no
    leading axis) at the end of its cycle c + 1, taken while it was still
    training; empty unless the config asks for snapshots.
    """

    params: dict
    history: History
    lams: np.ndarray
    seeds: tuple
    status: list
    stopped_at: list
    snapshots: list = field(default_factory=list)
    eval_seconds: float = 0.0


@dataclass(frozen=True)
class TrainingData:
    """The images a population trains on, and those of its validation curves (a ``Splits`` serves too)."""

    train: object  # X (D, N), Y (C, N) one-hot, y (N,); or source (such a set) and index (N,): its columns index
    val: object = None  # the same, or None: no validation curves


def train(data, config, lams, seeds, *, on_eval=None, progress=None, threads=1):
    """Train K networks, member k with lambda ``lams[k]`` and init seed ``seeds[k]``.

    Parameters
    ----------
    data : TrainingData, or any object with its ``train`` and ``val``; or a dict
        shuffle seed -> such an object, the images of each stream (equal training set sizes)
    config : TrainConfig, or a sequence of K TrainConfigs, one per member, that
        differ only in the fields of ``SCHEDULE_FIELDS`` and ``STREAM_FIELD``
    lams : sequence of K floats >= 0
    seeds : sequence of K ints
    on_eval : callable(EvalPoint) -> iterable of member indices to stop, or None
    progress : object with ``update(n_steps)`` (e.g. tqdm), or None
    threads : int, or callable() -> int asked before every step and evaluation:
        the members are cut into that many slices, one thread each (:mod:`.threads`)

    Returns
    -------
    TrainResult

    Notes
    -----
    Member k updates with its own learning rate and stops as "finished" after
    its own ``total_steps``; members of one ``shuffle_seed`` share the
    mini-batches of that seed. The curves are measured at the union of the
    members' evaluation points, for every member still training; the
    population is done when its longest run is.
    """
    lams = np.asarray(lams, dtype=np.float64).reshape(-1)  # (K,)
    seeds = tuple(int(s) for s in seeds)
    if lams.size != len(seeds) or not seeds:
        raise UsageError(f"need one lambda per seed, got {lams.size} lambdas and {len(seeds)} seeds")
    for lam in lams:
        check_lam(float(lam))
    K = len(seeds)
    configs = _member_configs(config, K)
    config = configs[0]  # the fields all members share
    dtype = np.dtype(config.dtype)
    streams = _Streams.of(configs)
    stream_data = _stream_data(data, streams.seeds)  # TrainingData of stream s
    arrays = _Arrays(dtype)
    trains = [arrays.of(d.train) for d in stream_data]  # (X (D, N_all), Y (C, N_all), y, index or None) per stream
    n_train = _training_size(trains)
    config.check_fits(n_train)
    D = trains[0][0].shape[0]
    if config.augment == "flip" and D != np.prod(IMAGE_SHAPE):
        raise UsageError(f"augment='flip' mirrors CIFAR-10 images of {np.prod(IMAGE_SHAPE)} values, not {D}")
    by_data = {}  # id of a stream's data -> its evaluation sets, built once for the streams that share them
    eval_sets = [by_data.setdefault(id(d), _eval_sets(train_set, None if d.val is None else arrays.of(d.val), config))
                 for train_set, d in zip(trains, stream_data)]  # per stream
    batches_per_epoch = n_train // config.n_batch
    plan = _Plan.of(configs, batches_per_epoch)
    batches = [_mini_batches(X, Y, config.n_batch, seed, config.augment, index)
               for (X, Y, _, index), seed in zip(trains, streams.seeds)]
    members = _Members(network.init_population(D, config.hidden, trains[0][1].shape[0], seeds, dtype), lams, streams)
    recorder = _Recorder(K, batches_per_epoch)
    snapshots = [[] for _ in seeds]  # member k's networks at its cycle ends, when the config asks for them
    eval_seconds = 0.0

    def evaluate(step):
        nonlocal eval_seconds
        started = time.perf_counter()
        members.population.fold_scale()
        params, active = members.population.params(), members.active
        metrics = _evaluate_streams(params, eval_sets, members.population.streams, lams[active],
                                    [seeds[m] for m in active] if step == 0 else None, slices)
        eval_seconds += time.perf_counter() - started
        point = recorder.record(step, step in plan.cycle_ends, active, metrics,
                                [m for m in plan.cycle_ends.get(step, ()) if m in active])
        members.stop(members.nonfinite(metrics), step, "diverged")
        if config.snapshots:
            params = members.population.params()
            for m in point.cycle_end_members:
                if m in members.active:  # not just stopped as diverged
                    snapshots[m].append(network.member(params, members.active.index(m)))
        if on_eval is not None:
            members.stop(on_eval(point) or (), step, "stopped")

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"), \
            MemberThreads(threads if callable(threads) else lambda: threads) as slices:  # divergence is detected
        evaluate(0)
        for step in range(1, plan.total + 1):
            if not members.active:
                break
            mini_batches = {s: next(batches[s]) for s in members.streams()}  # s -> (D, B), (C, B)
            # forward, gradients and W <- W - eta dJ/dW for every member still training
            members.population.step(mini_batches, plan.eta[step - 1, members.active], slices)
            members.stop(members.diverged(), step, "diverged")
            if progress is not None:
                progress.update(1)
            if step in plan.eval_steps and members.active:
                evaluate(step)
            members.stop(plan.last_steps.get(step, ()), step, "finished")

    history = History(recorder.steps_array(), recorder.epochs_array(), recorder.metrics_arrays(), plan.eta,
                      batches_per_epoch)
    return TrainResult(members.full_params(), history, lams, seeds, members.status, members.stopped_at, snapshots,
                       eval_seconds)


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


def _mini_batches(X, Y, n_batch, shuffle_seed, augment, index=None):
    """Endless mini-batches (D, B), (C, B) of X (D, N), Y (C, N): a new permutation every epoch.

    The order comes from ``shuffle_seed`` alone; the flips of ``augment="flip"`` from a
    generator of their own, so that augmenting leaves the order as it is. With ``index``
    (N,) the training set is the columns ``index`` of X, Y, the order one over them.
    """
    n_train, B = (X.shape[1] if index is None else index.shape[0]), n_batch
    order_rng = np.random.default_rng(shuffle_seed)
    flip_rng = np.random.default_rng([shuffle_seed, 1]) if augment == "flip" else None
    XT = X.T  # (N, D) C-order view of the same memory: gathering rows is contiguous
    while True:
        order = order_rng.permutation(n_train)
        for b in range(n_train // B):
            idx = order[b * B:(b + 1) * B] if index is None else index[order[b * B:(b + 1) * B]]
            batch_T = np.take(XT, idx, axis=0)  # (B, D)
            if flip_rng is not None:
                flip_rows(batch_T, flip_rng.random(B) < 0.5)
            yield batch_T.T, Y[:, idx]


def _member_configs(config, K):
    """The list of the K members' configs (``config`` K times for one TrainConfig), checked.

    Raises UsageError unless ``config`` is a TrainConfig, or K TrainConfigs equal
    in every field outside ``SCHEDULE_FIELDS`` and ``STREAM_FIELD``.
    """
    if isinstance(config, TrainConfig):
        return [config] * K
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




@dataclass(frozen=True)
class _Streams:
    """Which mini-batch stream each member sees: the distinct shuffle seeds, in order of first appearance."""

    seeds: tuple  # shuffle seed of stream s
    of_member: np.ndarray  # (K,) stream of member k
    rows: tuple  # the members in the order of the population's rows: stream by stream, stably

    @classmethod
    def of(cls, configs):
        member_seeds = [c.shuffle_seed for c in configs]
        seeds = tuple(dict.fromkeys(member_seeds))
        of_member = np.array([seeds.index(seed) for seed in member_seeds], dtype=np.int64)
        return cls(seeds, of_member, tuple(int(k) for k in np.argsort(of_member, kind="stable")))


@dataclass(frozen=True)
class _Plan:
    """Where each member's run goes: its learning rates, last step, evaluation points and cycle ends."""

    eta: np.ndarray  # (T_max, K), NaN after member k's last step
    total: int  # update steps of the longest run
    eval_steps: frozenset  # steps after which the curves are measured, for any member
    cycle_ends: dict  # step -> members whose cycle ends after it
    last_steps: dict  # step -> members whose run ends after it

    @classmethod
    def of(cls, configs, batches_per_epoch):
        total = max(c.total_steps for c in configs)
        eta = np.full((total, len(configs)), np.nan)  # (T_max, K)
        eval_steps, ends, last_steps = set(), {}, {}
        for k, c in enumerate(configs):
            eta[:c.total_steps, k] = cyclic_lr(np.arange(c.total_steps), c.eta_min, c.eta_max, c.n_s, c.clr_mode,
                                               c.gamma)
            eval_steps |= _evaluation_steps(c, batches_per_epoch)
            for s in range(2 * c.n_s, c.total_steps + 1, 2 * c.n_s):
                ends[s] = ends.get(s, ()) + (k,)
            last_steps[c.total_steps] = last_steps.get(c.total_steps, ()) + (k,)
        return cls(eta, total, frozenset(eval_steps), ends, last_steps)


class _Members:
    """The members still training (the rows of a :class:`.step.Population`), and how the others ended."""

    def __init__(self, params, lams, streams):
        rows = list(streams.rows)  # the members of one stream are adjacent rows
        self.population = Population({name: value[rows] for name, value in params.items()}, lams[rows],
                                     streams.of_member[rows])
        self.active = rows  # the member of each row
        self.status = ["finished"] * len(rows)
        self.stopped_at = [None] * len(rows)
        self._final = {}  # member -> its network when it stopped

    def streams(self):
        """The streams that still have members training."""
        return list(dict.fromkeys(int(s) for s in self.population.streams))

    def diverged(self):
        """The active members whose parameters hold NaN or inf."""
        return [self.active[i] for i in self.population.nonfinite_rows()]

    def nonfinite(self, metrics):
        """The active members whose evaluated cost is NaN or inf."""
        bad = np.zeros(len(self.active), bool)
        for name, values in metrics.items():
            if name.endswith("_cost"):
                bad |= ~np.isfinite(values)
        return [self.active[i] for i in np.flatnonzero(bad)]

    def stop(self, members, step, reason):
        """Take ``members`` (original indices) out of training, keeping their networks as they are."""
        members = [m for m in members if m in self.active]
        if not members:
            return
        self.population.fold_scale()
        params = self.population.params()
        for m in members:
            self._final[m] = network.member(params, self.active.index(m))
            self.status[m] = reason
            self.stopped_at[m] = step
        keep = [i for i, m in enumerate(self.active) if m not in members]
        self.population.keep(keep)
        self.active = [self.active[i] for i in keep]

    def full_params(self):
        """All K members, stopped ones as they were when they stopped (copies)."""
        self.population.fold_scale()
        params = self.population.params()
        nets = {m: network.member(params, i) for i, m in enumerate(self.active)}
        nets.update(self._final)
        return network.stack([nets[m] for m in range(len(self.status))])


class _Arrays:
    """The arrays of a set of images in the population's dtype, each array converted once however many
    streams share it."""

    def __init__(self, dtype):
        self.dtype = dtype
        self._converted = {}  # id of an array -> (the array, its conversion)

    def of(self, images):
        """(X (D, N_all), Y (C, N_all), y (N_all,), index (N,) or None) of a set, or of its ``source``."""
        index = getattr(images, "index", None)
        source = images if index is None else images.source
        X = self._convert(source.X, lambda a: np.asfortranarray(a, dtype=self.dtype))  # one image per column
        return X, self._convert(source.Y, lambda a: np.asarray(a, dtype=self.dtype)), np.asarray(source.y), \
            (None if index is None else np.asarray(index))

    def _convert(self, array, how):
        key = id(array)
        if key not in self._converted:
            self._converted[key] = (array, how(array))  # the array kept: its id stays its own
        return self._converted[key][1]


def _stream_data(data, seeds):
    """The TrainingData of each stream (shuffle seed): ``data`` itself, or its entry for the seed."""
    if not isinstance(data, dict):
        return [data] * len(seeds)
    missing = [seed for seed in seeds if seed not in data]
    if missing:
        raise UsageError(f"no images for the stream of shuffle seed {missing[0]}")
    return [data[seed] for seed in seeds]


def _training_size(trains):
    """Images in each stream's training set, which must be one number (the epochs are shared)."""
    sizes = {X.shape[1] if index is None else index.shape[0] for X, _, _, index in trains}
    if len(sizes) != 1:
        raise UsageError(f"the streams of a population must train on equally many images, not {sorted(sizes)}")
    return sizes.pop()


def _eval_sets(train_set, val_set, config):
    """(name, X (D, n), Y (C, n), y (n,), index) for the curves; the training curve may use a subset.

    ``index`` is None, or the (n,) columns of X, Y, y the set is made of.
    """
    X, Y, y, index = train_set
    n_all = X.shape[1] if index is None else index.shape[0]
    n = n_all if config.eval_train_size is None else min(config.eval_train_size, n_all)
    sets = [("train", X[:, :n], Y[:, :n], y[:n], None) if index is None else ("train", X, Y, y, index[:n])]
    if val_set is not None:
        sets.append(("val", *val_set))
    return sets


def _evaluate_streams(params, eval_sets, streams, lams, seeds, threads):
    """``_evaluate`` (``seeds`` None) or ``_evaluate_initial`` of the active members, each on its stream's
    sets ``eval_sets[s]``; ``streams`` (K,) the stream of each row, rows of one stream adjacent."""
    if all(sets is eval_sets[0] for sets in eval_sets):  # one set of images for all: one call
        if seeds is None:
            return _evaluate(params, eval_sets[0], lams, threads)
        return _evaluate_initial(params, eval_sets[0], lams, seeds, threads)
    K, M, _ = params["W1"].shape
    chunk = max(1, _EVAL_ELEMENTS // (K * M))  # the whole population's chunk, whatever the stream
    metrics = {}
    for s in dict.fromkeys(int(s) for s in streams):
        rows = np.flatnonzero(streams == s)  # (K_s,), adjacent
        part = {name: value[rows[0]:rows[-1] + 1] for name, value in params.items()}
        if seeds is None:
            values = _evaluate(part, eval_sets[s], lams[rows], threads, chunk)
        else:
            values = _evaluate_initial(part, eval_sets[s], lams[rows], [seeds[i] for i in rows], threads, chunk)
        for name, value in values.items():
            metrics.setdefault(name, np.full(K, np.nan))[rows] = value
    return metrics


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


def _evaluate_initial(params, eval_sets, lams, seeds, threads, chunk=None):
    """``_evaluate`` before the first step, each distinct initial network (one per seed) evaluated once."""
    _, first, of_member = np.unique(np.asarray(seeds), return_index=True, return_inverse=True)  # (S,), (K,)
    K, M, _ = params["W1"].shape
    distinct = _evaluate({name: value[first] for name, value in params.items()}, eval_sets, np.zeros(first.size),
                         threads, chunk=chunk or max(1, _EVAL_ELEMENTS // (K * M)))  # chunks of the whole population's
    metrics = {name: values[of_member] for name, values in distinct.items()}
    norm = network.weight_norm(params)  # (K,)
    for name, _, _, _, _ in eval_sets:
        metrics[f"{name}_cost"] = metrics[f"{name}_loss"] + lams * norm
    return metrics


def _evaluate_rows(params, eval_sets, lams, chunk):
    """``_evaluate`` of the members in ``params``, ``chunk`` columns at a time."""
    K = params["W1"].shape[0]
    norm = network.weight_norm(params)  # (K,)
    metrics = {}
    for name, X, Y, y, index in eval_sets:
        n = X.shape[1] if index is None else index.shape[0]
        log_loss = np.zeros(K)
        correct = np.zeros(K)
        for start in range(0, n, chunk):
            if index is None:
                cols = slice(start, start + chunk)
                X_chunk = X[:, cols]  # (D, n_chunk)
            else:
                cols = index[start:start + chunk]
                X_chunk = np.take(X.T, cols, axis=0).T  # (D, n_chunk), Fortran order like a slice
            P = network.forward(params, X_chunk)  # (K, C, n_chunk)
            log_loss += network.cross_entropy(P, Y[:, cols]) * P.shape[-1]
            correct += np.sum(np.argmax(P, axis=1) == y[cols], axis=-1)
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

