"""Shared references of the tests, written independently of the package.

- :func:`write_tiny_cifar`: a tiny CIFAR-10 copy in the official on-disk format;
- :func:`read_raw_batch`: a batch read back with plain ``pickle``; :func:`assert_one_line_naming`;
- :func:`tiny_problem`, :func:`gaussian_dataset`, :func:`random_network`: small synthetic problems;
- :func:`centred_differences`: the gradient of ``network.cost`` by its definition, entry by entry;
- :func:`copy_store`, :func:`copy_storage`: an MLflow store and an Optuna storage copied from their templates
  (``conftest.mlflow_template``, ``conftest.optuna_template``);
- :func:`steps_and_values`, :func:`experiment_runs`: a logged metric's history, an experiment's runs;
- :func:`log_uniform_draws`: the lambdas a seeded Optuna RandomSampler draws, computed with NumPy;
- :func:`running_pids`: the workers of a study's running trials; :func:`dead_pid`: the pid of a process that
  has exited; :func:`sigint_default` for children sent Ctrl-C;
- :func:`serve_model`, :func:`free_port`, :func:`post_json`: ``mlflow models serve`` on 127.0.0.1 and a request to it;
- :data:`TINY_STUDY`, :data:`TINY_FINE`: the flags of a study that trains a few update steps per trial.

In the tiny CIFAR copy each class has its own random mean image; an image is its
class mean plus pixel noise, so a two-layer network learns it well above chance
in a few epochs, but not perfectly from 200 images.
"""
import contextlib
import json
import math
import os
import pickle
import socket
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np

CIFAR_D, CIFAR_C = 3072, 10
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")
PATTERN_AMPLITUDE = 10.0  # pixel levels (0..255) of the class mean around grey
NOISE_STD = 50.0  # pixel levels of the per-image noise


# ----------------------------------------------------------------------------- tiny CIFAR-10


def _images(rng, patterns, n):
    """Balanced labels (n,) and uint8 rows (n, D) drawn around the class patterns (C, D)."""
    labels = rng.permutation(np.arange(n) % CIFAR_C)  # (n,)
    noise = rng.standard_normal((n, CIFAR_D), dtype=np.float32)  # (n, D)
    rows = 128 + PATTERN_AMPLITUDE * patterns[labels] + NOISE_STD * noise  # (n, D)
    return np.clip(np.rint(rows), 0, 255).astype(np.uint8), labels


def _dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_tiny_cifar(dest, n_per_batch=200, n_test=200, seed=0) -> Path:
    """Write ``dest/cifar-10-batches-py`` as the official python files lay it out.

    Parameters
    ----------
    dest : path
        Parent folder, created if needed.
    n_per_batch : int
        Images in each of ``data_batch_1`` .. ``data_batch_5``.
    n_test : int
        Images in ``test_batch``.
    seed : int
        Seed of the class patterns, labels and noise.

    Returns
    -------
    Path
        The ``cifar-10-batches-py`` folder.
    """
    rng = np.random.default_rng(seed)
    folder = Path(dest) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    patterns = rng.standard_normal((CIFAR_C, CIFAR_D)).astype(np.float32)  # (C, D)
    batches = [(f"data_batch_{i}", f"training batch {i} of 5", n_per_batch) for i in range(1, 6)]
    batches.append(("test_batch", "testing batch 1 of 1", n_test))
    for name, label, n in batches:
        rows, labels = _images(rng, patterns, n)
        _dump(folder / name, {
            b"batch_label": label.encode(),
            b"labels": [int(v) for v in labels],
            b"data": rows,
            b"filenames": [f"{name}_{k:05d}.png".encode() for k in range(n)],
        })
    _dump(folder / "batches.meta", {
        b"label_names": [n.encode() for n in CLASS_NAMES],
        b"num_cases_per_batch": n_per_batch,
        b"num_vis": CIFAR_D,
    })
    return folder


def assert_one_line_naming(raised, *parts):
    """The message of ``pytest.raises``' ``raised`` is one line holding every part (str of each)."""
    message = str(raised.value)
    assert "\n" not in message, message
    for part in parts:
        assert str(part) in message, message


def read_raw_batch(path):
    """Rows (N, D) uint8 and labels (N,) of a batch file, read with plain pickle."""
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    return np.asarray(d[b"data"]), np.asarray(d[b"labels"])


# ----------------------------------------------------------------------------- synthetic problems

GAUSS_D, GAUSS_C = 12, 3  # input size and classes of `gaussian_dataset`
_GAUSS_MEANS = np.random.default_rng(100).standard_normal((GAUSS_D, GAUSS_C))  # (D, C), one mean per class


def tiny_problem(rng, d, n, c):
    """Random inputs X (d, n) and one-hot labels Y (c, n), float64."""
    X = rng.standard_normal((d, n))  # (d, n)
    Y = np.eye(c)[:, rng.integers(0, c, n)]  # (c, n)
    return X, Y


def gaussian_dataset(n, seed, dtype=np.float64):
    """Gaussian inputs around one mean per class: X (12, n) Fortran order, Y (3, n) one-hot, y (n,)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, GAUSS_C, n)  # (n,)
    X = np.asfortranarray(_GAUSS_MEANS[:, y] + rng.standard_normal((GAUSS_D, n)), dtype=dtype)  # (D, n)
    return SimpleNamespace(X=X, Y=np.eye(GAUSS_C, dtype=dtype)[:, y], y=y)


def random_network(rng, d, m, c, lead=()):
    """Weights of SPEC's scales and non-zero biases, so that every gradient is exercised.

    ``lead`` adds leading axes (a population: ``(K,)``). Float64.
    """
    return {
        "W1": rng.standard_normal((*lead, m, d)) / np.sqrt(d),
        "b1": 0.1 * rng.standard_normal((*lead, m, 1)),
        "W2": rng.standard_normal((*lead, c, m)) / np.sqrt(m),
        "b2": 0.1 * rng.standard_normal((*lead, c, 1)),
    }


def centred_differences(cost, params, h, k=None):
    """(J(p + h) - J(p - h)) / 2h, perturbing one entry at a time: the gradient by its definition.

    Parameters
    ----------
    cost : callable(params) -> float, or (K,) for a population
    params : dict name -> array (not modified)
    h : float, step
    k : int or None, the member of a population whose entries are perturbed and whose cost is read

    Returns
    -------
    dict name -> array shaped like ``params[name]`` (like member ``k`` of it)
    """
    grads = {}
    for name, values in params.items():
        shape = values.shape if k is None else values.shape[1:]
        grads[name] = np.empty(shape)
        for idx in np.ndindex(shape):
            entry = idx if k is None else (k, *idx)
            costs = []
            for sign in (1, -1):
                moved = {key: v.copy() for key, v in params.items()}
                moved[name][entry] += sign * h
                J = cost(moved)
                costs.append(J if k is None else J[k])
            grads[name][idx] = (costs[0] - costs[1]) / (2 * h)
    return grads


def relative_difference(a, b):
    """Largest absolute difference relative to the largest entry of ``b``."""
    return np.abs(a - b).max() / np.abs(b).max()


# ----------------------------------------------------------------------------- MLflow, processes


def copy_store(template, folder) -> str:
    """Copy the migrated, empty MLflow store ``template`` into ``folder``/mlflow.db; returns its tracking URI.

    A copy saves each test MLflow's seconds of database migrations.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, folder / "mlflow.db")
    return f"sqlite:///{folder}/mlflow.db"


def copy_storage(template, path) -> str:
    """Copy the empty Optuna SQLite storage ``template`` (tables made, no study) to ``path``; returns its URL.

    Optuna takes seconds to create its tables in a new file; a copy opens at once.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


def steps_and_values(client, run_id, key):
    """Steps and values of a logged metric, in step order."""
    history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
    return [m.step for m in history], [m.value for m in history]


def experiment_runs(client, experiment):
    """Every run of the MLflow experiment named ``experiment`` (none when it does not exist)."""
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id], max_results=1000)


def log_uniform_draws(seed, n, low, high):
    """What Optuna's RandomSampler draws: u ~ U(log low, log high) from NumPy's RandomState(seed), then exp."""
    rng = np.random.RandomState(seed)
    return [math.exp(rng.uniform(math.log(low), math.log(high))) for _ in range(n)]


def sigint_default():
    """``preexec_fn`` of a child that must stop on SIGINT: Python only turns SIGINT into KeyboardInterrupt when
    it did not inherit it ignored, and a shell starts background jobs (such as a test run) with it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def running_pids(trials):
    """Pids of the workers that hold a RUNNING trial among ``trials`` (frozen Optuna trials, whose system
    attribute ``clrsearch:worker`` is the ``host:pid:start`` of the worker)."""
    return {int(t.system_attrs["clrsearch:worker"].split(":")[1]) for t in trials
            if t.state.name == "RUNNING" and "clrsearch:worker" in t.system_attrs}


def dead_pid():
    """The pid of a process that has run and exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# ----------------------------------------------------------------------------- tiny studies

# A few update steps per trial on the tiny CIFAR copy: every stage of a study runs, in seconds.
TINY_STUDY = ["--n-s", "10", "--n-batch", "20", "--hidden", "8", "--eval-train-size", "100", "--val-size", "200",
              "--evals-per-cycle", "2", "--quiet"]
# The fine study's own: the fixed protocol, a final model of one network on the same tiny schedule.
TINY_FINE = ["--no-race", "--final-seeds", "1", "--final-val-size", "200", "--final-extra-cycles", "0"]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that no one listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_json(url, payload, timeout=60):
    """POST ``payload`` as JSON to ``url``; returns (HTTP status, the body decoded from JSON), 4xx and 5xx too."""
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


@contextlib.contextmanager
def serve_model(mlflow_script, model_uri, folder, env, seconds=180):
    """``mlflow models serve -m model_uri --env-manager local`` on a free port of 127.0.0.1, run by the
    ``mlflow`` script ``mlflow_script`` of some environment (its folder first on the PATH, for the server's
    ``uvicorn``) in ``folder`` with the environment ``env``; yields its URL once ``/ping`` answers, within
    ``seconds``. The server's output is in ``folder``/serve.log; its process group is ended on exit."""
    env = {**env, "PATH": os.pathsep.join([str(Path(mlflow_script).parent), env.get("PATH", os.defpath)])}
    port = free_port()
    log_path = Path(folder) / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([str(mlflow_script), "models", "serve", "-m", str(model_uri), "--env-manager", "local",
                                    "--host", "127.0.0.1", "--port", str(port)],
                                   cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + seconds
            while True:
                assert process.poll() is None, log_path.read_text()[-3000:]
                try:
                    with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(1)
            yield url
        finally:
            with contextlib.suppress(ProcessLookupError):  # gone already when it failed to start
                os.killpg(process.pid, signal.SIGTERM)  # the server's own process group: its workers too
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


UNSHARE = ["unshare", "--uts", "--pid", "--fork", "--mount-proc"]  # a UTS and PID namespace of its own


def unshare_permitted():
    """Whether this process may start one (root, or user namespaces allowed)."""
    try:
        return subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
