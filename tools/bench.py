"""Benchmark: network updates per second of the population trainer against the obvious baselines.

    python tools/bench.py [--data-dir DIR] [--steps 300] [--repeats 5] [--json]
                          [--out docs/PERFORMANCE.md] [--skip-study] [--fine] [--pair] [--taskset]

On the 45,000 training images of split ``full`` (n_batch 100, M = 50, C = 10,
float32) every configuration runs the same number of update steps:

1. the float32 matrix-multiply peak of numpy's BLAS (one large square product);
2. a plain single-network numpy loop, written here as the obvious baseline;
3. PyTorch on the CPU, one network at a time (skipped when torch is missing);
4. :func:`clrsearch.nn.trainer.train` with K = 1, 10 and 30 networks, cut into
   one slice per core as studies cut it; K = 30 and K = 5 (five mini-batch
   streams, the final model's shape) also in one slice on a multi-threaded
   BLAS; K = 30 mixing two schedules;
5. the BLAS ceiling of K = 30: its two first-layer products alone;
6. unless ``--skip-study``, the default coarse study end to end, in a child process;
   with ``--fine`` the default fine study after it (race and final model included),
   with ``--pair`` two coarse studies started together, with ``--taskset`` one
   coarse study on one CPU (``taskset -c 0``).

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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

import clrsearch
from clrsearch.cli.args import ArgumentParser, entry_point, positive_int
from clrsearch.config import DEFAULT_SEARCH, DataConfig, TrainConfig
from clrsearch.data import load_splits
from clrsearch.errors import UsageError
from clrsearch.nn import network
from clrsearch.nn.trainer import train
from clrsearch.search.cores import cpus


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
    target_mixed: float = 0.97  # ratio, K = 30 of two schedules over K = 30 of one, at least
    target_peak_share: float = 0.60  # fraction, K = 30 effective GFLOP/s over the matmul peak, at least
    target_k1_vs_numpy: float = 1.0  # ratio, K = 1 updates/s over the plain numpy loop's, at least
    target_study_seconds: float = 60.0  # seconds of wall time of the default coarse study, at most
    target_study_bytes: float = 2.5e9  # bytes of peak RSS of the default coarse study, at most
    target_tracking_share: float = 0.03  # fraction, tracking seconds over the study's wall time, at most
    target_overhead_share: float = 0.05  # fraction, tracking + evaluation seconds over its wall time, at most
    target_fine_seconds: float = 480.0  # seconds of wall time of the default fine study, at most
    target_pair_ratio: float = 2.2  # each of two coarse studies started together, over one alone, at most
    target_one_cpu_load: float = 1.1  # CPU seconds over wall seconds of a study under taskset -c 0, at most
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


class SlicedClock(StepClock):
    """A :class:`StepClock` that also grants the trainer every CPU, as a study alone on the machine gets them:
    the trainer then cuts its population into one slice of members per core (:mod:`clrsearch.nn.threads`)."""

    def cores(self):
        return cpus()


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
    rng = np.random.default_rng(loop.shuffle_seed)
    n = X.shape[1]
    per_epoch = n // loop.n_batch
    t = 0
    while t < loop.steps:
        order = rng.permutation(n)
        for b in range(min(per_epoch, loop.steps - t)):
            idx = order[b * loop.n_batch:(b + 1) * loop.n_batch]
            numpy_step(params, X[:, idx], Y[:, idx], triangular_eta(t, loop.n_s), loop.lam)
            t += 1
            if clock is not None:
                clock.update(1)
    return params


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
    """Repeated timings of one configuration; ``rates`` are network updates per second."""

    name: str
    K: int
    rates: list = field(default_factory=list)
    peak_rss: int = 0
    rss_start: int | None = None
    extra_seconds: list = field(default_factory=list)  # setup + evaluation outside the timed updates
    eval_seconds: list = field(default_factory=list)
    skipped: str | None = None

    @property
    def best(self):
        return max(self.rates) if self.rates else None

    @property
    def median(self):
        return statistics.median(self.rates) if self.rates else None


def load_training_set(data_dir):
    """The 45,000 training images of split ``full``, float32."""
    return load_splits(DataConfig("full", data_dir=data_dir), dtype=np.float32, download=False).train


def say(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


def measure(train_set, steps, repeats, torch, peak_size=None, populations=None):
    """Run every configuration ``repeats`` times in rounds; returns (peak GFLOP/s per round, measurements).

    ``peak_size`` and ``populations`` default to those of ``SETTINGS``.
    """
    settings = SETTINGS
    peak_size = settings.peak_size if peak_size is None else peak_size
    populations = settings.populations if populations is None else populations
    X, Y, y = train_set.X, train_set.Y, train_set.y
    D, C = X.shape[0], Y.shape[0]
    baseline = Loop(steps, settings.n_batch, max(1, steps // 2), settings.baseline_lam)
    init = network.init_params(D, settings.hidden, C, np.random.default_rng(0), np.float32)
    rows = {"numpy": Measurement("plain numpy loop, one network", 1)}
    rows["torch"] = Measurement("PyTorch CPU, one network at a time", 1)
    if torch is None:
        rows["torch"].skipped = "torch is not installed (pip install -e '.[bench]')"
    for K in populations:
        rows[f"K{K}"] = Measurement(f"clrsearch trainer, K = {K}", K)
    big, final_k = max(populations), settings.final_k
    rows["one slice"] = Measurement(f"clrsearch trainer, K = {big}, one slice on a multi-threaded BLAS", big)
    rows["mixed"] = Measurement(f"clrsearch trainer, K = {big}, two schedules (n_s and 2·n_s)", big)
    rows["streams"] = Measurement(f"clrsearch trainer, K = {final_k}, {final_k} mini-batch streams", final_k)
    rows["streams one slice"] = Measurement(
        f"clrsearch trainer, K = {final_k}, {final_k} mini-batch streams, one slice on a multi-threaded BLAS", final_k)
    rows["ceiling"] = Measurement(f"BLAS ceiling: the two first-layer products of K = {settings.ceiling_k} alone",
                                  settings.ceiling_k)
    peaks = []

    def timed(key, run, sliced=True):
        row = rows[key]
        clock = SlicedClock() if sliced else StepClock()
        with PeakRSS() as rss:
            started = time.perf_counter()
            extra = run(clock)
            wall = time.perf_counter() - started
        row.rates.append(row.K * clock.steps / clock.seconds)
        row.peak_rss = max(row.peak_rss, rss.peak)
        row.rss_start = rss.start if row.rss_start is None else min(row.rss_start, rss.start or row.rss_start)
        row.extra_seconds.append(wall - clock.seconds)
        if extra is not None:
            row.eval_seconds.append(extra)
        say(f"  {row.name}: {row.rates[-1]:,.0f} updates/s")

    def trainer(K, configs=None):
        def run(clock):
            result = train(train_set, None, configs or trainer_config(steps), population_lams(K), tuple(range(K)),
                           progress=clock)
            return result.eval_seconds
        return run

    base = trainer_config(steps)
    two_schedules = [base if k % 2 == 0 else replace(base, n_s=2 * base.n_s, max_steps=steps) for k in range(big)]
    streams = [replace(base, shuffle_seed=k) for k in range(final_k)]

    def plain(clock):
        numpy_loop(X, Y, init, baseline, clock=clock)

    def pytorch(clock):
        torch_loop(torch, X, y, init, baseline, clock=clock)

    def ceiling(clock):
        ceiling_loop(settings.ceiling_k, settings.hidden, D, settings.n_batch, steps, clock=clock)

    for r in range(repeats):
        say(f"round {r + 1} of {repeats}")
        peaks.append(matmul_rate(peak_size, settings.peak_products))
        say(f"  float32 matmul peak {peak_size}²: {peaks[-1]:.1f} GFLOP/s")
        timed("numpy", plain)
        if torch is not None:
            timed("torch", pytorch)
        for K in populations:
            timed(f"K{K}", trainer(K))
        timed("one slice", trainer(big), sliced=False)
        timed("mixed", trainer(big, two_schedules))
        timed("streams", trainer(final_k, streams))
        timed("streams one slice", trainer(final_k, streams), sliced=False)
        timed("ceiling", ceiling)
    return peaks, list(rows.values())


def study_command(kind, data_dir, folder, name, prefix=()):
    """``python -m clrsearch.<kind>`` of the default study on the data, its storage in ``folder``."""
    where = [] if data_dir is None else ["--data-dir", str(Path(data_dir).expanduser().absolute())]
    return [*prefix, sys.executable, "-m", f"clrsearch.{kind}", *where, "--storage",
            f"sqlite:///{folder}/studies.db", "--study-name", name, *(["--coarse-study", "coarse"] if kind == "fine"
                                                                       else []), "--json"]


def run_study(data_dir, command=None, timeout=None, folder=None):
    """Run the default coarse study in a child process; wall time, peak RSS, CPU time and its own time split.

    The child writes its Optuna storage and MLflow store in ``folder`` (default:
    a fresh temporary one), which is also its working directory (so no
    ``studies/coarse.toml`` of the caller is read); it imports the same
    clrsearch as this process. ``timeout`` (seconds) defaults to
    ``SETTINGS.study_timeout``. Failures are reported in the result, not raised.
    """
    return finish_study(start_study(data_dir, command, folder), timeout)


def start_study(data_dir, command=None, folder=None):
    """Start a study command as :func:`run_study` does; the handle :func:`finish_study` waits for."""
    tmp = None
    if folder is None:
        tmp = tempfile.TemporaryDirectory(prefix="clrsearch-bench-")
        folder = tmp.name
    if command is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        command = study_command("coarse", data_dir, folder, f"bench-{stamp}")
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{folder}/mlflow.db")
    package_parent = str(Path(clrsearch.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    shown = ["python" if part == sys.executable else part.replace(folder, "TMP") for part in command]
    handle = {"study": {"command": shlex.join(shown), "wall_seconds": None, "peak_rss": None, "seconds": None,
                        "cpu_seconds": None, "trials": None, "error": None},
              "tmp": tmp, "folder": folder}
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
            study["trials"] = [(row.get("lam"), row.get("val_accuracies")) for row in summary.get("trials", [])]
        return study
    finally:
        if handle["tmp"] is not None:
            handle["tmp"].cleanup()


def run_fine(data_dir):
    """The default coarse study, then the default fine study (race and final model included) on it, in one
    fresh folder; the fine study's result (see :func:`run_study`)."""
    with tempfile.TemporaryDirectory(prefix="clrsearch-bench-") as folder:
        coarse = run_study(data_dir, study_command("coarse", data_dir, folder, "coarse"), folder=folder)
        if coarse["error"]:
            return {**coarse, "error": f"its coarse study failed: {coarse['error']}"}
        return run_study(data_dir, study_command("fine", data_dir, folder, "fine"), folder=folder)


def run_pair(data_dir):
    """Two default coarse studies started at the same moment, each in a fresh folder under a name of its own."""
    handles = [start_study(data_dir, None) for _ in range(2)]
    return [finish_study(handle) for handle in handles]


def run_one_cpu(data_dir):
    """The default coarse study under ``taskset -c <first CPU>``; None where taskset or a second CPU is missing."""
    import shutil

    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if shutil.which("taskset") is None or len(allowed) < 2:
        return None
    with tempfile.TemporaryDirectory(prefix="clrsearch-bench-") as folder:
        command = study_command("coarse", data_dir, folder, "one-cpu", prefix=("taskset", "-c", str(allowed[0])))
        return run_study(data_dir, command, folder=folder)


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
    """The JSON object of a run: rows with their derived figures, the study and the targets."""
    peak = max(peaks)
    by_key = {}
    results = []
    for row in rows:
        entry = {"name": row.name, "K": row.K, "skipped": row.skipped}
        if row.rates:
            entry.update({
                "updates_per_s": row.best, "updates_per_s_median": row.median, "updates_per_s_all": row.rates,
                "gflops": row.best * flops / 1e9, "peak_share": row.best * flops / 1e9 / peak,
                "peak_rss_bytes": row.peak_rss, "rss_before_bytes": row.rss_start,
                "setup_and_eval_seconds": min(row.extra_seconds),
                "eval_seconds": min(row.eval_seconds) if row.eval_seconds else None,
            })
        results.append(entry)
        by_key[row.name] = entry
    torch_rate = next((r.best for r in rows if r.name.startswith("PyTorch")), None)
    for entry in results:
        if entry.get("updates_per_s") and torch_rate:
            entry["vs_torch"] = entry["updates_per_s"] / torch_rate
    others = meta.get("studies") or {}
    return {**meta, "peak_gflops": peak, "peak_gflops_all": peaks, "flops_per_update": flops,
            "results": results, "study": study, "targets": targets(results, study, peak) + study_targets(study, others)}


def targets(results, study, peak):
    """Pass/fail lines; ``passed`` is None when the figure was not measured."""
    def rate(prefix):
        return next((r.get("updates_per_s") for r in results if r["name"].startswith(prefix)), None)

    k30, k1 = rate("clrsearch trainer, K = 30"), rate("clrsearch trainer, K = 1")
    torch_rate, numpy_rate = rate("PyTorch"), rate("plain numpy")
    k30_gflops = next((r.get("gflops") for r in results if r["name"].startswith("clrsearch trainer, K = 30")), None)
    lines = []
    goals = SETTINGS

    def line(what, goal, value, passed, shown):
        lines.append({"target": what, "goal": goal, "measured": value, "shown": shown, "passed": passed})

    ratio = k30 / torch_rate if k30 and torch_rate else None
    line("K = 30 updates/s vs PyTorch one network at a time", f">= {goals.target_vs_torch:g}x", ratio,
         None if ratio is None else ratio >= goals.target_vs_torch, "not measured" if ratio is None else f"{ratio:.1f}x")
    share = k30_gflops / peak if k30_gflops else None
    line("K = 30 effective GFLOP/s vs measured matmul peak", f">= {goals.target_peak_share:.0%}", share,
         None if share is None else share >= goals.target_peak_share,
         "not measured" if share is None else f"{share:.1%} ({k30_gflops:.1f} of {peak:.1f} GFLOP/s)")
    ratio = k1 / numpy_rate if k1 and numpy_rate else None
    line("K = 1 updates/s vs the plain numpy loop", f">= {goals.target_k1_vs_numpy:g}x", ratio,
         None if ratio is None else ratio >= goals.target_k1_vs_numpy, "not measured" if ratio is None else f"{ratio:.2f}x")
    wall = study.get("wall_seconds") if study and not study.get("error") else None
    line("coarse study wall time", f"<= {goals.target_study_seconds:g} s", wall,
         None if wall is None else wall <= goals.target_study_seconds, "not measured" if wall is None else f"{wall:.1f} s")
    rss = study.get("peak_rss") if study and not study.get("error") else None
    line("coarse study peak memory (RSS)", f"<= {goals.target_study_bytes / 1e9:g} GB", rss,
         None if rss is None else rss <= goals.target_study_bytes, "not measured" if rss is None else f"{rss / 1e9:.2f} GB")
    tracking = (study.get("seconds") or {}).get("tracking") if wall else None
    share = tracking / wall if tracking is not None else None
    line("coarse study tracking time vs its wall time", f"<= {goals.target_tracking_share:.0%}", share,
         None if share is None else share <= goals.target_tracking_share,
         "not measured" if share is None else f"{share:.1%} ({tracking:.1f} s)")
    k1_torch = k1 / torch_rate if k1 and torch_rate else None
    line("K = 1 updates/s vs PyTorch one network at a time", f">= {goals.target_k1_vs_torch:g}x", k1_torch,
         None if k1_torch is None else k1_torch >= goals.target_k1_vs_torch,
         "not measured" if k1_torch is None else f"{k1_torch:.2f}x")
    mixed = rate(f"clrsearch trainer, K = {max(goals.populations)}, two schedules")
    single = rate(f"clrsearch trainer, K = {max(goals.populations)}")
    ratio = mixed / single if mixed and single else None
    line("two schedules in one population vs one schedule, updates/s", f">= {goals.target_mixed:g}x", ratio,
         None if ratio is None else ratio >= goals.target_mixed, "not measured" if ratio is None else f"{ratio:.2f}x")
    return lines


def study_targets(study, others):
    """Pass/fail lines of the studies: the coarse study's overheads, the fine study, two coarse studies at once,
    one on one CPU. ``others`` holds what was run: ``fine``, ``pair`` (two results), ``one_cpu``."""
    goals = SETTINGS
    lines = []

    def line(what, goal, value, passed, shown):
        lines.append({"target": what, "goal": goal, "measured": value, "shown": shown, "passed": passed})

    alone = study.get("wall_seconds") if study and not study.get("error") else None
    seconds = (study or {}).get("seconds") or {}
    overhead = seconds.get("tracking", 0.0) + seconds.get("evaluation", 0.0) if alone and seconds else None
    share = overhead / alone if overhead is not None else None
    line("coarse study tracking + evaluation vs its wall time", f"<= {goals.target_overhead_share:.0%}", share,
         None if share is None else share <= goals.target_overhead_share,
         "not measured" if share is None else f"{share:.1%} ({overhead:.1f} s)")
    fine = others.get("fine")
    wall = fine.get("wall_seconds") if fine and not fine.get("error") else None
    line("fine study wall time, race and final model included", f"<= {goals.target_fine_seconds:g} s", wall,
         None if wall is None else wall <= goals.target_fine_seconds,
         "not measured" if wall is None else f"{wall:.1f} s ({wall / 60:.1f} min)")
    pair = [p for p in others.get("pair") or [] if not p.get("error")]
    ratios = [p["wall_seconds"] / alone for p in pair] if alone and len(pair) == 2 else None
    walls = ", ".join(f"{p['wall_seconds']:.1f}" for p in pair)
    line("each of two coarse studies started together vs one alone", f"<= {goals.target_pair_ratio:g}x",
         ratios, None if ratios is None else max(ratios) <= goals.target_pair_ratio,
         "not measured" if ratios is None else " and ".join(f"{r:.2f}x" for r in ratios)
         + f" ({walls} s against {alone:.1f} s)")
    same = all(p.get("trials") == study.get("trials") for p in pair) if ratios is not None else None
    line("two coarse studies started together give the values of one alone", "the same trials", same, same,
         "not measured" if same is None else "the same lambdas and accuracies" if same else "values differ")
    one_cpu = others.get("one_cpu")
    load = (one_cpu["cpu_seconds"] / one_cpu["wall_seconds"]
            if one_cpu and not one_cpu.get("error") and one_cpu.get("cpu_seconds") else None)
    line("coarse study under taskset -c 0: CPU seconds per wall second", f"<= {goals.target_one_cpu_load:g}", load,
         None if load is None else load <= goals.target_one_cpu_load,
         "not measured" if load is None else f"{load:.2f} ({one_cpu['wall_seconds']:.1f} s wall)")
    return lines


def _gb(n):
    return f"{n / 1e9:.2f}" if n is not None else "–"


def render_table(summary):
    """The results as a markdown table."""
    n = summary["workload"]["peak_size"]
    lines = ["| configuration | K | updates/s (best) | median | GFLOP/s | % of peak | vs PyTorch | peak RSS GB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|",
             f"| float32 matmul peak, {n}² @ {n}² | | | | {summary['peak_gflops']:.1f} | 100% | | |"]
    for r in summary["results"]:
        if r.get("updates_per_s") is None:
            lines.append(f"| {r['name']} | {r['K']} | skipped: {r.get('skipped') or 'not run'} | | | | | |")
            continue
        vs = f"{r['vs_torch']:.1f}x" if r.get("vs_torch") else "–"
        lines.append(f"| {r['name']} | {r['K']} | {r['updates_per_s']:,.0f} | {r['updates_per_s_median']:,.0f} | "
                     f"{r['gflops']:.1f} | {r['peak_share']:.0%} | {vs} | {_gb(r['peak_rss_bytes'])} |")
    study = summary.get("study")
    if study is not None:
        if study.get("error"):
            lines.append(f"| default coarse study (child process) | {study['K']} | failed: {study['error']} | | | | | |")
        else:
            rate = study["updates"] / study["wall_seconds"]
            lines.append(f"| default coarse study end to end, {study['wall_seconds']:.1f} s wall | {study['K']} | "
                         f"{rate:,.0f} | | {rate * summary['flops_per_update'] / 1e9:.1f} | "
                         f"{rate * summary['flops_per_update'] / 1e9 / summary['peak_gflops']:.0%} | | "
                         f"{_gb(study['peak_rss'])} |")
    return "\n".join(lines)


def render_targets(summary):
    marks = {True: "PASS", False: "FAIL", None: "n/a "}
    return "\n".join(f"- **{marks[t['passed']]}** {t['target']} {t['goal']}: {t['shown']}" for t in summary["targets"])


def render_breakdown(summary):
    """What the ceiling row says about the step of the population of K = ``SETTINGS.ceiling_k``."""
    k, w = SETTINGS.ceiling_k, summary["workload"]
    rows = {r["name"]: r for r in summary["results"]}
    trainer = rows.get(f"clrsearch trainer, K = {k}", {}).get("updates_per_s")
    ceiling = next((r.get("updates_per_s") for r in summary["results"] if r["name"].startswith("BLAS ceiling")), None)
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
    """The fine study, the pair and the study on one CPU, as far as they ran."""
    others = summary.get("studies") or {}
    lines = []
    fine = others.get("fine")
    if fine:
        lines += ["### The fine study", "",
                  f"`{fine['command']}` after the default coarse study (`--study-name coarse`) in the same fresh "
                  "folder TMP."]
        if fine.get("error"):
            lines.append(f"It failed: {fine['error']}")
        elif fine.get("seconds"):
            wall = fine["wall_seconds"]
            lines += [f"Wall time {wall:.1f} s ({wall / 60:.1f} min).", "",
                      "| part (the study's own `seconds`) | s | share of wall |", "|---|---:|---:|"]
            lines += [f"| {name} | {value:.1f} | {value / wall:.0%} |" for name, value in fine["seconds"].items()]
        lines.append("")
    pair = others.get("pair")
    if pair:
        lines += ["### Two coarse studies started together", "",
                  "Two default coarse studies, each in a fresh folder under a name of its own, started in the same "
                  "second; each one's wall time against the coarse study alone above.", "",
                  "| study | wall s | CPU s | same trials as alone |", "|---|---:|---:|---|"]
        alone = summary.get("study") or {}
        for i, p in enumerate(pair):
            if p.get("error"):
                lines.append(f"| {i + 1} | failed: {p['error']} | | |")
            else:
                lines.append(f"| {i + 1} | {p['wall_seconds']:.1f} | {p['cpu_seconds']:.1f} | "
                             f"{'yes' if p.get('trials') == alone.get('trials') else 'no'} |")
        lines.append("")
    one_cpu = others.get("one_cpu")
    if one_cpu:
        lines += ["### One coarse study on one CPU", "", f"`{one_cpu['command']}`."]
        if one_cpu.get("error"):
            lines.append(f"It failed: {one_cpu['error']}")
        else:
            lines.append(f"Wall time {one_cpu['wall_seconds']:.1f} s, CPU time {one_cpu['cpu_seconds']:.1f} s "
                         f"({one_cpu['cpu_seconds'] / one_cpu['wall_seconds']:.2f} CPU seconds per second).")
        lines.append("")
    return "\n".join(lines) if lines else "Not run (`--fine`, `--pair`, `--taskset`)."


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
- **Slices.** Studies give the trainer one thread per core they may use; each works a slice of the
  population's members over a single-threaded BLAS (`clrsearch/nn/threads.py`). The trainer rows get the same;
  the rows "one slice on a multi-threaded BLAS" train the same population in one slice, the BLAS splitting
  each product over the cores. The row of {SETTINGS.final_k} streams gives each network a mini-batch order of its own, as the
  final model's replicates have; the row of two schedules gives every other network twice the half-cycle.
- **Studies.** Each runs in a child process in a fresh folder (its Optuna storage and MLflow store there);
  wall time from its start to its exit, CPU time from its `wait4` rusage. `--fine` runs the default coarse
  study then the default fine study in one folder; `--pair` starts two default coarse studies in the same
  second; `--taskset` runs one under `taskset -c <first CPU>`.
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
    parser.add_argument("--skip-study", action="store_true", help="do not run the default coarse study")
    parser.add_argument("--fine", action="store_true",
                        help="also run the default fine study after a coarse one (about 7 minutes)")
    parser.add_argument("--pair", action="store_true", help="also run two default coarse studies at once")
    parser.add_argument("--taskset", action="store_true", help="also run a default coarse study on one CPU")
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
    study = None
    if not args.skip_study:
        say("coarse study in a child process")
        study = run_study(args.data_dir)
        study["K"], study["updates"] = study_shape()
        if study["error"]:
            say(f"  coarse study failed: {study['error']}")
        else:
            say(f"  coarse study: {study['wall_seconds']:.1f} s, peak RSS {_gb(study['peak_rss'])} GB")
    meta["studies"] = {}
    for flag, name, run in ((args.fine, "fine", run_fine), (args.pair, "pair", run_pair),
                            (args.taskset, "one_cpu", run_one_cpu)):
        if flag and not args.skip_study:
            say(f"{name} studies in child processes")
            meta["studies"][name] = run(args.data_dir)
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
