"""Benchmark: network updates per second of the population trainer against the obvious baselines.

    python tools/bench.py [--data-dir DIR] [--steps 300] [--repeats 5] [--json] [--out docs/PERFORMANCE.md]
                          [--skip-study] [--skip-fine] [--skip-pair] [--skip-taskset] [--against CHECKOUT]

On the 45,000 training images of split ``full`` (n_batch 100, M = 50, C = 10,
float32) every configuration runs the same number of update steps:

1. the float32 matrix-multiply peak of numpy's BLAS (one large square product);
2. a plain single-network numpy loop, written here as the obvious baseline;
3. PyTorch on the CPU, one network at a time (skipped when torch is missing);
4. :func:`clrsearch.nn.trainer.train` with K = 1, 10 and 30 networks on the
   share of the cores a study gets (a :class:`~clrsearch.search.cores.CoreShare`),
   cut into one slice of members per thread as studies cut it; K = 30 and K = 5
   (five mini-batch streams, the final model's shape) also in one slice on a
   multi-threaded BLAS; K = 30 mixing two schedules (half n_s, half 2·n_s);
5. the plain broadcasting step of K = 30 (``broadcast_step``: SPEC's update written once over
   the leading axis K, on a multi-threaded BLAS): what the trainer's step adds to it;
6. the BLAS ceiling of K = 30: its two first-layer products alone;
7. unless ``--skip-study``, studies, each a whole command in a child process in
   a fresh folder: the default coarse study end to end; the default fine study
   on it, race and final model included (about 7 minutes, ``--skip-fine``); two
   coarse studies started together, against the one alone (``--skip-pair``);
   one coarse study on one CPU, ``taskset -c`` (``--skip-taskset``); with
   ``--against CHECKOUT``, the default coarse and fine studies of another
   clrsearch checkout beside these, their wall times and values compared.

The machine may be shared, so every figure is compared as a ratio to others
measured in the same run: the configurations run in rounds, one after the
other, and the best of ``--repeats`` rounds counts. The table goes to stdout
(one JSON object with ``--json``); ``--out`` writes it as a markdown page
together with the machine it ran on. Settings of the run (sizes, targets,
the study's timeout) are the fields of :class:`BenchSettings`.
"""

import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

import clrsearch
from clrsearch.cli import environment
from clrsearch.cli.args import ArgumentParser, entry_point, positive_int
from clrsearch.config import DEFAULT_SEARCH, DataConfig, TrainConfig
from clrsearch.data import load_splits
from clrsearch.errors import UsageError
from clrsearch.nn import network
from clrsearch.nn.trainer import TrainingData, train
from clrsearch.search.cores import CoreShare, cpus


@dataclass(frozen=True)
class BenchSettings:
    """What the benchmark measures and the targets it checks; ``SETTINGS`` is the one in use."""

    hidden: int = 50  # M, hidden units of every configuration
    n_batch: int = 100  # B, images per update step of every configuration
    eta_min: float = 1e-5  # smallest learning rate of SPEC's cyclical schedule
    eta_max: float = 1e-1  # largest learning rate of SPEC's cyclical schedule
    baseline_lam: float = 1e-3  # lambda of the single-network baselines (SPEC's best)
    populations: tuple = (1, 10, 30)  # K, networks per trainer run, one row each
    ceiling_k: int = 30  # K of the population whose two large products alone give the ceiling row
    peak_size: int = 4096  # side, in elements, of the square float32 product that measures the peak
    peak_products: int = 2  # products per round that measure the peak; the fastest counts
    steps: int = 300  # default of --steps: update steps per configuration and round
    repeats: int = 5  # default of --repeats: rounds, the best counts
    study_timeout: float = 3600.0  # seconds before the coarse study's child process is killed
    target_vs_torch: float = 3.0  # ratio, K = 30 updates/s over PyTorch's one network at a time, at least
    target_k1_vs_torch: float = 1.5  # ratio, K = 1 updates/s over PyTorch's, at least
    target_peak_share: float = 0.60  # fraction, K = 30 effective GFLOP/s over the matmul peak, at least
    target_k1_vs_numpy: float = 1.0  # ratio, K = 1 updates/s over the plain numpy loop's, at least
    target_study_seconds: float = 60.0  # seconds of wall time of the default coarse study, at most
    target_study_bytes: float = 2.5e9  # bytes of peak RSS of the default coarse study, at most
    target_tracking_share: float = 0.03  # fraction, tracking seconds over the study's wall time, at most
    target_overhead_share: float = 0.05  # fraction, tracking + evaluation seconds over its wall time, at most
    target_fine_seconds: float = 480.0  # seconds of wall time of the default fine study, at most
    target_pair_ratio: float = 2.2  # each of two coarse studies started together, over one alone, at most
    target_one_cpu_load: float = 1.1  # CPU seconds over wall seconds of a study under taskset -c 0, at most
    target_against_ratio: float = 1.05  # wall time of a default study over the --against checkout's, at most
    final_k: int = 5  # K of the final model's population: one network per mini-batch stream


SETTINGS = BenchSettings()


@dataclass(frozen=True)
class Loop:
    """How a baseline trains its one network."""

    steps: int  # update steps
    n_batch: int  # images per update step
    n_s: int  # half a cycle of the learning rate, in update steps
    lam: float  # L2 strength lambda of the weights
    shuffle_seed: int = 0  # seed of the mini-batch order, reshuffled every epoch


def update_flops(d, m, c, b):
    """Floating-point operations of one update of one network on a mini-batch of b images.

    Counts the matrix products only: W1 X and G1 Xᵀ (2·m·d·b each), and W2 H,
    W2ᵀ G and G Hᵀ (2·c·m·b each). Element-wise work is left out.
    """
    return 4 * m * d * b + 6 * c * m * b


def triangular_eta(t, n_s, eta_min=None, eta_max=None):
    """Learning rate of update step t under SPEC's triangular schedule, written out for the baselines.

    ``eta_min`` and ``eta_max`` default to those of ``SETTINGS``.
    """
    eta_min = SETTINGS.eta_min if eta_min is None else eta_min
    eta_max = SETTINGS.eta_max if eta_max is None else eta_max
    position = t % (2 * n_s)  # steps into the current cycle
    rise = position if position <= n_s else 2 * n_s - position  # 0 .. n_s
    return eta_min + (eta_max - eta_min) * rise / n_s


class StepClock:
    """Times a loop from the end of its first update to the end of its last.

    One-time costs (allocation, first touch of buffers, lazy initialisation,
    the evaluation before training) fall before the first mark; the
    ``update(n)`` method matches what :func:`clrsearch.nn.trainer.train` calls
    on its ``progress`` object.
    """

    def __init__(self):
        self.first = None
        self.last = None
        self.count = 0

    def update(self, n=1):
        now = time.perf_counter()
        if self.first is None:
            self.first = now
            self.count = n - 1
        else:
            self.count += n
        self.last = now

    @property
    def steps(self):
        """Update steps between the two marks."""
        return self.count

    @property
    def seconds(self):
        return (self.last - self.first) if self.first is not None else 0.0


def numpy_step(params, Xb, Yb, eta, lam):
    """One SPEC update of one network in place: ``W -= eta * dJ/dW`` for every parameter.

    Parameters
    ----------
    params : dict with ``W1`` (M, D), ``b1`` (M, 1), ``W2`` (C, M), ``b2`` (C, 1)
    Xb : (D, B) inputs, Yb : (C, B) one-hot labels
    eta, lam : float
    """
    B = Xb.shape[1]
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    H = np.maximum(W1 @ Xb + b1, 0)  # (M, B)
    S = W2 @ H + b2  # (C, B)
    E = np.exp(S - S.max(axis=0, keepdims=True))  # (C, B)
    P = E / E.sum(axis=0, keepdims=True)  # (C, B)
    G = (P - Yb) / B  # (C, B)
    G1 = (W2.T @ G) * (H > 0)  # (M, B)
    W2 -= eta * (G @ H.T + 2 * lam * W2)
    b2 -= eta * G.sum(axis=1, keepdims=True)
    W1 -= eta * (G1 @ Xb.T + 2 * lam * W1)
    b1 -= eta * G1.sum(axis=1, keepdims=True)


def numpy_loop(X, Y, params, loop, clock=None):
    """Train one network with ``numpy_step`` for ``loop.steps`` updates; returns the final parameters.

    Mini-batches are taken by fancy indexing from an order reshuffled every
    epoch, as :func:`clrsearch.nn.trainer.train` draws it.

    Parameters
    ----------
    X : (D, N), Y : (C, N)
    params : dict of one network (copied)
    loop : Loop
    clock : StepClock or None
    """
    params = {name: value.copy() for name, value in params.items()}
    for t, Xb, Yb in loop_batches(X, Y, loop, clock):
        numpy_step(params, Xb, Yb, triangular_eta(t, loop.n_s), loop.lam)
    return params


def loop_batches(X, Y, loop, clock=None):
    """(t, Xb (D, B), Yb (C, B)) of each of ``loop.steps`` update steps, by fancy indexing from an order of
    ``loop.shuffle_seed`` reshuffled every epoch; ``clock.update(1)`` once each step is done."""
    rng = np.random.default_rng(loop.shuffle_seed)
    n = X.shape[1]
    per_epoch = n // loop.n_batch
    t = 0
    while t < loop.steps:
        order = rng.permutation(n)
        for b in range(min(per_epoch, loop.steps - t)):
            idx = order[b * loop.n_batch:(b + 1) * loop.n_batch]
            yield t, X[:, idx], Y[:, idx]
            t += 1
            if clock is not None:
                clock.update(1)


def import_torch():
    """The torch module, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_loop(torch, X, y, params, loop, clock=None):
    """Train the same network with PyTorch on the CPU; returns the final parameters as numpy arrays.

    ``nn.Linear`` layers, ``SGD`` with ``weight_decay = 2·lam`` on the weights
    (SPEC's cost has lam·|W|², the biases are not regularised) and
    ``CyclicLR`` in triangular mode; the same mini-batch order as ``numpy_loop``.

    Parameters
    ----------
    torch : the torch module
    X : (D, N), y : (N,) integer labels
    params : dict of one network, the initial weights (copied)
    loop : Loop
    clock : StepClock or None
    """
    nn = torch.nn
    torch.set_num_threads(os.cpu_count() or 1)
    M, D = params["W1"].shape
    C = params["W2"].shape[0]
    dtype = torch.float64 if X.dtype == np.float64 else torch.float32
    model = nn.Sequential(nn.Linear(D, M), nn.ReLU(), nn.Linear(M, C)).to(dtype)
    with torch.no_grad():
        for layer, w, b in ((model[0], "W1", "b1"), (model[2], "W2", "b2")):
            layer.weight.copy_(torch.from_numpy(params[w]))
            layer.bias.copy_(torch.from_numpy(params[b].reshape(-1)))
    weights = [model[0].weight, model[2].weight]
    biases = [model[0].bias, model[2].bias]
    optimizer = torch.optim.SGD([{"params": weights, "weight_decay": 2 * loop.lam},
                                 {"params": biases, "weight_decay": 0.0}], lr=SETTINGS.eta_min)
    schedule = torch.optim.lr_scheduler.CyclicLR(optimizer, base_lr=SETTINGS.eta_min, max_lr=SETTINGS.eta_max,
                                                 step_size_up=loop.n_s, mode="triangular", cycle_momentum=False)
    loss_fn = nn.CrossEntropyLoss()
    with warnings.catch_warnings():  # the data set is read-only and torch only reads it
        warnings.simplefilter("ignore", UserWarning)
        images = torch.from_numpy(np.ascontiguousarray(X.T))  # (N, D): torch's row-per-image layout
    labels = torch.from_numpy(np.asarray(y, dtype=np.int64))  # (N,)
    rng = np.random.default_rng(loop.shuffle_seed)
    n = images.shape[0]
    per_epoch = n // loop.n_batch
    t = 0
    while t < loop.steps:
        order = torch.from_numpy(rng.permutation(n))
        for b in range(min(per_epoch, loop.steps - t)):
            idx = order[b * loop.n_batch:(b + 1) * loop.n_batch]
            loss = loss_fn(model(images[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            t += 1
            if clock is not None:
                clock.update(1)
    with torch.no_grad():
        return {"W1": model[0].weight.numpy().copy(), "b1": model[0].bias.numpy().reshape(-1, 1).copy(),
                "W2": model[2].weight.numpy().copy(), "b2": model[2].bias.numpy().reshape(-1, 1).copy()}


def trainer_config(steps, n_batch=None, hidden=None):
    """One cycle of ``steps`` updates (rounded down to even) with the least evaluation there is.

    ``n_batch`` and ``hidden`` default to those of ``SETTINGS``.
    """
    return TrainConfig(n_batch=SETTINGS.n_batch if n_batch is None else n_batch, cycles=1, n_s=steps // 2,
                       eta_min=SETTINGS.eta_min, eta_max=SETTINGS.eta_max,
                       hidden=SETTINGS.hidden if hidden is None else hidden, evals_per_cycle=1, eval_train_size=100)


def mixed_schedules(steps, K):
    """K member configs mixing two schedules that differ only in ``n_s``: even members n_s = steps / 2 (one
    cycle of ``steps`` updates), odd members twice that (half a cycle); ``max_steps = steps`` for all, so every
    member trains every step of the ``steps`` measured and none ends a cycle or is evaluated in between."""
    base = replace(trainer_config(steps), max_steps=steps)
    return [base if k % 2 == 0 else replace(base, n_s=2 * base.n_s) for k in range(K)]


def population_lams(K):
    """K lambdas spread log-uniformly over the coarse range 1e-5 .. 1e-1."""
    return np.logspace(-5, -1, K)


def matmul_rate(n, products, dtype=np.float32, seed=0):
    """Best GFLOP/s of ``products`` (n, n) @ (n, n) products through numpy."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n), dtype=dtype)
    b = rng.standard_normal((n, n), dtype=dtype)
    out = np.empty((n, n), dtype)
    best = float("inf")
    for _ in range(products):
        started = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def broadcast_step(params, Xb, Yb, eta, lam):
    """One SPEC update of K networks in place, written once with broadcasting over the leading axis K.

    Parameters
    ----------
    params : dict of a population, ``W1`` (K, M, D), ``b1`` (K, M, 1), ``W2`` (K, C, M), ``b2`` (K, C, 1)
    Xb : (D, B) inputs, Yb : (C, B) one-hot labels
    eta, lam : (K,) float
    """
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    B = Xb.shape[1]
    H = np.maximum(network.first_layer(W1, Xb) + b1, 0)  # (K, M, B)
    P = network.softmax(W2 @ H + b2)  # (K, C, B)
    G = (P - Yb) / B  # (K, C, B)
    G1 = (np.swapaxes(W2, 1, 2) @ G) * (H > 0)  # (K, M, B)
    eta = np.asarray(eta, dtype=W1.dtype).reshape(-1, 1, 1)  # (K, 1, 1)
    decay = (2 * np.asarray(lam)).astype(W1.dtype).reshape(-1, 1, 1)  # (K, 1, 1), 2 lambda
    W1 -= eta * (network.first_layer(G1, Xb.T) + decay * W1)  # (K, M, D)
    b1 -= eta * G1.sum(axis=2, keepdims=True)
    W2 -= eta * (G @ np.swapaxes(H, 1, 2) + decay * W2)  # (K, C, M)
    b2 -= eta * G.sum(axis=2, keepdims=True)


def broadcast_loop(X, Y, params, loop, lams, clock=None):
    """Train the population ``params`` (copied) with ``broadcast_step`` for ``loop.steps`` updates,
    on the mini-batches of :func:`numpy_loop`; ``lams`` (K,)."""
    params = {name: value.copy() for name, value in params.items()}
    K = params["W1"].shape[0]
    for t, Xb, Yb in loop_batches(X, Y, loop, clock):
        broadcast_step(params, Xb, Yb, np.full(K, triangular_eta(t, loop.n_s)), lams)
    return params


def ceiling_loop(K, m, d, b, steps, dtype=np.float32, clock=None):
    """The two first-layer products of a K-member step alone: (K·M, D) @ (D, B) and (K·M, B) @ (B, D).

    The matrices hold standard normal numbers of a fixed seed: their values do not change the time.
    """
    rng = np.random.default_rng(0)
    V = rng.standard_normal((K * m, d), dtype=dtype)  # (K·M, D)
    Xb = np.asfortranarray(rng.standard_normal((d, b), dtype=dtype))  # (D, B), as the trainer's batch
    G1 = rng.standard_normal((K * m, b), dtype=dtype)  # (K·M, B)
    S1 = np.empty((K * m, b), dtype)
    dV = np.empty((K * m, d), dtype)
    for _ in range(steps):
        np.matmul(V, Xb, out=S1)
        np.matmul(G1, Xb.T, out=dV)
        if clock is not None:
            clock.update(1)


class PeakRSS:
    """Peak resident memory of this process while a block runs.

    Linux lets a process reset its high-water mark (``/proc/self/clear_refs``),
    so each block gets its own peak; elsewhere the lifetime peak of
    ``getrusage`` is all there is, and ``method`` says so.
    """

    def __init__(self):
        self.peak = None
        self.start = None
        self.method = None

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.method = "VmHWM"
            self.start = _proc_size("/proc/self/status", "VmRSS")
        except OSError:
            self.method = "ru_maxrss"
            self.start = None
        return self

    def __exit__(self, *exc):
        peak = _proc_size("/proc/self/status", "VmHWM") if self.method == "VmHWM" else None
        self.peak = peak if peak is not None else _maxrss_bytes(resource.getrusage(resource.RUSAGE_SELF))
        if peak is None:
            self.method = "ru_maxrss"
        return False


def _proc_size(path, key):
    """A ``key: N kB`` field of a /proc file (``/proc/self/status``, ``/proc/meminfo``) in bytes, or None."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _maxrss_bytes(usage):
    """``ru_maxrss`` of a ``getrusage`` or ``wait4`` result in bytes (macOS gives bytes, Linux KiB)."""
    return usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024


@dataclass
class Measurement:
    """Repeated timings of one configuration; ``rates`` are network updates per second.

    ``key`` names the row for the targets (``numpy``, ``torch``, ``K30``, ``one slice``, ``mixed``, ...);
    ``threads`` says, round by round, how the row used the cores (see :func:`threads_label`).
    """

    name: str
    K: int
    rates: list = field(default_factory=list)
    peak_rss: int = 0
    rss_start: int | None = None
    extra_seconds: list = field(default_factory=list)  # setup + evaluation outside the timed updates
    eval_seconds: list = field(default_factory=list)
    skipped: str | None = None
    key: str = ""
    threads: list = field(default_factory=list)

    @property
    def best(self):
        return max(self.rates) if self.rates else None

    @property
    def median(self):
        return statistics.median(self.rates) if self.rates else None

    @property
    def best_threads(self):
        """``threads`` of the best round."""
        if not self.rates or len(self.threads) != len(self.rates):
            return None
        return self.threads[self.rates.index(self.best)]


def threads_label(K, threads, sliced):
    """How a row of K members used ``threads`` threads: in slices of members, one thread each over a
    one-threaded BLAS (``sliced``, as the trainer cuts them), else in one slice on a ``threads``-threaded BLAS."""
    slices = min(threads, K) if sliced else 1
    return f"{slices} slices × BLAS 1" if slices > 1 else f"BLAS {threads}"


def load_training_set(data_dir):
    """The 45,000 training images of split ``full``, float32."""
    data = DataConfig("full", data_dir=environment.data_dir(data_dir))
    return load_splits(data, dtype=np.float32, download=False).train


def say(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


def measure(train_set, steps, repeats, torch, peak_size=None, populations=None):
    """Run every configuration ``repeats`` times in rounds; returns (peak GFLOP/s per round, measurements).

    The rounds hold the share of the cores a study gets: a :class:`CoreShare` (one slot among the
    clrsearch processes training, or ``$CLRSEARCH_BLAS_THREADS``) that gives numpy's BLAS its threads. The
    trainer rows are handed the share's threads, and cut their population into that many slices as studies
    do; the rows "one slice (multi-threaded BLAS)" get one thread: one slice.
    ``peak_size`` and ``populations`` default to those of ``SETTINGS``.
    """
    settings = SETTINGS
    peak_size = settings.peak_size if peak_size is None else peak_size
    populations = settings.populations if populations is None else populations
    X, Y, y = train_set.X, train_set.Y, train_set.y
    D, C = X.shape[0], Y.shape[0]
    baseline = Loop(steps, settings.n_batch, max(1, steps // 2), settings.baseline_lam)
    init = network.init_params(D, settings.hidden, C, np.random.default_rng(0), np.float32)
    big, final_k = max(populations), settings.final_k
    names = {"numpy": ("plain numpy loop, one network", 1), "torch": ("PyTorch CPU, one network at a time", 1),
             **{f"K{K}": (f"clrsearch trainer, K = {K}", K) for K in populations},
             "one slice": (f"clrsearch trainer, K = {big}, one slice (multi-threaded BLAS)", big),
             "mixed": (f"clrsearch trainer, K = {big}, population mixing schedules (half n_s, half 2·n_s)", big),
             "streams": (f"clrsearch trainer, K = {final_k}, {final_k} mini-batch streams", final_k),
             "streams one slice": (f"clrsearch trainer, K = {final_k}, {final_k} mini-batch streams, "
                                   f"one slice (multi-threaded BLAS)", final_k),
             "broadcast": (f"plain broadcasting step, K = {big}, one slice (multi-threaded BLAS)", big),
             "ceiling": (f"BLAS ceiling: the two first-layer products of K = {settings.ceiling_k} alone",
                         settings.ceiling_k)}
    rows = {key: Measurement(name, K, key=key) for key, (name, K) in names.items()}
    if torch is None:
        rows["torch"].skipped = "torch is not installed (pip install -e '.[bench]')"
    peaks = []

    def timed(key, run, sliced=False):
        row = rows[key]
        clock = StepClock()
        with PeakRSS() as rss:
            started = time.perf_counter()
            extra = run(clock, share.threads if sliced else 1)
            wall = time.perf_counter() - started
        row.rates.append(row.K * clock.steps / clock.seconds)
        row.threads.append(f"torch {torch.get_num_threads()}" if key == "torch"
                           else threads_label(row.K, share.threads, sliced))
        row.peak_rss = max(row.peak_rss, rss.peak)
        row.rss_start = rss.start if row.rss_start is None else min(row.rss_start, rss.start or row.rss_start)
        row.extra_seconds.append(wall - clock.seconds)
        if extra is not None:
            row.eval_seconds.append(extra)
        say(f"  {row.name}: {row.rates[-1]:,.0f} updates/s ({row.threads[-1]})")

    def trainer(K, configs=None):
        def run(clock, threads):
            result = train(TrainingData(train_set), configs or trainer_config(steps), population_lams(K), tuple(range(K)),
                           progress=clock, threads=threads)
            return result.eval_seconds
        return run

    streams = [replace(trainer_config(steps), shuffle_seed=k) for k in range(final_k)]

    def plain(clock, _threads):
        numpy_loop(X, Y, init, baseline, clock=clock)

    def pytorch(clock, _threads):
        torch_loop(torch, X, y, init, baseline, clock=clock)

    def broadcast(clock, _threads):
        broadcast_loop(X, Y, network.init_population(D, settings.hidden, C, range(big), np.float32), baseline,
                       population_lams(big), clock=clock)

    def ceiling(clock, _threads):
        ceiling_loop(settings.ceiling_k, settings.hidden, D, settings.n_batch, steps, clock=clock)

    share = CoreShare(environment.blas_threads(), environment.core_slots())
    with share:  # released before any study starts: it holds a slot
        for r in range(repeats):
            say(f"round {r + 1} of {repeats}, a share of {share.check()} threads")
            peaks.append(matmul_rate(peak_size, settings.peak_products))
            say(f"  float32 matmul peak {peak_size}²: {peaks[-1]:.1f} GFLOP/s")
            timed("numpy", plain)
            if torch is not None:
                timed("torch", pytorch)
            for K in populations:
                timed(f"K{K}", trainer(K), sliced=True)
            timed("one slice", trainer(big))
            timed("mixed", trainer(big, mixed_schedules(steps, big)), sliced=True)
            timed("streams", trainer(final_k, streams), sliced=True)
            timed("streams one slice", trainer(final_k, streams))
            timed("broadcast", broadcast)
            timed("ceiling", ceiling)
    return peaks, list(rows.values())


def study_command(kind, data_dir, folder, name, prefix=()):
    """``python -m clrsearch.<kind>`` of the default study on the data, its storage in ``folder``."""
    where = [] if data_dir is None else ["--data-dir", str(Path(data_dir).expanduser().absolute())]
    return [*prefix, sys.executable, "-m", f"clrsearch.{kind}", *where, "--storage",
            f"sqlite:///{folder}/studies.db", "--study-name", name, *(["--coarse-study", "coarse"] if kind == "fine"
                                                                       else []), "--json"]


def run_study(data_dir, command=None, timeout=None, folder=None, package=None):
    """Run the default coarse study in a child process; wall time, peak RSS, CPU time and its own time split.

    The child writes its Optuna storage and MLflow store in ``folder`` (default:
    a fresh temporary one), which is also its working directory (so no
    ``studies/coarse.toml`` of the caller is read); it imports the clrsearch
    of the checkout ``package`` (default: the same clrsearch as this process).
    ``timeout`` (seconds) defaults to ``SETTINGS.study_timeout``. Failures are
    reported in the result, not raised.
    """
    return finish_study(start_study(data_dir, command, folder, package), timeout)


def start_study(data_dir, command=None, folder=None, package=None):
    """Start a study command as :func:`run_study` does; the handle :func:`finish_study` waits for."""
    tmp = None
    if folder is None:
        tmp = tempfile.TemporaryDirectory(prefix="clrsearch-bench-")
        folder = tmp.name
    if command is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        command = study_command("coarse", data_dir, folder, f"bench-{stamp}")
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{folder}/mlflow.db")
    package_parent = str(Path(package or Path(clrsearch.__file__).resolve().parent.parent).resolve())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    handle = {"study": study_result(command, folder), "tmp": tmp, "folder": folder}
    out_path, err_path = Path(folder) / f"stdout-{id(handle)}", Path(folder) / f"stderr-{id(handle)}"
    handle["paths"] = out_path, err_path
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        handle["started"] = time.perf_counter()
        try:
            handle["child"] = subprocess.Popen(command, cwd=folder, env=env, stdout=out, stderr=err,
                                               stdin=subprocess.DEVNULL)
        except OSError as e:
            handle["study"]["error"] = f"cannot start the study: {e}"
            handle["child"] = None
    return handle


def study_result(command, folder):
    """The result of a study not run yet: its command as the report shows it (``python``, the folder as TMP)."""
    shown = ["python" if part == sys.executable else part.replace(str(folder), "TMP") for part in command]
    return {"command": shlex.join(shown), "wall_seconds": None, "peak_rss": None, "seconds": None,
            "cpu_seconds": None, "trials": None, "error": None}


def finish_study(handle, timeout=None):
    """Wait for the study of ``handle``; its result (see :func:`run_study`)."""
    timeout = SETTINGS.study_timeout if timeout is None else timeout
    study, child = handle["study"], handle["child"]
    try:
        if child is None:
            return study
        timer = threading.Timer(timeout, child.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, not every child's
        finally:
            timer.cancel()
        child.returncode = os.waitstatus_to_exitcode(status)
        study["wall_seconds"] = time.perf_counter() - handle["started"]
        study["peak_rss"] = _maxrss_bytes(usage)
        study["cpu_seconds"] = usage.ru_utime + usage.ru_stime
        out_path, err_path = handle["paths"]
        stdout, stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
        summary = _last_json_object(stdout)
        if child.returncode != 0:
            reason = "killed after the timeout" if child.returncode < 0 else f"exit status {child.returncode}"
            study["error"] = f"{reason}: {_last_line(stderr) or _last_line(stdout) or 'no output'}"
        elif summary is None or not isinstance(summary.get("seconds"), dict):
            study["error"] = f"no JSON summary with 'seconds' on stdout: {_last_line(stdout) or 'no output'}"
        if summary is not None and isinstance(summary.get("seconds"), dict):
            study["seconds"] = summary["seconds"]
            study["trials"] = trial_values(summary)
            study["values"] = study_values(summary)
        return study
    finally:
        if handle["tmp"] is not None:
            handle["tmp"].cleanup()


@dataclass(frozen=True)
class StudyRuns:
    """Which studies a run of the benchmark starts, from its ``--skip-*`` flags."""

    coarse: bool = True  # the default coarse study end to end; --skip-study skips every study
    fine: bool = True  # the default fine study on that coarse study, in its folder (--skip-fine)
    pair: bool = True  # two default coarse studies started together, against the one alone (--skip-pair)
    one_cpu: bool = True  # one default coarse study under taskset -c <first CPU> (--skip-taskset)
    against: str | None = None  # a checkout whose default coarse and fine studies are timed beside these (--against)

    @classmethod
    def of(cls, args):
        """The studies the parsed arguments ``args`` of :func:`_parser` ask for."""
        if args.skip_study:
            return cls(coarse=False, fine=False, pair=False, one_cpu=False)
        return cls(fine=not args.skip_fine, pair=not args.skip_pair, one_cpu=not args.skip_taskset,
                   against=args.against)


def run_studies(data_dir, runs):
    """The studies of ``runs`` (a :class:`StudyRuns`), one after the other; returns (the coarse study alone or
    None, {"fine": result, "pair": [two results], "one_cpu": result} of those run).

    The coarse study runs under the name ``coarse`` in a fresh folder, where the fine study then finds it
    (``--coarse-study coarse``, the same ``--storage``); it is also the study alone the pair is compared with.
    With ``runs.against``, the other checkout's coarse study runs just before this one and its fine study just
    after this one's (``others["against"]``), so that a drift of the machine's speed weighs on both alike.
    """
    others = {}
    if not runs.coarse:
        return None, others
    with ExitStack() as stack:
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="clrsearch-bench-"))
        if runs.against:
            other_folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="clrsearch-bench-"))
            say(f"coarse study of {runs.against} in a child process")
            others["against"] = {"package": runs.against, "coarse": run_study(
                data_dir, study_command("coarse", data_dir, other_folder, "coarse"), folder=other_folder,
                package=runs.against)}
            say(f"  its coarse study: {_outcome(others['against']['coarse'])}")
        say("coarse study in a child process")
        study = run_study(data_dir, study_command("coarse", data_dir, folder, "coarse"), folder=folder)
        study["K"], study["updates"] = study_shape()
        say(f"  coarse study: {_outcome(study)}")
        if runs.fine:
            say("fine study on it, in the same folder")
            others["fine"] = run_fine(data_dir, folder, study)
            say(f"  fine study: {_outcome(others['fine'])}")
            if runs.against:
                say(f"fine study of {runs.against} on its coarse study")
                others["against"]["fine"] = run_fine(data_dir, other_folder, others["against"]["coarse"],
                                                     package=runs.against)
                say(f"  its fine study: {_outcome(others['against']['fine'])}")
    if runs.pair:
        say("two coarse studies started together")
        others["pair"] = run_pair(data_dir)
        say("  " + "; ".join(_outcome(p) for p in others["pair"]))
    if runs.one_cpu:
        say("a coarse study on one CPU")
        others["one_cpu"] = run_one_cpu(data_dir)
        say(f"  on one CPU: {_outcome(others['one_cpu'])}")
    return study, others


def _outcome(study):
    """One line on a finished study for the progress messages."""
    if study.get("skipped") or study.get("error"):
        return study.get("skipped") or f"failed: {study['error']}"
    return (f"{study['wall_seconds']:.1f} s wall, {study['cpu_seconds']:.1f} s CPU, "
            f"peak RSS {_gb(study['peak_rss'])} GB")


def run_fine(data_dir, folder, coarse, package=None):
    """The default fine study (race and final model included) in ``folder``, where the coarse study ``coarse``
    (a result of :func:`run_study`) ran under the name ``coarse``; the fine study's result."""
    command = study_command("fine", data_dir, folder, "fine")
    if coarse.get("error"):
        return {**study_result(command, folder), "error": f"not run: its coarse study failed ({coarse['error']})"}
    return run_study(data_dir, command, folder=folder, package=package)


def run_pair(data_dir):
    """Two default coarse studies, ``pair-1`` and ``pair-2``, each in a fresh folder, started at the same moment;
    their results (see :func:`run_study`), in that order."""
    with ExitStack() as stack:
        folders = [stack.enter_context(tempfile.TemporaryDirectory(prefix="clrsearch-bench-")) for _ in range(2)]
        handles = [start_study(data_dir, study_command("coarse", data_dir, folder, f"pair-{i + 1}"), folder)
                   for i, folder in enumerate(folders)]
        return finish_studies(handles)


def finish_studies(handles):
    """:func:`finish_study` of every handle, each waited for by a thread of its own, so that each study's wall
    time ends when it ends, not when the ones waited for before it have ended."""
    with ThreadPoolExecutor(max_workers=len(handles)) as pool:
        return list(pool.map(finish_study, handles))


def run_one_cpu(data_dir):
    """The default coarse study under ``taskset -c <first CPU>``; its result, or ``{"skipped": reason}`` where
    taskset or a second CPU is missing (on one CPU alone it would measure nothing new)."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if shutil.which("taskset") is None:
        return {"skipped": "taskset is not installed"}
    if len(allowed) < 2:
        return {"skipped": f"this process may run on {len(allowed) or 'an unknown number of'} CPU, not 2 or more"}
    with tempfile.TemporaryDirectory(prefix="clrsearch-bench-") as folder:
        command = study_command("coarse", data_dir, folder, "one-cpu", prefix=("taskset", "-c", str(allowed[0])))
        return run_study(data_dir, command, folder=folder)


def trial_values(summary):
    """[(lam, val_accuracies)] of the ``trials`` of a study's JSON summary, in its order: what a run must repeat."""
    return [(row.get("lam"), row.get("val_accuracies")) for row in summary.get("trials") or []]


def study_values(summary):
    """What a study must repeat to give the same results: its table of trials, and its final model's accuracies
    (every ``*accuracy*`` figure of the summary's ``final``, when it has one)."""
    final = summary.get("final") or {}
    return {"trials": summary.get("trials"),
            "final": {name: value for name, value in sorted(final.items()) if "accuracy" in name}}


def same_trials(one, other):
    """Whether two :func:`trial_values` lists (as read back from JSON too: lists for tuples) are the same;
    None when either is missing or empty."""
    if not one or not other:
        return None
    return [tuple(t) for t in one] == [tuple(t) for t in other]


def _last_json_object(text):
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def _last_line(text):
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def study_shape():
    """Population size K and network updates of the default coarse study (no pruning by default)."""
    search = DEFAULT_SEARCH["coarse"]
    trials = search.study.total_trials
    K = min(search.study.trials_per_population, trials) * search.study.n_seeds
    return K, trials * search.study.n_seeds * search.train.total_steps


def machine_info(torch):
    """CPU, cores, memory, Python, numpy and its BLAS, torch."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and cpu == (platform.processor() or platform.machine()):
                    cpu = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "simd": [f for f in ("avx2", "fma", "avx512f", "avx512_bf16") if f in flags],
        "logical_cores": os.cpu_count(),
        "usable_cores": cpus(),
        "memory_bytes": (_proc_size("/proc/meminfo", "MemTotal") or 0),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": _numpy_blas(),
        "threadpools": _threadpools(),
        "torch": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    return info


def _numpy_blas():
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # show_config's layout differs between numpy versions
        return "unknown"


def _threadpools():
    """Native thread pools loaded in this process (threadpoolctl), e.g. OpenBLAS kernels and threads."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    pools = []
    for pool in threadpool_info():
        arch = f", {pool['architecture']} kernels" if pool.get("architecture") else ""
        version = f" {pool['version']}" if pool.get("version") else ""
        pools.append(f"{pool.get('internal_api')}{version} ({pool.get('prefix')}{arch}, "
                     f"{pool.get('num_threads')} threads)")
    return pools


def summarise(peaks, rows, study, flops, meta):
    """The JSON object of a run: rows with their derived figures, the studies and the targets."""
    peak = max(peaks)
    results = []
    for row in rows:
        entry = {"name": row.name, "key": row.key or row.name, "K": row.K, "skipped": row.skipped}
        if row.rates:
            entry.update({
                "updates_per_s": row.best, "updates_per_s_median": row.median, "updates_per_s_all": row.rates,
                "threads": row.best_threads,
                "gflops": row.best * flops / 1e9, "peak_share": row.best * flops / 1e9 / peak,
                "peak_rss_bytes": row.peak_rss, "rss_before_bytes": row.rss_start,
                "setup_and_eval_seconds": min(row.extra_seconds),
                "eval_seconds": min(row.eval_seconds) if row.eval_seconds else None,
            })
        results.append(entry)
    torch_rate = next((r["updates_per_s"] for r in results if r["key"] == "torch" and r.get("updates_per_s")), None)
    for entry in results:
        if entry.get("updates_per_s") and torch_rate:
            entry["vs_torch"] = entry["updates_per_s"] / torch_rate
    others = meta.get("studies") or {}
    return {**meta, "peak_gflops": peak, "peak_gflops_all": peaks, "flops_per_update": flops,
            "results": results, "study": study, "targets": targets(results, study, peak) + study_targets(study, others)}


def target_line(what, goal, value, passed, shown):
    """One line of the targets; ``passed`` is None when ``value`` was not measured."""
    return {"target": what, "goal": goal, "measured": value, "shown": shown, "passed": passed}


def ratio_line(what, goal, ratio, digits=2):
    """The line of a ratio that must be at least ``goal``; ``ratio`` None when not measured."""
    return target_line(what, f">= {goal:g}x", ratio, None if ratio is None else ratio >= goal,
                       "not measured" if ratio is None else f"{ratio:.{digits}f}x")


def info_line(what, ratio):
    """The line of a ratio shown without a goal: ``passed`` stays None, ``info`` says why."""
    return {**target_line(what, "ratio shown", ratio, None, "not measured" if ratio is None else f"{ratio:.2f}x"),
            "info": True}


def ratio(numerator, denominator):
    """numerator / denominator, or None when either is missing or zero."""
    return numerator / denominator if numerator and denominator else None


def targets(results, study, peak):
    """Pass/fail lines of the rows and of the coarse study, and the ratios shown without a goal: slices against
    one slice, mixed schedules against one. ``results`` are the entries of :func:`summarise`."""
    goals = SETTINGS
    big = max(goals.populations)
    by_key = {r.get("key", r["name"]): r for r in results}

    def rate(key):
        return by_key.get(key, {}).get("updates_per_s")

    def same_k(key):
        """The rate of the sliced one-schedule row of the K of row ``key``, and that K."""
        K = by_key.get(key, {}).get("K", big)
        return rate(f"K{K}"), K

    k_big, k1, torch_rate = rate(f"K{big}"), rate("K1"), rate("torch")
    lines = [ratio_line(f"K = {big} updates/s vs PyTorch one network at a time", goals.target_vs_torch,
                        ratio(k_big, torch_rate), digits=1)]
    gflops = by_key.get(f"K{big}", {}).get("gflops")
    share = ratio(gflops, peak)
    lines.append(target_line(f"K = {big} effective GFLOP/s vs measured matmul peak",
                             f">= {goals.target_peak_share:.0%}", share,
                             None if share is None else share >= goals.target_peak_share,
                             "not measured" if share is None else f"{share:.1%} ({gflops:.1f} of {peak:.1f} GFLOP/s)"))
    lines.append(ratio_line("K = 1 updates/s vs the plain numpy loop", goals.target_k1_vs_numpy,
                            ratio(k1, rate("numpy"))))
    wall = study.get("wall_seconds") if study and not study.get("error") else None
    lines.append(target_line("coarse study wall time", f"<= {goals.target_study_seconds:g} s", wall,
                             None if wall is None else wall <= goals.target_study_seconds,
                             "not measured" if wall is None else f"{wall:.1f} s"))
    rss = study.get("peak_rss") if study and not study.get("error") else None
    lines.append(target_line("coarse study peak memory (RSS)", f"<= {goals.target_study_bytes / 1e9:g} GB", rss,
                             None if rss is None else rss <= goals.target_study_bytes,
                             "not measured" if rss is None else f"{rss / 1e9:.2f} GB"))
    tracking = (study.get("seconds") or {}).get("tracking") if wall else None
    share = tracking / wall if tracking is not None else None
    lines.append(target_line("coarse study tracking time vs its wall time", f"<= {goals.target_tracking_share:.0%}",
                             share, None if share is None else share <= goals.target_tracking_share,
                             "not measured" if share is None else f"{share:.1%} ({tracking:.1f} s)"))
    lines.append(ratio_line("K = 1 updates/s vs PyTorch one network at a time", goals.target_k1_vs_torch,
                            ratio(k1, torch_rate)))
    sliced, K = same_k("one slice")
    lines.append(info_line(f"K = {K} in slices vs one slice (multi-threaded BLAS), updates/s",
                           ratio(sliced, rate("one slice"))))
    K = by_key.get("streams", {}).get("K", goals.final_k)
    lines.append(info_line(f"K = {K} of {K} mini-batch streams in slices vs one slice (multi-threaded BLAS), updates/s",
                           ratio(rate("streams"), rate("streams one slice"))))
    single, K = same_k("mixed")
    lines.append(info_line(f"mixed schedules vs one schedule (K = {K}, half n_s and half 2·n_s), updates/s",
                           ratio(rate("mixed"), single)))
    sliced, K = same_k("broadcast")
    lines.append(info_line(f"K = {K} trainer vs the plain broadcasting step (one slice), updates/s",
                           ratio(sliced, rate("broadcast"))))
    return lines


def study_targets(study, others):
    """Pass/fail lines of the studies: the coarse study's overheads, the fine study, two coarse studies at once,
    one on one CPU. ``others`` holds what was run: ``fine``, ``pair`` (two results), ``one_cpu``."""
    goals = SETTINGS
    lines = []
    alone = study.get("wall_seconds") if study and not study.get("error") else None
    seconds = (study or {}).get("seconds") or {}
    overhead = seconds.get("tracking", 0.0) + seconds.get("evaluation", 0.0) if alone and seconds else None
    share = overhead / alone if overhead is not None else None
    lines.append(target_line("coarse study tracking + evaluation vs its wall time",
                             f"<= {goals.target_overhead_share:.0%}", share,
                             None if share is None else share <= goals.target_overhead_share,
                             "not measured" if share is None else f"{share:.1%} ({overhead:.1f} s)"))
    fine = others.get("fine")
    wall = fine.get("wall_seconds") if fine and not fine.get("error") else None
    lines.append(target_line("fine study wall time, race and final model included",
                             f"<= {goals.target_fine_seconds:g} s", wall,
                             None if wall is None else wall <= goals.target_fine_seconds,
                             "not measured" if wall is None else f"{wall:.1f} s ({wall / 60:.1f} min)"))
    pair = [p for p in others.get("pair") or [] if not p.get("error") and p.get("wall_seconds")]
    ratios = [p["wall_seconds"] / alone for p in pair] if alone and len(pair) == 2 else None
    walls = ", ".join(f"{p['wall_seconds']:.1f}" for p in pair)
    lines.append(target_line("each of two coarse studies started together vs one alone",
                             f"<= {goals.target_pair_ratio:g}x", ratios,
                             None if ratios is None else max(ratios) <= goals.target_pair_ratio,
                             "not measured" if ratios is None else " and ".join(f"{r:.2f}x" for r in ratios)
                             + f" ({walls} s against {alone:.1f} s)"))
    same = None
    if ratios is not None:
        verdicts = [same_trials(p.get("trials"), study.get("trials")) for p in pair]
        same = None if None in verdicts else all(verdicts)
    lines.append(target_line("two coarse studies started together give the values of one alone", "the same trials",
                             same, same, "not measured" if same is None
                             else "the same lambdas and accuracies" if same else "values differ"))
    lines += against_targets(study, others)
    one_cpu = others.get("one_cpu") or {}
    load = (ratio(one_cpu.get("cpu_seconds"), one_cpu.get("wall_seconds")) if not one_cpu.get("error") else None)
    lines.append(target_line("coarse study under taskset -c uses one core: CPU seconds per wall second",
                             f"<= {goals.target_one_cpu_load:g}", load,
                             None if load is None else load <= goals.target_one_cpu_load,
                             "not measured" if load is None else f"{load:.2f} ({one_cpu['wall_seconds']:.1f} s wall)"))
    return lines


def against_targets(study, others):
    """The lines of ``--against``: each default study's wall time against the other checkout's, at most
    ``SETTINGS.target_against_ratio``, and the same values (trials, final model)."""
    against = others.get("against")
    if not against:
        return []
    lines = []
    for kind, mine in (("coarse", study), ("fine", others.get("fine"))):
        theirs = against.get(kind) or {}
        ok = mine and not mine.get("error") and not theirs.get("error") and theirs.get("wall_seconds")
        r = ratio(mine["wall_seconds"], theirs["wall_seconds"]) if ok else None
        lines.append(target_line(f"default {kind} study wall time vs {against['package']}",
                                 f"<= {SETTINGS.target_against_ratio:g}x", r,
                                 None if r is None else r <= SETTINGS.target_against_ratio,
                                 "not measured" if r is None else
                                 f"{r:.3f}x ({mine['wall_seconds']:.1f} s against {theirs['wall_seconds']:.1f} s)"))
        same = mine.get("values") == theirs.get("values") if ok else None
        lines.append(target_line(f"default {kind} study gives the values of {against['package']}",
                                 "the same trials and final model", same, same,
                                 "not measured" if same is None else "the same values" if same
                                 else "values differ"))
    return lines


def _gb(n):
    return f"{n / 1e9:.2f}" if n is not None else "–"


def render_table(summary):
    """The results as a markdown table."""
    n = summary["workload"]["peak_size"]
    lines = ["| configuration | K | threads | updates/s (best) | median | GFLOP/s | % of peak | vs PyTorch "
             "| peak RSS GB |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|",
             f"| float32 matmul peak, {n}² @ {n}² | | | | | {summary['peak_gflops']:.1f} | 100% | | |"]
    for r in summary["results"]:
        if r.get("updates_per_s") is None:
            lines.append(f"| {r['name']} | {r['K']} | | skipped: {r.get('skipped') or 'not run'} | | | | | |")
            continue
        vs = f"{r['vs_torch']:.1f}x" if r.get("vs_torch") else "–"
        lines.append(f"| {r['name']} | {r['K']} | {r.get('threads') or ''} | {r['updates_per_s']:,.0f} | "
                     f"{r['updates_per_s_median']:,.0f} | {r['gflops']:.1f} | {r['peak_share']:.0%} | {vs} | "
                     f"{_gb(r['peak_rss_bytes'])} |")
    study = summary.get("study")
    if study is not None:
        if study.get("error"):
            lines.append(f"| default coarse study (child process) | {study['K']} | | failed: {study['error']} "
                         f"| | | | | |")
        else:
            rate = study["updates"] / study["wall_seconds"]
            lines.append(f"| default coarse study end to end, {study['wall_seconds']:.1f} s wall | {study['K']} | | "
                         f"{rate:,.0f} | | {rate * summary['flops_per_update'] / 1e9:.1f} | "
                         f"{rate * summary['flops_per_update'] / 1e9 / summary['peak_gflops']:.0%} | | "
                         f"{_gb(study['peak_rss'])} |")
    return "\n".join(lines)


def render_targets(summary):
    """One line per target: PASS, FAIL, n/a (not measured) or info (a ratio shown without a goal)."""
    marks = {True: "PASS", False: "FAIL", None: "n/a "}
    return "\n".join(f"- **info** {t['target']}: {t['shown']} (ratio shown, no goal)" if t.get("info")
                     else f"- **{marks[t['passed']]}** {t['target']} {t['goal']}: {t['shown']}"
                     for t in summary["targets"])


def render_breakdown(summary):
    """What the ceiling row says about the step of the population of K = ``SETTINGS.ceiling_k``."""
    k, w = SETTINGS.ceiling_k, summary["workload"]
    rows = {r.get("key", r["name"]): r for r in summary["results"]}
    trainer = rows.get(f"K{k}", {}).get("updates_per_s")
    ceiling = rows.get("ceiling", {}).get("updates_per_s")
    if not trainer or not ceiling:
        return "Not measured."
    share = trainer / ceiling
    return (f"At K = {k} the trainer runs at {share:.0%} of the rate of its two first-layer products "
            f"alone (the ceiling row), so those two BLAS calls take about {min(share, 1):.0%} of a step; the "
            f"mini-batch gather, the second layer, the softmax, the bias updates and the sweep `V1 -= dV1` share "
            f"the rest. The products themselves reach {ceiling * summary['flops_per_update'] / 1e9 / summary['peak_gflops']:.0%} "
            f"of the {w['peak_size']}² peak: with B = {w['n_batch']} one of their three dimensions is "
            f"short, which bounds what any trainer built on them can reach.")


def render_study(study):
    if study is None:
        return "Skipped (`--skip-study`)."
    lines = [f"`{study['command']}`, run in a fresh temporary folder TMP with "
             f"`MLFLOW_TRACKING_URI=sqlite:///TMP/mlflow.db`."]
    if study.get("wall_seconds") is not None:
        lines.append(f"Wall time {study['wall_seconds']:.1f} s, peak RSS of the child "
                     f"{_gb(study.get('peak_rss'))} GB (`wait4` rusage `ru_maxrss`), "
                     f"{study['updates']:,} network updates in populations of K = {study['K']}.")
    training = (study.get("seconds") or {}).get("training")
    if training:
        lines.append(f"Its training alone ran at {study['updates'] / training:,.0f} updates/s "
                     f"({study['updates']:,} in {training:.1f} s).")
    if study.get("error"):
        lines.append(f"It failed: {study['error']}")
    if study.get("seconds"):
        wall = study["wall_seconds"]
        lines += ["", "| part (the study's own `seconds`) | s | share of wall |", "|---|---:|---:|"]
        for name, value in study["seconds"].items():
            lines.append(f"| {name} | {value:.1f} | {value / wall:.0%} |")
        lines.append(f"| outside `total` (interpreter, imports, exit) | "
                     f"{wall - study['seconds'].get('total', wall):.1f} | "
                     f"{(wall - study['seconds'].get('total', wall)) / wall:.0%} |")
    return "\n".join(lines)


def render_studies(summary):
    """The fine study, the pair and the study on one CPU: what each measured, or the flag that skipped it; then
    the other checkout's studies, when ``--against`` ran them."""
    others = summary.get("studies") or {}
    runs = summary.get("study_runs") or {}
    sections = [("The fine study", "fine", "--skip-fine", _render_fine),
                ("Two coarse studies started together", "pair", "--skip-pair", _render_pair),
                ("One coarse study on one CPU", "one_cpu", "--skip-taskset", _render_one_cpu)]
    if "against" in others:
        sections.append(("Against another checkout", "against", None, _render_against))
    lines = []
    for title, key, flag, render in sections:
        lines += [f"### {title}", ""]
        if key in others:
            lines.append(render(others[key], summary))
        elif runs:
            lines.append(f"Skipped (`{'--skip-study' if not runs.get('coarse') else flag}`).")
        else:
            lines.append("Not run.")
        lines.append("")
    return "\n".join(lines).rstrip()


def _seconds_table(study):
    """The study's own ``seconds`` against its wall time, as a markdown table."""
    wall = study["wall_seconds"]
    lines = ["| part (the study's own `seconds`) | s | share of wall |", "|---|---:|---:|"]
    return "\n".join(lines + [f"| {name} | {value:.1f} | {value / wall:.0%} |"
                              for name, value in study["seconds"].items()])


def _render_fine(fine, summary):
    lines = [f"`{fine['command']}`, in the folder TMP of the coarse study above (run as `--study-name coarse`), "
             f"once that study has ended."]
    if fine.get("error"):
        lines.append(f"It failed: {fine['error']}")
    elif fine.get("seconds"):
        wall = fine["wall_seconds"]
        lines += [f"Wall time {wall:.1f} s ({wall / 60:.1f} min), CPU time {fine['cpu_seconds']:.1f} s, peak RSS "
                  f"{_gb(fine.get('peak_rss'))} GB.", "", _seconds_table(fine)]
    return "\n".join(lines)


def _render_pair(pair, summary):
    alone = summary.get("study") or {}
    lines = ["Two default coarse studies, `--study-name pair-1` and `pair-2`, each in a fresh folder, started at the "
             "same moment; each one's wall time against the coarse study alone above, and their trials (λ and "
             "validation accuracies of the JSON summary) against its.", "",
             "| study | wall s | CPU s | wall vs alone | same trials as alone |", "|---|---:|---:|---:|---|"]
    verdicts = {True: "yes", False: "no", None: "–"}
    for i, p in enumerate(pair):
        if p.get("error"):
            lines.append(f"| pair-{i + 1} | failed: {p['error']} | | | |")
            continue
        vs = ratio(p["wall_seconds"], alone.get("wall_seconds") if not alone.get("error") else None)
        lines.append(f"| pair-{i + 1} | {p['wall_seconds']:.1f} | {p['cpu_seconds']:.1f} | "
                     f"{'–' if vs is None else f'{vs:.2f}x'} | "
                     f"{verdicts[same_trials(p.get('trials'), alone.get('trials'))]} |")
    return "\n".join(lines)


def _render_against(against, summary):
    """The default studies of ``--against``'s checkout beside this one's: wall times and values."""
    others = summary.get("studies") or {}
    lines = [f"The default coarse and fine studies of the checkout `{against['package']}`, run as above in a folder "
             "of their own: its coarse study just before this one's, its fine study just after this one's.", "",
             "| study | this checkout s | other checkout s | ratio | same values |", "|---|---:|---:|---:|---|"]
    for kind, mine in (("coarse", summary.get("study") or {}), ("fine", others.get("fine") or {})):
        theirs = against.get(kind) or {}
        if mine.get("error") or theirs.get("error") or not mine.get("wall_seconds") or not theirs.get("wall_seconds"):
            lines.append(f"| {kind} | failed or not run: {mine.get('error') or theirs.get('error') or '–'} | | | |")
            continue
        same = "yes" if mine.get("values") == theirs.get("values") else "no"
        lines.append(f"| {kind} | {mine['wall_seconds']:.1f} | {theirs['wall_seconds']:.1f} | "
                     f"{mine['wall_seconds'] / theirs['wall_seconds']:.3f}x | {same} |")
    return "\n".join(lines)


def _render_one_cpu(one_cpu, summary):
    if one_cpu.get("skipped"):
        return f"Not run: {one_cpu['skipped']}."
    lines = [f"`{one_cpu['command']}`."]
    if one_cpu.get("error"):
        lines.append(f"It failed: {one_cpu['error']}")
    else:
        lines.append(f"Wall time {one_cpu['wall_seconds']:.1f} s, CPU time {one_cpu['cpu_seconds']:.1f} s "
                     f"({one_cpu['cpu_seconds'] / one_cpu['wall_seconds']:.2f} CPU seconds per second).")
    return "\n".join(lines)


def render_report(summary):
    """docs/PERFORMANCE.md: command, date, machine, table, targets, method, why the population is fast."""
    m = summary["machine"]
    flops = summary["flops_per_update"]
    load = m.get("load_average")
    load_text = ", ".join(f"{v:.2f}" for v in load) if load else "unknown"
    after = m.get("load_average_after")
    load_after = ", ".join(f"{v:.2f}" for v in after) if after else "unknown"
    pools = "; ".join(m["threadpools"]) or "threadpoolctl not installed"
    w = summary["workload"]
    k = SETTINGS.ceiling_k
    ceiling_rows = k * w["hidden"]  # rows of the population's first-layer weight matrix
    rss_fallback = ("" if summary["rss_method"] == "VmHWM" else
                    " (not available here: the lifetime peak `ru_maxrss` is shown instead, so it only grows)")
    return f"""# Performance

Produced by `{summary['command']}` on {summary['date']}
(load average over 1, 5, 15 min before the run: {load_text}; after it: {load_after}).

## Machine

- CPU: {m['cpu']}, {m['logical_cores']} logical cores ({m['usable_cores']} usable), SIMD {', '.join(m['simd']) or '–'};
  memory {m['memory_bytes'] / 1e9:.1f} GB
- Python {m['python']}, numpy {m['numpy']} with {m['blas']}; thread pools: {pools}
- torch {m['torch'] or 'not installed'}{f", {m['torch_threads']} threads" if m['torch'] else ''}

## Network updates per second

CIFAR-10 split `full` ({w['n_train']:,} training images), n_batch B = {w['n_batch']},
M = {w['hidden']} hidden units, C = {w['classes']}, D = {w['inputs']}, float32, {w['steps']} update steps per
configuration; best of {w['repeats']} rounds (median alongside). One update is one mini-batch step of one network.
"threads" is how a row used the cores it was given: slices of members, one thread each over a one-threaded
BLAS, or one slice on a BLAS of that many threads.

{render_table(summary)}

## Targets

{render_targets(summary)}

## Where the time of a step goes

{render_breakdown(summary)}

## The coarse study

{render_study(summary.get('study'))}

## Other studies

{render_studies(summary)}

## How it is measured

- **Rounds.** The machine may be shared, so every configuration runs once per round, one after the other,
  and figures are compared as ratios within the same run; the best round counts (noise only ever slows a
  run down), the median is shown beside it.
- **Updates/s** = K × (update steps from the end of the first to the end of the last) / the seconds
  between the two; setup (initial weights, buffers) and the trainer's evaluations fall outside.
  The trainer runs one cycle with `n_s` = steps / 2, `evals_per_cycle=1`, `eval_train_size=100`,
  no validation set, λ log-spaced over 1e-5 .. 1e-1; its evaluation seconds are in the JSON output.
- **FLOP per update** (matrix products only) = 4·M·D·B + 6·C·M·B = {flops / 1e6:.2f} MFLOP:
  2·M·D·B for the forward product W1 X, 2·M·D·B for the gradient product G1 Xᵀ, and 2·C·M·B each
  for W2 H, W2ᵀ G and G Hᵀ. Effective GFLOP/s = updates/s × that / 10⁹; "% of peak" divides it by the
  best {w['peak_size']}² @ {w['peak_size']}² float32 product measured in the same run.
- **Baselines.** The plain numpy loop is SPEC's update written out for one network (forward, backward,
  `W -= eta * (grad + 2·λ·W)`, mini-batches by fancy indexing, triangular η). PyTorch trains the same
  network one at a time: `nn.Linear` layers, `SGD` with `weight_decay = 2·λ` on the weights,
  `CyclicLR(base_lr=1e-5, max_lr=0.1, step_size_up=n_s, mode="triangular", cycle_momentum=False)`,
  `torch.set_num_threads(os.cpu_count())`. Both use λ = {SETTINGS.baseline_lam:g}.
- **Slices.** Studies give the trainer the threads of their share of the cores (`CoreShare` of
  `clrsearch/search/cores.py`: the usable CPUs over the clrsearch processes training, one slot each) as
  `train(..., threads=)`; the trainer cuts the population into that many slices of
  members, each worked by a thread of its own over a single-threaded BLAS (`clrsearch/nn/threads.py`). The
  benchmark holds such a share while the rows run (and lets it go before any study starts), and hands the
  trainer rows its threads, as a study does. The rows "one slice (multi-threaded
  BLAS)" train the same population with `threads=1`: one slice, the BLAS splitting
  each product over the share's threads. The info lines "in slices vs one slice" divide the two rates. The row
  of {SETTINGS.final_k} streams gives each network a mini-batch order of its own, as the final model's replicates have.
- **Plain broadcasting step.** The row "plain broadcasting step" trains K = {max(SETTINGS.populations)} networks with
  SPEC's update written once over the leading axis K (`broadcast_step` in `tools/bench.py`: `W -= eta * (grad +
  2·λ·W)`, the two first-layer products one large product each) on a multi-threaded BLAS. The info line "trainer vs
  the plain broadcasting step" is what the trainer's step adds to it: the weight decay kept as one factor per
  member, the first-layer gradient subtracted in cache-sized blocks of rows, and the slices of members
  (`clrsearch/nn/step.py`, `clrsearch/nn/threads.py`).
- **Mixed schedules.** The row "population mixing schedules" trains the K = {max(SETTINGS.populations)} population
  with one `TrainConfig` per member, differing only in `n_s`: every other member has twice the half-cycle (`n_s` =
  steps instead of steps / 2), and `max_steps` = steps for all, so every member trains every
  measured step and no member ends a cycle or is evaluated before the last. Its rate over that of the same
  population with one schedule (the sliced row of the same K) is shown without a goal: the issue's "the
  common case (one schedule) slows by at most 3%" compares one schedule before and after the trainer learnt
  to mix them, which one run of one version cannot measure.
- **Studies.** Each is a whole command in a child process, in a fresh folder (its Optuna storage and MLflow
  store there), started once the rows are done; wall time from its start to its exit, CPU time (user + sys)
  and peak RSS from its `wait4` rusage, the time split from the `seconds` of its JSON summary. The coarse
  study runs as `--study-name coarse`; the fine study then runs in its folder, reading it through the same
  `--storage` and `--coarse-study coarse` (`--skip-fine`). Two coarse studies, `pair-1` and `pair-2`, start
  at the same moment in two folders, each timed against the coarse study alone, their trials' λ and
  validation accuracies compared with its (`--skip-pair`). One coarse study runs under
  `taskset -c <first CPU>`, where taskset exists and the process may use 2 CPUs or more (`--skip-taskset`).
  `--skip-study` skips them all.
- **Ceiling.** The two (K·M, D) products of a K = {k} step alone, at the trainer's shapes
  ((K·M, D) @ (D, B) and (K·M, B) @ (B, D)): what the BLAS gives those shapes, whatever the rest of the step costs.
- **Peak RSS** is the process's resident-set high-water mark while the configuration ran, reset before
  each one through `/proc/self/clear_refs` and read from `VmHWM`{rss_fallback}; it includes
  the {w['n_train']:,} training images held in memory ({w['data_bytes'] / 1e9:.2f} GB) and the loaded libraries.

## Why the population is fast

A population of K networks keeps its first-layer weights as one (K·M, D) matrix. Each step is then one
(K·M, D) @ (D, B) product for the forward pass and one (K·M, B) @ (B, D) product for the W1 gradient,
however many networks train: the mini-batch is gathered once and streamed once per layer for all K, and
the BLAS gets matrices large enough to block for its caches and to split across every core, where a
single network's (M, D) @ (D, B) is too small to keep {m['usable_cores']} cores and their vector units busy.

Weight decay is folded into one scale per member (W1 = s·V1): multiplying by (1 − 2ηλ) changes K numbers
instead of sweeping the {ceiling_rows} × {w['inputs']} weights, so W1 — {ceiling_rows * w['inputs'] * 4 / 1e6:.0f} MB at
K = {k}, far more than the caches — is read and written once per step, by the gradient subtraction,
instead of twice. That subtraction follows the gradient product a few MB of rows at a time, so the
gradient is read back from the cache rather than from memory. The small second-layer work ((K, C, M) weights) and the softmax are batched over K too,
so the Python overhead of a step is paid once for the whole population.
"""


def _parser():
    parser = ArgumentParser(prog="python tools/bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="folder cifar-10-batches-py or its parent "
                        "(default: $CLRSEARCH_DATA, else the per-user cache); never downloaded here")
    parser.add_argument("--steps", type=positive_int, default=SETTINGS.steps,
                        help=f"update steps per configuration and round (default {SETTINGS.steps})")
    parser.add_argument("--repeats", type=positive_int, default=SETTINGS.repeats,
                        help=f"rounds; the best counts (default {SETTINGS.repeats})")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--out", help="also write the markdown report there, e.g. docs/PERFORMANCE.md")
    parser.add_argument("--skip-study", action="store_true",
                        help="run no study at all (neither the coarse study nor those below)")
    parser.add_argument("--skip-fine", action="store_true",
                        help="do not run the default fine study on the coarse study (about 7 minutes)")
    parser.add_argument("--skip-pair", action="store_true",
                        help="do not run two default coarse studies started together (about 2 minutes)")
    parser.add_argument("--skip-taskset", action="store_true",
                        help="do not run a default coarse study under taskset -c on one CPU (about 2 minutes)")
    parser.add_argument("--against", metavar="CHECKOUT",
                        help="also time the default coarse and fine studies of the clrsearch in this checkout "
                             "(e.g. a git worktree of main) and compare wall times and values")
    return parser


@entry_point
def main(argv=None):
    """Measure, print the table (or JSON), write the report; exit status 0."""
    arg_list = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(arg_list)
    if args.steps < 4:
        raise UsageError(f"--steps must be at least 4 (a cycle of two rising and two falling steps), not {args.steps}")
    say("loading CIFAR-10 split full")
    train_set = load_training_set(args.data_dir)
    torch = import_torch()
    meta = {"command": shlex.join(["python", "tools/bench.py", *arg_list]),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    meta["machine"] = machine_info(torch)
    say(f"load average {', '.join(f'{v:.2f}' for v in meta['machine']['load_average'] or [])}")
    steps = 2 * (args.steps // 2)
    D, N = train_set.X.shape
    C = train_set.Y.shape[0]
    settings = SETTINGS
    flops = update_flops(D, settings.hidden, C, settings.n_batch)
    meta["workload"] = {"n_train": N, "n_batch": settings.n_batch, "hidden": settings.hidden, "classes": C,
                        "inputs": D, "steps": steps, "repeats": args.repeats, "dtype": "float32",
                        "peak_size": settings.peak_size,
                        "data_bytes": train_set.X.nbytes + train_set.Y.nbytes}
    with PeakRSS() as probe:
        pass
    meta["rss_method"] = probe.method
    peaks, rows = measure(train_set, steps, args.repeats, torch)
    del train_set
    runs = StudyRuns.of(args)
    meta["study_runs"] = asdict(runs)
    study, meta["studies"] = run_studies(args.data_dir, runs)
    meta["machine"]["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    summary = summarise(peaks, rows, study, flops, meta)
    if args.json:
        print(json.dumps(summary))
    else:
        print(render_table(summary))
        print()
        print(render_targets(summary))
    if args.out:
        out = Path(args.out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(render_report(summary))
        except OSError as e:
            raise UsageError(f"cannot write {out} ({e.strerror})") from e
        say(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
