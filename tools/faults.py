"""Fault injection: kill studies at random moments, resume them, count what was lost; feed bad input.

    python tools/faults.py --data-dir /tmp/cifar --kills 16 [--seed 0] [--storage URL] [--json]
    python tools/faults.py --data-dir /tmp/cifar --race --kills 8 [--seed 0]
    python tools/faults.py --data-dir /tmp/cifar --pruning --kills 8 [--seed 0]
    python tools/faults.py --data-dir /tmp/cifar --fresh-kills 50 [--seed 0]
    python tools/faults.py --data-dir /tmp/cifar --outages 2 [--down-seconds 10]
    python tools/faults.py --data-dir /tmp/cifar --namespaces 8 [--seed 0]

1. A reference study runs once, uninterrupted.
2. The same study, under other names, is started again and again; each start
   is killed in one of four ways: SIGKILL of a single process, Ctrl-C (SIGINT)
   of a single process, SIGKILL of the parent of ``--workers 2``, SIGKILL of
   the helper of ``--workers 2``; half of the kills at a random moment
   (uniform between 0 and the time a start takes, first the reference's, then
   the mean of the latest starts that ended by themselves), half while a
   trial trains. When a start ends by itself the study is complete and the next one
   begins, until ``--kills`` kills have landed.
3. Each study is checked against the reference: slots without a result (trials
   lost), slots with more than one (trials duplicated), values that differ,
   finished trials without a trial run in MLflow; and the MLflow store for
   runs left RUNNING.
4. Every kind of bad input in :func:`bad_inputs` is fed to a fresh working
   directory: each must exit with status 2 and one line on stderr, without a
   traceback, and leave no study and no MLflow run behind.

With ``--race`` the racing fine study is killed instead (and no bad input is
fed): a grid of 3 close lambdas and a harmful one, 2 replicates in the first
round, 2 more per round for the points tied with the best, up to 6, flipped
mini-batches (``FaultSettings.race_toml``, no final model), so that the race
runs three rounds and leaves a point behind.

1. A reference race runs once, uninterrupted, and once more with
   ``--workers 2``.
2. Kill k is of kind ``KILLS[k % 4]``; kills alternate between a random
   moment and the middle of a race round (a random wait of up to
   ``FaultSettings.mid_race_delay`` after a trial of round 2 or later of the
   killed start is seen running), shifted every four kills so that eight
   kills try each kind at both moments. Studies are restarted until a start
   ends by itself, as above.
3. Each point of each race (the ``--workers 2`` one included) is checked
   against the reference: its latest trial's ``replicates``,
   ``val_accuracies`` and value, the rounds it took part in and the round
   after which it left (the study's ``race_left``) must be exactly equal; the
   ``new_replicates`` of its trials must be disjoint and make 0, 1, ..., n-1
   (no replicate trained twice, none skipped); every slot of the reference
   has one result and no other slot has any.

With ``--pruning`` coarse studies that prune (``--pruner median``,
``FaultSettings.pruning_toml``: 12 lambdas up to 1, populations of 3, 32
hidden units) are killed as in 2., and each is checked as in 3. with the
rungs too: every slot's state (PRUNED or COMPLETE), value and intermediate
values must be the reference's. The reference runs once more with
``--workers 2`` and must give the same; it must prune some trials and not all.

With ``--fresh-kills N`` the first command on new stores is killed instead
(and no bad input is fed): ``python -m clrsearch.coarse`` (4 lambdas, 2
seeds, ``FreshKillSettings.toml``) in a folder with no MLflow store and no
study storage, SIGKILLed at a random moment of its first 15 s, which is
while it creates both stores, its study and its first trials; N times, each
in a new folder. Each is then resumed by the same command, which must end
normally, and its study checked: no slot without a result or with more than
one, no trial or MLflow run left RUNNING, no finished trial without its run,
no temporary store file left.
With ``--outages N`` nothing is killed: the coarse study runs on the
throwaway PostgreSQL server of the tests (``tests/pgcluster.py``) and logs to
a loopback ``mlflow server`` (SQLite store, a free port). N times each, a
study has its PostgreSQL server stopped, or its tracking server killed, for
``--down-seconds`` while a trial trains, within ``--outage-seconds`` (three
times the outage); it must finish by itself. Once more each, the outage
outlasts the bound (a third of it): the study must stop with one line, exit
status 2, and the same command must finish it. Last, the stores of a study
live on a small tmpfs (``mount -t tmpfs``, root only: skipped otherwise)
that is filled up mid-study: one line naming the folder, then the same
command, once space is freed, finishes the study. Each counts commands that
could not resume, trials lost, duplicated, trained again (within the bound)
and left RUNNING, and MLflow runs left RUNNING.

With ``--namespaces N`` the coarse study runs on two workers, each pid 1 of
UTS, PID and mount namespaces of its own (``unshare``, root only: skipped
with one line otherwise) of one hostname, sharing loopback and the work
folder (SQLite storage, MLflow store); N times one of them is SIGKILLed,
namespace and all, at a random moment after a trial of it is seen running
(``NamespaceSettings``; no kill when it ends first), the other must finish
the study, and the same command once more must end normally. Each counts workers and commands that
did not end normally, trials lost, trained twice, left RUNNING, without
their MLflow run, MLflow runs left RUNNING, and live trials taken over by
the other namespace (:func:`taken_over`).

Everything runs in a temporary folder (``--workdir`` to keep it), on small
settings of the real protocol (``batch1`` split, ``n_train`` 2000, 2 seeds,
8 lambdas in populations of 2; ``FaultSettings.study_toml``). The result is a
Markdown table, as in docs/RELIABILITY.md.
"""

import contextlib
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from clrsearch import tracking
from clrsearch.cli import environment
from clrsearch.cli.args import ArgumentParser, entry_point, non_negative_int, positive_float, positive_int
from clrsearch.data import ensure_data
from clrsearch.data.cifar10 import DATA_FILES, FOLDER_NAME, TEST_FILE
from clrsearch.data.download import MANIFEST_NAME
from clrsearch.search import queue
from clrsearch.search.study import ACCURACIES, LAM, RACE_LEFT, REPLICATES
from clrsearch.search.workers import exit_status


@dataclass(frozen=True)
class FaultSettings:
    """The studies that are killed, how they are watched, and the defaults of the flags."""

    study_toml: str = """\
[study]
n_trials = 8
n_seeds = 2
trials_per_population = 2
[data]
split = "batch1"
n_train = 2000
[train]
n_batch = 50
cycles = 2
n_s = 80
hidden = 16
evals_per_cycle = 2
eval_train_size = 1000
"""  # the study definition (TOML) of every killed study and of the reference
    # The racing fine study of --race: 3 close lambdas and a harmful one, 2 + 2 + 2 replicates, so that the
    # race runs rounds 2 and 3 and leaves lambda 0.3 behind after round 2. Flipped mini-batches, as the fine
    # study's defaults. 32 hidden units: from 24 rows of W1 on, a trial's values do not depend on the size
    # of the population it trains in (docs/RELIABILITY.md).
    race_toml: str = """\
[study]
grid = [0.0, 0.001, 0.002, 0.3]
n_seeds = 2
race = true
race_seeds = 2
max_seeds = 6
trials_per_population = 4
final = false
[data]
split = "full"
val_size = 1000
n_train = 2000
[train]
n_batch = 50
cycles = 2
n_s = 25
hidden = 32
evals_per_cycle = 1
eval_train_size = 500
augment = "flip"
"""  # the study definition (TOML) of every race of --race and of its reference
    # The pruning coarse study of --pruning: lambdas up to 1, of which the largest few keep the network far
    # below the others after cycle 1; populations of 3, so that trials are judged against other populations'
    # (and, with --workers 2, other workers'). 32 hidden units: a member's values do not depend on how many
    # members are left in its population once others are pruned.
    pruning_toml: str = """\
[study]
n_trials = 12
n_seeds = 2
trials_per_population = 3
lam_max = 1.0
pruner = "median"
[data]
split = "batch1"
n_train = 2000
[train]
n_batch = 50
cycles = 2
n_s = 80
hidden = 32
evals_per_cycle = 2
eval_train_size = 1000
"""  # the study definition (TOML) of every killed study of --pruning and of its references
    kills: int = 16  # default of --kills: kills to land
    seed: int = 0  # default of --seed: seed of the kill moments
    heartbeat_seconds: float = 1.0  # seconds, CLRSEARCH_HEARTBEAT_SECONDS of the killed studies
    grace_seconds: float = 3.0  # seconds, CLRSEARCH_GRACE_SECONDS of the killed studies
    poll_seconds: float = 0.05  # seconds between looks at the storage while waiting for a trial to train
    mid_trial_delay: float = 0.3  # seconds, largest random wait after a trial is seen training, before a kill
    mid_race_delay: float = 4.0  # seconds, largest random wait after a race round is seen training, before a kill
    bad_input_timeout: float = 300.0  # seconds a bad-input command may run before it counts as hung
    down_seconds: float = 10.0  # default of --down-seconds: how long a server of --outages is down


SETTINGS = FaultSettings()
KILLS = ("SIGKILL", "SIGINT", "SIGKILL parent of 2 workers", "SIGKILL helper of 2 workers")  # kinds, in turn
MOMENTS = ("at a random moment", "mid-trial")  # of the coarse kills: 0-3 at a random moment, 4-7 mid-trial, ...
RACE_MOMENTS = ("at a random moment", "mid-race round")  # of the race kills (--race), see race_plan


@dataclass
class Case:
    """One bad input: a command line (and environment) that must be refused with one line."""

    what: str  # the kind of bad input, as reported
    command: str  # "coarse" or "fine"
    argv: list
    env: dict = field(default_factory=dict)
    expect: str = ""  # a fragment of the error line
    prepare: object = None  # callable(working directory), run before the command, or None


def bad_inputs(data_dir, folder, base_argv=()):
    """Every kind of bad input, each on top of the otherwise valid ``base_argv``.

    Writes the broken files the cases need (TOML files, damaged copies of the
    data folder) under ``folder``. ``data_dir`` is a valid
    ``cifar-10-batches-py`` folder.
    """
    data_dir, folder = Path(data_dir), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base = ["--data-dir", str(data_dir), *base_argv]

    def toml(name, text):
        path = folder / f"{name}.toml"
        path.write_text(text)
        return ["--config", str(path)]

    def broken_data(name, damage):
        """A copy of the data folder (symlinks) in which ``damage(folder)`` breaks something."""
        copy = folder / name / FOLDER_NAME
        copy.mkdir(parents=True, exist_ok=True)
        for file in DATA_FILES:
            if (data_dir / file).exists() and not (copy / file).exists():
                (copy / file).symlink_to((data_dir / file).absolute())
        damage(copy)
        return ["--data-dir", str(copy)]

    def truncate(copy):
        raw = (data_dir / "data_batch_1").read_bytes()
        (copy / "data_batch_1").unlink()
        (copy / "data_batch_1").write_bytes(raw[:len(raw) // 2])

    def reshape(copy):
        (copy / "data_batch_1").unlink()
        with open(copy / "data_batch_1", "wb") as f:
            import numpy as np

            pickle.dump({b"data": np.zeros((10, 100), np.uint8), b"labels": [0] * 10}, f, protocol=2)

    def wrong_md5(copy):
        (copy / MANIFEST_NAME).write_text(json.dumps({"data_batch_1": "0" * 32}))

    def drop_test_batch(copy):
        (copy / TEST_FILE).unlink()

    cases = [
        Case("flag type", "coarse", [*base, "--n-trials", "three"], expect="not an integer"),
        Case("flag range", "coarse", [*base, "--n-seeds", "0"], expect="positive integer"),
        Case("unknown flag", "coarse", [*base, "--n-trail", "3"], expect="unrecognized arguments"),
        Case("choice", "coarse", [*base, "--pruner", "sometimes"], expect="pruner must be one of"),
        Case("sampler of the other study", "coarse", [*base, "--sampler", "grid"], expect="grid sampler"),
        Case("lambda range", "coarse", [*base, "--lam-min", "0.1", "--lam-max", "0.01"], expect="lam_min"),
        Case("eta_min >= eta_max", "coarse", [*base, "--eta-min", "0.1", "--eta-max", "0.01"],
             expect="eta_min (0.1) must be smaller than eta_max"),
        Case("grid syntax", "fine", [*base, "--grid", "0,,0.01"], expect="grid item"),
        Case("grid values", "fine", [*base, "--grid", "0.01,0.01"], expect="distinct"),
        Case("workers", "coarse", [*base, "--workers", "0"], expect="positive integer"),
        Case("TOML unknown key", "coarse", [*base, *toml("key", "[train]\nn_ss = 10\n")], expect="unknown key 'n_ss'"),
        Case("TOML unknown table", "coarse", [*base, *toml("table", "[model]\nhidden = 10\n")],
             expect="unknown table [model]"),
        Case("TOML type", "coarse", [*base, *toml("type", '[train]\nn_s = "10"\n')], expect="must be an integer"),
        Case("TOML type of an optional field", "coarse", [*base, *toml("optional", "[data]\ndata_dir = 5\n")],
             expect="data_dir must be a string"),
        Case("TOML range", "coarse", [*base, *toml("range", "[train]\neta_max = -1.0\n")], expect="eta_max"),
        Case("TOML syntax", "coarse", [*base, *toml("syntax", "[train\nn_s = 10\n")], expect="not valid TOML"),
        Case("TOML file missing", "coarse", [*base, "--config", str(folder / "missing.toml")],
             expect="does not exist"),
        Case("storage scheme", "coarse", [*base, "--storage", "mysql://me@db/studies"], expect="sqlite:///"),
        Case("storage not a URL", "coarse", [*base, "--storage", "studies.db"], expect="not a database URL"),
        Case("storage in memory", "coarse", [*base, "--storage", "sqlite://"], expect="in memory"),
        Case("storage unreachable", "coarse", [*base, "--storage", "postgresql://nobody@127.0.0.1:9/studies"],
             expect="postgresql://nobody@127.0.0.1:9/studies"),
        Case("heartbeat variable", "coarse", base, env={"CLRSEARCH_GRACE_SECONDS": "soon"},
             expect="CLRSEARCH_GRACE_SECONDS"),
        Case("data folder missing", "coarse", [*base, "--data-dir", str(folder / "nowhere")],
             expect="no CIFAR-10 data"),
        Case("data file missing", "coarse", [*base, *broken_data("incomplete", drop_test_batch)],
             expect="lacks test_batch"),
        Case("data file truncated", "coarse", [*base, *broken_data("truncated", truncate)],
             expect="not a readable CIFAR-10 pickle"),
        Case("data of the wrong shape", "coarse", [*base, *broken_data("shape", reshape)], expect="shape (10, 100)"),
        Case("data md5", "coarse", [*base, *broken_data("md5", wrong_md5)], expect="md5"),
        Case("validation set too large", "coarse", [*base, "--val-size", "100000"], expect="val_size"),
        Case("batch larger than the training set", "coarse", [*base, "--n-batch", "1000000"],
             expect="larger than the training set"),
        Case("tracking URI", "coarse", base, env={"MLFLOW_TRACKING_URI": "nowhere://tracking"},
             expect="MLflow tracking store nowhere://tracking"),
        Case("deleted MLflow experiment", "coarse", [*base, "--experiment", "gone"], prepare=delete_experiment,
             expect="experiment 'gone' is deleted"),
        Case("fine grid without a coarse study", "fine", [*base, "--n-seeds", "2"], expect="no coarse study"),
    ]
    return cases


def delete_experiment(workdir):
    """Create and delete the MLflow experiment "gone" in the store of ``workdir``."""
    with tracking_store(f"sqlite:///{Path(workdir).absolute()}/mlflow.db"):
        tracking.delete_experiment("gone")


def check_bad_input(case, workdir, env):
    """Run one case in ``workdir``; returns a list of what went wrong (empty: refused as it should be)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if case.prepare is not None:
        case.prepare(workdir)
    run_env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlflow.db", **case.env}
    done = subprocess.run([sys.executable, "-m", f"clrsearch.{case.command}", *case.argv], cwd=workdir,
                          env=run_env, capture_output=True, text=True, timeout=SETTINGS.bad_input_timeout)
    problems = []
    lines = done.stderr.strip().splitlines()
    if done.returncode != 2:
        problems.append(f"exit status {done.returncode}")
    if len(lines) != 1:
        problems.append(f"{len(lines)} lines on stderr")
    if "Traceback" in done.stderr:
        problems.append("a traceback")
    if case.expect not in done.stderr:
        problems.append(f"no {case.expect!r} in the message")
    problems += leftovers(workdir)
    return problems, (lines[-1] if lines else "")


def leftovers(workdir):
    """Studies in the default storage and MLflow runs left in ``workdir``."""
    import sqlite3

    found = []
    studies = Path(workdir) / "studies" / "clrsearch.db"
    if studies.exists():
        with sqlite3.connect(studies) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "studies" in tables and db.execute("SELECT COUNT(*) FROM studies").fetchone()[0]:
                found.append("a study left in the storage")
    store = Path(workdir) / "mlflow.db"
    if store.exists():
        with sqlite3.connect(store) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "runs" in tables and db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]:
                found.append("an MLflow run left behind")
    return found


# ----------------------------------------------------------------------------- kills


def children(pid):
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def kill(process, how):
    """Kill ``process`` (or its helper) as ``how`` says; returns False when there was nothing to kill."""
    if process.poll() is not None:
        return False
    if how == "SIGKILL helper of 2 workers":
        helpers = children(process.pid)
        if not helpers:
            return False
        os.kill(helpers[0], signal.SIGKILL)
        return True
    process.send_signal(signal.SIGINT if how == "SIGINT" else signal.SIGKILL)
    return True


def running_workers(storage, name, min_round=1):
    """Pids of the workers running a trial of race round ``min_round`` or later (1: any trial) in study ``name``."""
    return {int(t.system_attrs[queue.WORKER_ATTR].split(":")[1]) for t in queue.read_trials(storage, name)
            if t.state.name == "RUNNING" and queue.WORKER_ATTR in t.system_attrs
            and t.user_attrs.get(queue.ROUND, 1) >= min_round}


def wait_running(process, how, storage, name, min_round=1):
    """Wait until a trial of round ``min_round`` or later runs in a process of this start; returns whether one
    did before ``process`` ended.

    The process is the one ``how`` kills (the helper for the helper kind); for
    ``min_round`` > 1 (a race round) the parent's or the helper's trial both
    count, except for the helper kind. Trials left RUNNING by the processes of
    earlier starts never count.
    """
    while process.poll() is None:
        helpers = set(children(process.pid))
        if how == "SIGKILL helper of 2 workers":
            wanted = helpers
        else:
            wanted = {process.pid} | (helpers if min_round > 1 else set())
        if running_workers(storage, name, min_round) & wanted:
            return True
        time.sleep(SETTINGS.poll_seconds)
    return False


def coarse_plan(k):
    """Kind and moment of kill k of the coarse studies: kinds in turn; kills 0-3, 8-11, ... at a random moment,
    4-7, 12-15, ... mid-trial."""
    return KILLS[k % len(KILLS)], MOMENTS[(k // len(KILLS)) % 2]


def race_plan(k):
    """Kind and moment of kill k of the race studies: kinds in turn; moments alternate, shifted every four kills,
    so that any four kills in a row try every kind and kills 0-7 every kind at both moments."""
    return KILLS[k % len(KILLS)], RACE_MOMENTS[(k + k // len(KILLS)) % 2]


class Starts:
    """The studies of one command (``coarse`` or ``fine``) in one work folder: each started, killed as a plan
    says, and started again until a start ends by itself.

    The study definition ``toml`` is written to ``WORKDIR/<command>.toml``;
    studies go to ``storage`` (default: SQLite in the work folder), MLflow
    runs to ``WORKDIR/mlflow.db``.
    """

    def __init__(self, command, toml, workdir, data_dir, storage, say):
        self.command = command
        self.workdir = Path(workdir)
        self.config = self.workdir / f"{command}.toml"
        self.config.write_text(toml)
        self.data_dir = data_dir
        self.storage = storage or f"sqlite:///{self.workdir}/studies.db"
        self.say = say
        self.env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{self.workdir}/mlflow.db",
                    "CLRSEARCH_HEARTBEAT_SECONDS": f"{SETTINGS.heartbeat_seconds:g}",
                    "CLRSEARCH_GRACE_SECONDS": f"{SETTINGS.grace_seconds:g}"}
        self.estimate = None  # seconds a start is expected to run: the first reference's, then the latest starts'
        self.argv_extra = []  # more flags of every start (the outages: --outage-seconds)

    def start(self, name, workers=1):
        argv = ["--config", self.config.name, "--data-dir", str(self.data_dir), "--storage", self.storage,
                "--study-name", name, "--quiet"] + (["--workers", str(workers)] if workers > 1 else [])
        argv += self.argv_extra
        return subprocess.Popen([sys.executable, "-m", f"clrsearch.{self.command}", *argv], cwd=self.workdir,
                                env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def uninterrupted(self, name, workers=1):
        """Run study ``name`` to its end without a kill; returns its wall time in seconds."""
        began = time.perf_counter()
        process = self.start(name, workers)
        _, err = process.communicate()
        wall = time.perf_counter() - began
        if process.returncode != 0:
            raise RuntimeError(f"the uninterrupted study {name} failed: {err.strip()[-2000:]}")
        if self.estimate is None:
            self.estimate = wall
        return wall

    def until_done(self, name, figures, plan, kills, rng):
        """Start study ``name`` again and again, killing each start as ``plan(k)`` says while fewer than ``kills``
        kills have landed, until a start ends by itself: the study is complete.

        Counts ``kills``, ``kills by kind`` and ``starts`` in ``figures``.
        """
        while True:
            k = figures["kills"]
            how, when = plan(k)
            process = self.start(name, 2 if "2 workers" in how else 1)
            figures["starts"] += 1
            began = time.perf_counter()
            ready = self.wait(process, how, when, name, rng)
            if ready and k < kills and kill(process, how):
                figures["kills"] += 1
                figures["kills by kind"][f"{how}, {when}"] += 1
                self.say(f"{name}: {how}, {when}, after {time.perf_counter() - began:.1f} s")
            _, err = process.communicate()
            if process.returncode == 0:
                if not ready:  # the start ended by itself: how long starts take now, on this machine
                    self.estimate = (self.estimate + time.perf_counter() - began) / 2
                return
            # Killed by SIGINT itself: Ctrl-C while the interpreter was starting, before any clrsearch code ran.
            if exit_status(process.returncode) not in (128 + signal.SIGINT, 128 + signal.SIGKILL):
                raise RuntimeError(f"{name} ended with status {process.returncode}: {err.strip()[-2000:]}")

    def wait(self, process, how, when, name, rng):
        """Wait for the moment ``when`` of a kill of ``process`` (study ``name``, moments drawn from ``rng``);
        returns whether it came before the process ended."""
        if when == "at a random moment":  # uniform between 0 and the time a start takes
            try:
                process.wait(rng.uniform(0, self.estimate))
                return False
            except subprocess.TimeoutExpired:
                return True
        race_round = when == "mid-race round"
        if not wait_running(process, how, self.storage, name, 2 if race_round else 1):
            return False
        time.sleep(rng.uniform(0, SETTINGS.mid_race_delay if race_round else SETTINGS.mid_trial_delay))
        return True


def new_figures(moments):
    """The counts every kind of killed study starts from."""
    return {"kills": 0, "kills by kind": {f"{k}, {when}": 0 for when in moments for k in KILLS},
            "starts": 0, "studies": 0, "slots": 0, "trials lost": 0, "trials duplicated": 0,
            "finished trials without their MLflow run": 0, "trials lost with their worker and trained again": 0,
            "trials given back on Ctrl-C and trained again": 0, "MLflow runs left RUNNING": 0}


def count_retrained(figures, failed):
    """Count the trials that failed with their worker or were given back on Ctrl-C (and were trained again)."""
    given_back = sum(1 for t in failed if t.user_attrs.get("reason") == queue.INTERRUPTED)
    figures["trials given back on Ctrl-C and trained again"] += given_back
    figures["trials lost with their worker and trained again"] += len(failed) - given_back


def slot_results(storage, name):
    """slot -> [(state, value, intermediate values)] of the trials that count as the slot's result; their numbers;
    the failed trials."""
    results, numbers, failed = {}, set(), []
    for t in queue.read_trials(storage, name):
        results.setdefault(t.user_attrs.get(queue.SLOT), [])
        if queue.is_final(t):
            results[t.user_attrs.get(queue.SLOT)].append((t.state.name, t.value, dict(t.intermediate_values)))
            numbers.add(t.number)
        elif t.state.name == "FAIL":
            failed.append(t)
    return results, numbers, failed


def logged_trials(workdir, name):
    """Numbers of the trials of study ``name`` with a trial run in the MLflow store of ``workdir``.

    As the study itself counts them (:func:`clrsearch.tracking.logged_trials`):
    a run that a dead process left unfinished does not count; one still
    RUNNING does, and shows in ``running_runs`` instead.
    """
    with tracking_store(f"sqlite:///{Path(workdir).absolute()}/mlflow.db"):
        return tracking.logged_trials(tracking.EXPERIMENT, name)


@contextlib.contextmanager
def tracking_store(uri):
    """Within the block, MLflow calls of this process go to the store ``uri`` ($MLFLOW_TRACKING_URI)."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        yield
    finally:
        if before is None:
            del os.environ["MLFLOW_TRACKING_URI"]
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before


def running_runs(workdir):
    """MLflow runs left RUNNING in the store of ``workdir``, read from its SQLite file."""
    import sqlite3

    with sqlite3.connect(Path(workdir) / "mlflow.db") as db:
        return db.execute("SELECT COUNT(*) FROM runs WHERE status = 'RUNNING'").fetchone()[0]


def inject(data_dir, workdir, kills, seed, storage, say, pruning=False):
    """Kill coarse studies ``kills`` times and check them; returns the figures.

    Kill k is of kind ``KILLS[k % 4]``; kills 0-3, 8-11, ... land at a random
    moment of the run, kills 4-7, 12-15, ... while a trial trains. With
    ``pruning`` the studies are ``FaultSettings.pruning_toml``'s and the
    reference runs once more with ``--workers 2``.
    """
    starts = Starts("coarse", SETTINGS.pruning_toml if pruning else SETTINGS.study_toml, workdir, data_dir, storage,
                    say)
    rng = random.Random(seed)
    wall = starts.uninterrupted("reference")
    expected, _, _ = slot_results(starts.storage, "reference")
    say(f"reference study: {wall:.1f} s")

    figures = {**new_figures(MOMENTS), "values differing from the reference": 0,
               "reference wall time (s)": round(wall, 1)}
    if pruning:
        figures.update(pruning_references(starts, expected))
    while figures["kills"] < kills:
        figures["studies"] += 1
        name = f"killed-{figures['studies']}"
        starts.until_done(name, figures, coarse_plan, kills, rng)
        got, numbers, failed = slot_results(starts.storage, name)
        figures["slots"] += len(expected)
        figures["finished trials without their MLflow run"] += len(numbers - logged_trials(workdir, name))
        for slot, reference_results in expected.items():
            results = got.get(slot, [])
            figures["trials lost"] += len(results) == 0
            figures["trials duplicated"] += max(0, len(results) - 1)
            figures["values differing from the reference"] += bool(results) and results[0] != reference_results[0]
        count_retrained(figures, failed)
    figures["MLflow runs left RUNNING"] = running_runs(workdir)
    return figures


def pruning_references(starts, expected):
    """The pruning figures of the references: the reference's pruned trials, and the slots in which an
    uninterrupted run of ``--workers 2`` differs from it."""
    pruned = {slot: results[0] for slot, results in expected.items() if results and results[0][0] == "PRUNED"}
    if not pruned or len(pruned) == len(expected):
        raise RuntimeError(f"the reference study pruned {len(pruned)} of {len(expected)} trials; give "
                           "FaultSettings.pruning_toml lambdas of which some, not all, are hopeless")
    lams = {t.user_attrs.get(queue.SLOT): t.params.get(LAM) for t in queue.read_trials(starts.storage, "reference")}
    wall_2 = starts.uninterrupted("reference-2-workers", workers=2)
    got, _, _ = slot_results(starts.storage, "reference-2-workers")
    differing = sorted(slot for slot, results in expected.items() if got.get(slot, [])[:1] != results[:1])
    starts.say(f"reference with --workers 2: {wall_2:.1f} s, slots differing: {differing}")
    return {"--workers 2: slots differing from the reference": len(differing),
            "--workers 2 wall time (s)": round(wall_2, 1),
            "reference pruned": [{"slot": slot, "lam": lams.get(slot), "rungs": rungs}
                                 for slot, (_, _, rungs) in sorted(pruned.items())]}


# ----------------------------------------------------------------------------- racing fine studies


@dataclass(frozen=True)
class RacePoint:
    """What a race gave one grid point, as its study holds it."""

    lam: float | None
    rounds: tuple  # the round of each of its trials that has a result, in order
    new_replicates: tuple  # the replicates each of those trials trained, in the same order
    replicates: tuple  # user attrs of its latest trial: every replicate of the point ...
    val_accuracies: tuple  # ... and their final validation accuracies
    value: float | None  # the latest trial's value: the mean over all its replicates
    left: int | None  # the round after which it left the race (study user attr race_left), None: stayed

    @property
    def trained(self):
        """Every replicate its trials trained, round after round."""
        return [r for replicates in self.new_replicates for r in replicates]


NO_POINT = RacePoint(None, (), (), (), (), None, None)  # a point the race never gave a result

# What must be the same in every race as in the reference, point by point: RacePoint fields.
RACE_FIELDS = {"replicates": "points whose replicates differ", "val_accuracies": "points whose val_accuracies differ",
               "value": "points whose value differs", "rounds": "points whose rounds differ",
               "left": "points whose race_left differs"}
RACE_CHECKS = (*RACE_FIELDS.values(), "replicates trained twice", "points whose replicates are not 0..n-1",
               "trials lost", "trials duplicated", "trials beyond the reference race")


def read_study(url, name):
    """The trials and the user attrs of study ``name``, read under the workers' lock."""
    import optuna

    with queue.study_lock(url):
        study = optuna.load_study(study_name=name, storage=queue.open_storage(url))
        return study.get_trials(), study.user_attrs


def race_record(url, name):
    """What the race ``name`` holds: point -> RacePoint, slot -> results (trials that count as the slot's
    result), and the trials failed with their worker or given back."""
    trials, attrs = read_study(url, name)
    left = {int(point): round_ for point, round_ in attrs.get(RACE_LEFT, {}).items()}
    final = sorted((t for t in trials if queue.is_final(t)),
                   key=lambda t: (t.user_attrs.get(queue.ROUND, 1), t.number))
    slots, by_point = {}, {}
    for t in final:
        slots[t.user_attrs.get(queue.SLOT)] = slots.get(t.user_attrs.get(queue.SLOT), 0) + 1
        by_point.setdefault(t.user_attrs.get(queue.POINT), []).append(t)
    points = {}
    for point, ts in by_point.items():
        last = ts[-1]
        points[point] = RacePoint(last.params.get(LAM), tuple(t.user_attrs.get(queue.ROUND, 1) for t in ts),
                                  tuple(tuple(t.user_attrs.get(queue.NEW_REPLICATES, ())) for t in ts),
                                  tuple(last.user_attrs.get(REPLICATES, ())),
                                  tuple(last.user_attrs.get(ACCURACIES, ())), last.value, left.get(point))
    failed = [t for t in trials if t.state.name == "FAIL" and not queue.is_final(t)]
    return points, slots, failed


def compare_race(got, expected):
    """The differences of race ``got`` from the reference ``expected`` (each ``(points, slots)`` of
    :func:`race_record`): counts of ``RACE_CHECKS``, and the points where any was found."""
    (points, slots), (reference, reference_slots) = got, expected
    counts, differing = dict.fromkeys(RACE_CHECKS, 0), set()
    n_points = len(reference)

    def found(check, point, n=1):
        if n:
            counts[check] += n
            differing.add(point)

    for point in sorted(set(points) | set(reference), key=str):
        mine, theirs = points.get(point, NO_POINT), reference.get(point, NO_POINT)
        for name, check in RACE_FIELDS.items():
            found(check, point, getattr(mine, name) != getattr(theirs, name))
        trained = mine.trained
        found("replicates trained twice", point, len(trained) - len(set(trained)))
        found("points whose replicates are not 0..n-1", point,
              trained != list(range(len(trained))) or tuple(trained) != mine.replicates)
    for slot in sorted(set(slots) | set(reference_slots), key=str):
        point = slot % n_points if isinstance(slot, int) else slot
        if slot in reference_slots:
            found("trials lost", point, slots.get(slot, 0) == 0)
            found("trials duplicated", point, max(0, slots.get(slot, 0) - 1))
        else:
            found("trials beyond the reference race", point, slots[slot])
    return counts, differing


def race(data_dir, workdir, kills, seed, storage, say):
    """Kill racing fine studies ``kills`` times and check them point by point; returns the figures.

    Kill k is of kind ``KILLS[k % 4]``, at a random moment or in the middle
    of a race round as :func:`race_plan` says. The reference race runs once
    alone, once with ``--workers 2``.
    """
    starts = Starts("fine", SETTINGS.race_toml, workdir, data_dir, storage, say)
    rng = random.Random(seed)
    wall = starts.uninterrupted("reference")
    reference, reference_slots, _ = race_record(starts.storage, "reference")
    expected = (reference, reference_slots)
    rounds = max((max(p.rounds) for p in reference.values()), default=0)
    if rounds < 2:
        raise RuntimeError("the reference race ended after its first round: no race to kill; give "
                           "FaultSettings.race_toml closer lambdas or more replicates")
    say(f"reference race: {wall:.1f} s, {rounds} rounds, {len(reference_slots)} trials, left after round: "
        f"{ {p: r.left for p, r in sorted(reference.items()) if r.left is not None} }")
    wall_2 = starts.uninterrupted("reference-2-workers", workers=2)
    points_2, slots_2, _ = race_record(starts.storage, "reference-2-workers")
    _, differing_2 = compare_race((points_2, slots_2), expected)
    say(f"reference race with --workers 2: {wall_2:.1f} s, {len(differing_2)} points differing")

    figures = {**new_figures(RACE_MOMENTS), "points": 0, **dict.fromkeys(RACE_CHECKS, 0),
               "--workers 2: points differing from the reference": len(differing_2),
               "reference wall time (s)": round(wall, 1), "--workers 2 wall time (s)": round(wall_2, 1),
               "reference race": [{"point": p, "lam": r.lam, "rounds": list(r.rounds), "replicates": len(r.replicates),
                                   "value": r.value, "left after round": r.left}
                                  for p, r in sorted(reference.items())]}
    while figures["kills"] < kills:
        figures["studies"] += 1
        name = f"killed-{figures['studies']}"
        starts.until_done(name, figures, race_plan, kills, rng)
        points, slots, failed = race_record(starts.storage, name)
        counts, differing = compare_race((points, slots), expected)
        for check, n in counts.items():
            figures[check] += n
        if differing:
            say(f"{name}: points {sorted(differing, key=str)} differ from the reference: "
                + ", ".join(f"{check} {n}" for check, n in counts.items() if n))
        figures["points"] += len(reference)
        figures["slots"] += len(reference_slots)
        numbers = {t.number for t in read_study(starts.storage, name)[0] if queue.is_final(t)}
        figures["finished trials without their MLflow run"] += len(numbers - logged_trials(workdir, name))
        count_retrained(figures, failed)
    figures["MLflow runs left RUNNING"] = running_runs(workdir)
    return figures


# ----------------------------------------------------------------------------- kills on fresh stores


@dataclass(frozen=True)
class FreshKillSettings:
    """The first command on new stores, killed by ``--fresh-kills``: its study and when it is killed."""

    toml: str = FaultSettings().study_toml.replace("n_trials = 8", "n_trials = 4", 1)  # the others' study, 4 λ
    window_seconds: float = 15.0  # seconds, kill moments are uniform in [0, window_seconds] after the start
    resume_timeout: float = 900.0  # seconds the resuming command may run before it counts as hung


FRESH = FreshKillSettings()
FRESH_NAME = "fresh"  # the study name of every command killed on fresh stores
# What the resumed studies are checked for; all but "kills", "starts", "starts that ended before their kill",
# "slots" and "... trained again" must be 0 (FRESH_PROBLEMS).
FRESH_KEYS = ("kills", "starts", "starts that ended before their kill", "slots", "commands that cannot resume",
              "trials lost", "trials trained twice", "trials left RUNNING", "finished trials without their MLflow run",
              "MLflow runs left RUNNING", "temporary store files left", "trials lost with their worker and trained again",
              "trials given back on Ctrl-C and trained again")
FRESH_PROBLEMS = ("commands that cannot resume", "trials lost", "trials trained twice", "trials left RUNNING",
                  "finished trials without their MLflow run", "MLflow runs left RUNNING", "temporary store files left")


def fresh_kills(data_dir, workdir, kills, seed, say, fresh=FRESH):
    """Kill the first command on new stores ``kills`` times, resume each and count what was lost; returns the
    figures (``FRESH_KEYS``) and the error lines of the commands that could not resume.

    Each start gets a folder of its own, with no MLflow store and no study storage, and is killed with SIGKILL
    at a moment drawn uniformly from the first ``fresh.window_seconds``; a start that ends before its moment
    counts in "starts that ended before their kill" and another folder is tried. The same command then runs
    once more, to its end, and the study is checked: every slot has one result, no trial is left RUNNING, every
    finished trial has its MLflow run, no run is left RUNNING, and no ``*.creating`` file is left.
    """
    rng = random.Random(seed)
    n_slots = tomllib.loads(fresh.toml)["study"]["n_trials"]
    figures, errors = dict.fromkeys(FRESH_KEYS, 0), []
    while figures["kills"] < kills:
        folder = Path(workdir) / f"start-{figures['starts']}"
        folder.mkdir(parents=True)
        starts = Starts("coarse", fresh.toml, folder, data_dir, None, say)
        figures["starts"] += 1
        moment = rng.uniform(0, fresh.window_seconds)
        process = starts.start(FRESH_NAME)
        try:
            process.wait(moment)
            figures["starts that ended before their kill"] += 1
        except subprocess.TimeoutExpired:
            process.kill()
            figures["kills"] += 1
            say(f"{folder.name}: SIGKILL after {moment:.1f} s")
        process.communicate()
        error = resume_fresh(starts, fresh.resume_timeout)
        if error is not None:
            figures["commands that cannot resume"] += 1
            errors.append(f"{folder.name} (killed after {moment:.1f} s): {error}")
            say(f"{folder.name}: cannot resume: {error}")
            continue
        check_fresh(folder, starts.storage, n_slots, figures)
    return figures, errors


def resume_fresh(starts, timeout):
    """Run the study of ``starts`` once more, to its end; returns None, or the last line of its error."""
    process = starts.start(FRESH_NAME)
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return f"still running after {timeout:g} s"
    lines = err.strip().splitlines()
    return None if process.returncode == 0 else f"exit status {process.returncode}: {lines[-1] if lines else ''}"


def check_fresh(folder, storage, n_slots, figures):
    """Add what the resumed study in ``folder`` lost to ``figures``: slots 0..n_slots-1 without a result or with
    more than one, trials left RUNNING, finished trials without their MLflow run, runs left RUNNING, temporary
    store files."""
    results, numbers, failed = slot_results(storage, FRESH_NAME)
    figures["slots"] += n_slots
    for slot in range(n_slots):
        figures["trials lost"] += not results.get(slot)
        figures["trials trained twice"] += max(0, len(results.get(slot, [])) - 1)
    figures["trials left RUNNING"] += sum(t.state.name == "RUNNING" for t in queue.read_trials(storage, FRESH_NAME))
    figures["finished trials without their MLflow run"] += len(numbers - logged_trials(folder, FRESH_NAME))
    figures["MLflow runs left RUNNING"] += running_runs(folder)
    figures["temporary store files left"] += sum(1 for _ in folder.rglob("*.creating*"))
    count_retrained(figures, failed)


def fresh_report(figures, errors, seconds, window):
    """The Markdown table of the kills on fresh stores, and the error of each command that could not resume."""
    lines = ["| what | count |", "|---|---|"] + [f"| {key} | {figures[key]} |" for key in FRESH_KEYS]
    lines += ["", *(f"- {error}" for error in errors)] if errors else []
    lines += ["", f"{seconds:.0f} s in all; kills uniform in the first {window:g} s of the first command."]
    return "\n".join(lines)


def fresh_main(args):
    """``--fresh-kills``: the kills on fresh stores, their report, and the exit status (0: nothing lost)."""
    data_dir = ensure_data(environment.data_dir(args.data_dir))
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clrsearch-faults-") as tmp:
        workdir = Path(args.workdir or tmp).absolute() / "fresh"
        workdir.mkdir(parents=True, exist_ok=True)
        figures, errors = fresh_kills(data_dir, workdir, args.fresh_kills, args.seed, say)
    if args.json:
        print(json.dumps({**figures, "errors": errors}))
    else:
        print(fresh_report(figures, errors, time.perf_counter() - started, FRESH.window_seconds))
    return 0 if all(figures[key] == 0 for key in FRESH_PROBLEMS) else 1


# ----------------------------------------------------------------------------- outages and a full disk


class PostgresCluster:
    """The throwaway PostgreSQL server of the tests (``tests/pgcluster.py``) in ``folder``: ``url`` of its
    ``postgres`` database, ``pause()`` (fast shutdown, data kept) and ``resume()`` on the same port."""

    def __init__(self, folder):
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        import pgcluster

        self.pg, self.folder = pgcluster, Path(folder)
        self.url = pgcluster.start(self.folder)

    def pause(self):
        self.pg.pause(self.folder)

    def resume(self):
        self.pg.resume(self.folder)

    def database(self, name):
        return self.pg.create_database(self.url, name)


@contextlib.contextmanager
def postgres_cluster(folder):
    """A :class:`PostgresCluster` for the block, stopped and deleted after it."""
    cluster = PostgresCluster(folder)
    try:
        yield cluster
    finally:
        cluster.pg.stop(cluster.folder)


class TrackingServer:
    """A loopback ``mlflow server`` on a free port, its SQLite store and artifacts in ``folder``, that can be
    killed (SIGKILL) and started again on the same port."""

    def __init__(self, folder):
        import socket

        self.folder = Path(folder).absolute()
        self.folder.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self, timeout=180.0):
        import urllib.request

        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        log = open(self.folder / "server.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.folder}/mlflow.db",
             "--artifacts-destination", str(self.folder / "artifacts"), "--host", "127.0.0.1", "--port",
             str(self.port), "--workers", "1"], cwd=self.folder, env=env, stdout=log, stderr=subprocess.STDOUT,
            process_group=0)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the MLflow server did not start: "
                                       + (self.folder / "server.log").read_text()[-2000:])
                time.sleep(0.25)

    def kill(self):
        """SIGKILL to the server and its workers (its process group)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@contextlib.contextmanager
def tracking_server(folder):
    """A started :class:`TrackingServer` for the block, killed after it."""
    server = TrackingServer(folder)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def server_runs(server):
    """Runs left RUNNING in the store of ``server`` and its trial runs, read from its SQLite file."""
    import sqlite3

    with sqlite3.connect(server.folder / "mlflow.db") as db:
        running = db.execute("SELECT COUNT(*) FROM runs WHERE status = 'RUNNING'").fetchone()[0]
        trials = db.execute("SELECT COUNT(*) FROM tags WHERE key = 'level' AND value = 'trial'").fetchone()[0]
    return {"RUNNING": running, "trial runs": trials}


OUTAGE_KEYS = ("outages", "commands that could not resume", "trials lost", "trials duplicated",
               "trials trained again", "trials left RUNNING", "MLflow runs left RUNNING")


def outage_figures(starts, name, expected, figures):
    """Add the study ``name``'s trials lost, duplicated, trained again and left RUNNING to ``figures``."""
    got, _, failed = slot_results(starts.storage, name)
    for slot in expected:
        figures["trials lost"] += len(got.get(slot, [])) == 0
        figures["trials duplicated"] += max(0, len(got.get(slot, [])) - 1)
    figures["trials trained again"] += len(failed)
    figures["trials left RUNNING"] += sum(1 for t in queue.read_trials(starts.storage, name)
                                          if t.state.name == "RUNNING")


def run_through(starts, name, during, say, reruns=2):
    """Start study ``name``, call ``during()`` once a trial trains (the fault), and run the same command again
    until it ends by itself (at most ``reruns`` more times); returns the exit statuses and the one-line errors."""
    statuses, lines = [], []
    for attempt in range(1 + reruns):
        process = starts.start(name)
        if attempt == 0 and wait_running(process, "SIGKILL", starts.storage, name):
            during()
        _, err = process.communicate()
        statuses.append(process.returncode)
        if process.returncode == 0:
            break
        lines.append(err.strip().splitlines()[-1] if err.strip() else "")
        say(f"{name}: exit {process.returncode}: {lines[-1]}")
    return statuses, lines


def outages(data_dir, workdir, count, down, say):
    """Restart the study's PostgreSQL server and its MLflow tracking server ``count`` times each, ``down``
    seconds mid-study, within the bound and (once each) past it; fill its disk once; returns the figures."""
    figures = {kind: dict.fromkeys(OUTAGE_KEYS, 0) for kind in ("PostgreSQL", "tracking server", "disk full")}
    bound = ["--outage-seconds", f"{3 * down:g}"]
    # The cluster's folder of its own, not in the work folder: the server's user must reach it.
    with postgres_cluster(tempfile.mkdtemp(prefix="clrsearch-outages-pg-")) as cluster, \
            tracking_server(workdir / "mlflow") as server:
        starts = Starts("coarse", SETTINGS.study_toml, workdir, data_dir, cluster.database("outages"), say)
        # MLflow retries no request itself: the outage past the bound is past it, not within MLflow's retries.
        starts.env.update({"MLFLOW_TRACKING_URI": server.url, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
        starts.uninterrupted("reference")
        expected, _, _ = slot_results(starts.storage, "reference")
        for k in range(count + 1):
            for kind, stop, resume in (("PostgreSQL", cluster.pause, cluster.resume),
                                       ("tracking server", server.kill, server.start)):
                past = k == count  # the last one outlasts the bound: one line, exit 2, the same command resumes
                name = f"{kind.split()[0].lower()}-{k}"
                starts.argv_extra = ["--outage-seconds", f"{down / 3:g}"] if past else bound

                def outage():
                    stop()
                    time.sleep(down)
                    resume()

                statuses, lines = run_through(starts, name, outage, say)
                f = figures[kind]
                f["outages"] += 1
                f["commands that could not resume"] += statuses[-1] != 0
                if past and not (len(statuses) == 2 and statuses[0] == 2 and "run the same command" in lines[0]):
                    f["commands that could not resume"] += 1
                counts = dict.fromkeys(OUTAGE_KEYS, 0)
                outage_figures(starts, name, expected, counts)
                if past:  # the population in hand when the study gave up trains again on resuming
                    counts["trials trained again"] = 0
                for key, n in counts.items():
                    f[key] += n
                say(f"{name}: {kind} down {down:g} s, exit statuses {statuses}")
        figures["tracking server"]["MLflow runs left RUNNING"] = server_runs(server)["RUNNING"]
    figures["disk full"] = disk_full(data_dir, workdir / "full", say)
    return figures


def disk_full(data_dir, folder, say, size="64m"):
    """A study whose stores live on a small tmpfs filled up mid-study (root only; None when mounting is not
    permitted): it must stop with one line and resume once space is freed."""
    figures = dict.fromkeys(OUTAGE_KEYS, 0)
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        say(f"disk full: skipped, cannot mount a tmpfs ({mounted.stderr.strip()})")
        return None
    try:
        starts = Starts("coarse", SETTINGS.study_toml, folder, data_dir, None, say)
        starts.env["TMPDIR"] = str(folder)  # the drawings of the runs too
        filler = folder / "filler"

        def fill():
            with contextlib.suppress(OSError), open(filler, "wb") as f:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()

        starts.argv_extra = []
        statuses, lines = run_through(starts, "full", fill, say, reruns=0)
        filler.unlink(missing_ok=True)  # space freed: the same command again
        if statuses[-1] != 0:
            more_statuses, more = run_through(starts, "full", lambda: None, say)
            statuses, lines = statuses + more_statuses, lines + more
        say(f"disk full: exit statuses {statuses}, said {lines[:1]}")
        figures["outages"] = 1
        said = bool(lines) and "free space, then run the same command again" in lines[0]
        figures["commands that could not resume"] = int(statuses[-1] != 0 or not said)
        outage_figures(starts, "full", {slot: [] for slot in range(8)}, figures)
        figures["trials trained again"] = 0  # the population in hand when the disk filled trains again
        figures["MLflow runs left RUNNING"] = running_runs(folder)
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
    return figures


def outage_report(figures, seconds):
    kinds = [kind for kind, f in figures.items() if f is not None]
    lines = ["| what | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for key in OUTAGE_KEYS:
        lines.append(f"| {key} | " + " | ".join(str(figures[kind][key]) for kind in kinds) + " |")
    lines += ["", f"{seconds:.0f} s in all."]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- two PID namespaces of one hostname


@dataclass(frozen=True)
class NamespaceSettings:
    """The two workers of ``--namespaces``: their study, their one hostname, and when one of them is killed."""

    toml: str = FaultSettings.study_toml  # the study definition (TOML) both workers run
    hostname: str = "clrsearch-same-host"  # the hostname of every namespace (`hostname` in its UTS namespace)
    # seconds, largest random wait between the two starts: pid 1 of either namespace then started at another
    # clock tick, so that a worker judged by host, pid and start time alone would take the other's for dead
    start_offset: float = 1.0
    kill_delay: float = 2.0  # seconds, largest random wait after a trial of the victim is seen running
    timeout: float = 900.0  # seconds a command may run before it counts as hung


NAMESPACES = NamespaceSettings()
UNSHARE = ("unshare", "--uts", "--pid", "--fork", "--mount-proc", "--kill-child")
NAMESPACE_KEYS = ("rounds", "kills", "slots", "surviving workers that did not end normally",
                  "commands that cannot resume", "trials lost", "trials trained twice", "trials left RUNNING",
                  "finished trials without their MLflow run", "MLflow runs left RUNNING",
                  "live trials taken over by the other namespace", "trials lost with their worker and trained again",
                  "trials given back on Ctrl-C and trained again")
NAMESPACE_PROBLEMS = NAMESPACE_KEYS[3:11]  # the counts that must be 0


def in_namespace(argv, hostname):
    """``argv`` run as pid 1 of new UTS, PID and mount (a /proc of its own) namespaces, named ``hostname``."""
    return [*UNSHARE, "sh", "-c", 'hostname "$0" && exec "$@"', hostname, *argv]


def namespaces_refused(hostname):
    """None when this process may start a command in namespaces of its own (root); else why not, in one line."""
    try:
        done = subprocess.run(in_namespace(["true"], hostname), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return str(error)
    lines = done.stderr.strip().splitlines()
    return None if done.returncode == 0 else (lines[-1] if lines else f"exit status {done.returncode}")


class NamespaceStarts(Starts):
    """:class:`Starts` whose every start is the command in namespaces of its own, of the hostname ``hostname``;
    all of them share the work folder and loopback."""

    hostname = NAMESPACES.hostname

    def start(self, name, workers=1):
        argv = ["--config", self.config.name, "--data-dir", str(self.data_dir), "--storage", self.storage,
                "--study-name", name, "--quiet"]
        command = [sys.executable, "-m", f"clrsearch.{self.command}", *argv]
        return subprocess.Popen(in_namespace(command, self.hostname), cwd=self.workdir, env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def namespace_table(process):
    """The process table (as :func:`clrsearch.processes.process_table` names it) of the namespace ``process``
    (an ``unshare``) made, once its child runs; None if it ended first."""
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    while process.poll() is None:
        for child in children(process.pid):
            with contextlib.suppress(OSError):
                return f"{boot}.{os.stat(f'/proc/{child}/ns/pid').st_ino}"
        time.sleep(0.01)
    return None


def worker_table(frozen):
    """The process table in a trial's worker name (``host:pid:start:table``), or None."""
    parts = str(frozen.system_attrs.get(queue.WORKER_ATTR)).split(":", 3)
    return parts[3] if len(parts) == 4 else None


def wait_namespace_running(process, table, storage, name):
    """Wait until a trial of the namespace of process table ``table`` runs in study ``name``; returns whether one
    did before ``process`` ended."""
    while process.poll() is None:
        if any(t.state.name == "RUNNING" and worker_table(t) == table for t in queue.read_trials(storage, name)):
            return True
        time.sleep(SETTINGS.poll_seconds)
    return False


def kill_namespace(process):
    """SIGKILL the namespace's pid 1 (the kernel kills every process in it) and its ``unshare``."""
    for child in children(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()


def finish(process, timeout):
    """Wait for ``process`` to end (killed, namespace and all, after ``timeout`` seconds); returns its exit status
    and the last line of its stderr."""
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_namespace(process)
        _, err = process.communicate()
        err += f"\nstill running after {timeout:g} s"
    lines = err.strip().splitlines()
    return exit_status(process.returncode), (lines[-1] if lines else "")


def taken_over(trials, victim, killed_at):
    """Numbers of the trials failed as lost while their worker ran: a trial failed for no reason of its own and
    not given back, of any namespace but the killed one (process table ``victim``), or of the killed one before
    it was killed (``killed_at``, seconds since the epoch; None: it was not); and every trial a worker said it
    ran until another took it over (:data:`clrsearch.search.queue.SPARED`)."""
    found = {number for t in trials for number in t.user_attrs.get(queue.SPARED, ())}
    for t in trials:
        reason = t.user_attrs.get("reason")
        if t.state.name != "FAIL" or queue.is_final(t) or not (reason is None or reason.startswith("worker ")):
            continue
        table = worker_table(t)
        mine = table is None or table == victim
        if not mine or killed_at is None or t.datetime_complete.timestamp() < killed_at:
            found.add(t.number)
    return found


def namespace_round(starts, name, rng, settings, figures):
    """Start study ``name`` in two namespaces of one hostname, kill one of them while a trial of it runs, let
    the other finish, run the same command once more, and add what it lost to ``figures``."""
    pair = [starts.start(name)]
    try:
        time.sleep(rng.uniform(0, settings.start_offset))
        pair.append(starts.start(name))
        tables = [namespace_table(p) for p in pair]
        victim, killed_at = rng.randrange(2), None
        if wait_namespace_running(pair[victim], tables[victim], starts.storage, name):
            time.sleep(rng.uniform(0, settings.kill_delay))
            if pair[victim].poll() is None:
                killed_at = time.time()
                kill_namespace(pair[victim])
                figures["kills"] += 1
        survivor, said = finish(pair[1 - victim], settings.timeout)
    finally:
        for process in pair:
            if process.poll() is None:
                kill_namespace(process)
            if not process.stderr.closed:
                process.communicate()
    resumed, error = finish(starts.start(name), settings.timeout)
    figures["surviving workers that did not end normally"] += survivor != 0
    figures["commands that cannot resume"] += resumed != 0
    workers = check_namespace_round(starts, name, (tables[victim], killed_at), settings, figures)
    starts.say(f"{name}: {'killed' if killed_at else 'no kill in'} namespace {victim} of {workers}; survivor exit "
               f"{survivor}{': ' + said if survivor else ''}; same command again: exit {resumed}"
               f"{': ' + error if resumed else ''}")


def check_namespace_round(starts, name, killed, settings, figures):
    """Add to ``figures`` what study ``name`` lost: slots without a result or with more than one, trials left
    RUNNING, finished trials without their MLflow run, live trials taken over (``killed``: the process table
    of the killed namespace and when it was killed, see :func:`taken_over`), trials trained again; returns its
    workers as people read them."""
    trials = queue.read_trials(starts.storage, name)
    results, numbers, failed = slot_results(starts.storage, name)
    n_slots = tomllib.loads(settings.toml)["study"]["n_trials"]
    figures["slots"] += n_slots
    for slot in range(n_slots):
        figures["trials lost"] += not results.get(slot)
        figures["trials trained twice"] += max(0, len(results.get(slot, [])) - 1)
    figures["trials left RUNNING"] += sum(t.state.name == "RUNNING" for t in trials)
    figures["finished trials without their MLflow run"] += len(numbers - logged_trials(starts.workdir, name))
    figures["live trials taken over by the other namespace"] += len(taken_over(trials, *killed))
    count_retrained(figures, failed)
    return sorted({worker_label(t) for t in trials if worker_table(t) is not None})


def worker_label(frozen):
    """``host:pid@table`` of a trial's worker: the name as people read it, and which process table."""
    host, pid, _, table = str(frozen.system_attrs.get(queue.WORKER_ATTR)).split(":", 3)
    return f"{host}:{pid}@{table.rsplit('.', 1)[-1]}"


def namespaces(data_dir, workdir, rounds, seed, say, settings=NAMESPACES):
    """Run the coarse study of ``settings`` ``rounds`` times on two workers in PID namespaces of one hostname,
    sharing the work folder (SQLite storage and MLflow store) and loopback, and SIGKILL one of them, namespace
    and all, while a trial of it runs (a round whose victim ended first has no kill); returns the figures
    (``NAMESPACE_KEYS``). Needs :func:`namespaces_refused` to say None."""
    rng = random.Random(seed)
    starts = NamespaceStarts("coarse", settings.toml, workdir, data_dir, None, say)
    starts.hostname = settings.hostname
    figures = dict.fromkeys(NAMESPACE_KEYS, 0)
    for k in range(1, rounds + 1):
        figures["rounds"] += 1
        namespace_round(starts, f"namespaces-{k}", rng, settings, figures)
    figures["MLflow runs left RUNNING"] = running_runs(workdir)
    return figures


def namespace_main(args, data_dir, say, started):
    """``--namespaces N``: the report of :func:`namespaces`; status 1 when a count that must be 0 is not, 0 with
    one line when namespaces cannot be made here."""
    refused = namespaces_refused(NAMESPACES.hostname)
    if refused is not None:
        line = f"namespaces: skipped, this process cannot start a command in namespaces of its own ({refused})"
        print(json.dumps({"skipped": line}) if args.json else line)
        return 0
    with tempfile.TemporaryDirectory(prefix="clrsearch-namespaces-") as tmp:
        workdir = Path(args.workdir or tmp).absolute() / "namespaces"
        workdir.mkdir(parents=True, exist_ok=True)
        figures = namespaces(data_dir, workdir, args.namespaces, args.seed, say)
    seconds = time.perf_counter() - started
    if args.json:
        print(json.dumps(figures))
    else:
        lines = ["| what | count |", "|---|---|"] + [f"| {key} | {figures[key]} |" for key in NAMESPACE_KEYS]
        print("\n".join([*lines, "", f"{seconds:.0f} s in all, {seconds / figures['rounds']:.0f} s a round."]))
    return 0 if all(figures[key] == 0 for key in NAMESPACE_PROBLEMS) else 1


# ----------------------------------------------------------------------------- the report

COARSE_KEYS = ("kills", "starts", "studies", "slots", "trials lost with their worker and trained again",
               "trials given back on Ctrl-C and trained again", "trials lost", "trials duplicated",
               "values differing from the reference", "finished trials without their MLflow run",
               "MLflow runs left RUNNING")
RACE_KEYS = ("kills", "starts", "studies", "points", "slots", "trials lost with their worker and trained again",
             "trials given back on Ctrl-C and trained again", *RACE_CHECKS, "finished trials without their MLflow run",
             "MLflow runs left RUNNING", "--workers 2: points differing from the reference")
# The counts that must be 0.
COARSE_PROBLEMS = ("trials lost", "trials duplicated", "values differing from the reference",
                   "finished trials without their MLflow run", "MLflow runs left RUNNING")
RACE_PROBLEMS = (*RACE_CHECKS, "finished trials without their MLflow run", "MLflow runs left RUNNING",
                 "--workers 2: points differing from the reference")
PRUNING_KEYS = (*COARSE_KEYS, "--workers 2: slots differing from the reference")
PRUNING_PROBLEMS = (*COARSE_PROBLEMS, "--workers 2: slots differing from the reference")


def kinds_table(figures):
    lines = ["| kill | count |", "|---|---|"]
    return lines + [f"| {kind} | {count} |" for kind, count in figures["kills by kind"].items()]


def report(figures, bad, seconds):
    """The Markdown table of docs/RELIABILITY.md."""
    lines = ["| what | count |", "|---|---|"]
    for key in COARSE_KEYS:
        lines.append(f"| {key} | {figures[key]} |")
    lines.append(f"| kinds of bad input tried | {len(bad)} |")
    lines.append(f"| bad inputs not refused cleanly | {sum(1 for _, problems, _ in bad if problems)} |")
    lines += ["", *kinds_table(figures)]
    lines += ["", "| bad input | refused with |", "|---|---|"]
    for case, problems, line in bad:
        lines.append(f"| {case.what} | `{line}`{' **' + '; '.join(problems) + '**' if problems else ''} |")
    lines.append("")
    lines.append(f"{seconds:.0f} s in all; reference study {figures['reference wall time (s)']} s.")
    return "\n".join(lines)


def race_report(figures, seconds):
    """The Markdown tables of the killed races: the counts, the kills, and the reference race."""
    lines = ["| what | count |", "|---|---|"] + [f"| {key} | {figures[key]} |" for key in RACE_KEYS]
    lines += ["", *kinds_table(figures)]
    lines += ["", "| point | lambda | rounds | replicates | val accuracy | left after round |",
              "|---|---|---|---|---|---|"]
    for p in figures["reference race"]:
        left = "" if p["left after round"] is None else p["left after round"]
        lines.append(f"| {p['point']} | {p['lam']:g} | {', '.join(map(str, p['rounds']))} | {p['replicates']} | "
                     f"{100 * p['value']:.2f}% | {left} |")
    lines.append("")
    lines.append(f"{seconds:.0f} s in all; reference race {figures['reference wall time (s)']} s, with --workers 2 "
                 f"{figures['--workers 2 wall time (s)']} s.")
    return "\n".join(lines)


def pruning_report(figures, seconds):
    """The Markdown tables of the killed pruning studies: the counts, the kills, and the reference's pruned trials."""
    lines = ["| what | count |", "|---|---|"] + [f"| {key} | {figures[key]} |" for key in PRUNING_KEYS]
    lines += ["", *kinds_table(figures)]
    lines += ["", "| slot | lambda | pruned after cycle | validation accuracy there |", "|---|---|---|---|"]
    for p in figures["reference pruned"]:
        rung = max(p["rungs"])
        lines.append(f"| {p['slot']} | {p['lam']:.3g} | {rung} | {100 * p['rungs'][rung]:.2f}% |")
    lines.append("")
    lines.append(f"{seconds:.0f} s in all; reference study {figures['reference wall time (s)']} s, with --workers 2 "
                 f"{figures['--workers 2 wall time (s)']} s.")
    return "\n".join(lines)


@entry_point
def main(argv=None):
    parser = ArgumentParser(prog="python tools/faults.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="folder of cifar-10-batches-py (default: as the studies find it)")
    parser.add_argument("--kills", type=positive_int, default=SETTINGS.kills,
                        help=f"kills to land (default {SETTINGS.kills})")
    parser.add_argument("--race", action="store_true",
                        help="kill racing fine studies and check them point by point, instead of the coarse "
                             "studies and the bad inputs")
    parser.add_argument("--pruning", action="store_true",
                        help="kill coarse studies that prune (--pruner median) and check their rungs too, instead of "
                             "the plain coarse studies and the bad inputs")
    parser.add_argument("--fresh-kills", type=non_negative_int, default=0, metavar="N",
                        help=f"kill the first coarse command on fresh stores N times, each at a random moment of its "
                             f"first {FRESH.window_seconds:g} s, resume each and count what could not resume or was "
                             f"lost, instead of the other studies and the bad inputs")
    parser.add_argument("--outages", type=non_negative_int, default=None, metavar="N",
                        help="instead of kills: restart the study's PostgreSQL server and its MLflow tracking "
                             "server N times each mid-study within --outage-seconds, once more past it, and fill "
                             "its disk once (a tmpfs, as root)")
    parser.add_argument("--namespaces", type=positive_int, default=None, metavar="N",
                        help="instead of kills: N times, run a coarse study on two workers in PID namespaces of "
                             "one hostname and SIGKILL one of them, namespace and all, mid-trial (root only)")
    parser.add_argument("--down-seconds", type=positive_float, default=SETTINGS.down_seconds,
                        help=f"how long each outage of --outages lasts (default {SETTINGS.down_seconds:g} s)")
    parser.add_argument("--seed", type=non_negative_int, default=SETTINGS.seed,
                        help=f"seed of the kill moments (default {SETTINGS.seed})")
    parser.add_argument("--storage", help="study storage URL (default: SQLite in the work folder)")
    parser.add_argument("--workdir", help="keep everything in this folder (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.race and args.pruning:
        parser.error("--race and --pruning kill different studies: give one of them")
    others = args.race or args.pruning or args.storage or args.fresh_kills or args.outages is not None
    if args.namespaces and others:
        parser.error("--namespaces runs a coarse study of its own on SQLite: give it without the other studies "
                     "and --storage")
    if args.fresh_kills:
        if args.race or args.pruning or args.storage:
            parser.error("--fresh-kills kills coarse commands on fresh SQLite stores: give it without --race, "
                         "--pruning and --storage")
        return fresh_main(args)
    data_dir = ensure_data(environment.data_dir(args.data_dir))
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))
    started = time.perf_counter()
    if args.outages is not None:
        return outage_main(args, data_dir, say, started)
    if args.namespaces:
        return namespace_main(args, data_dir, say, started)
    with tempfile.TemporaryDirectory(prefix="clrsearch-faults-") as tmp:
        workdir = Path(args.workdir or tmp).absolute()
        workdir.mkdir(parents=True, exist_ok=True)
        if args.race:
            (workdir / "race").mkdir(exist_ok=True)
            figures = race(data_dir, workdir / "race", args.kills, args.seed, args.storage, say)
            bad = []
        elif args.pruning:
            (workdir / "pruning").mkdir(exist_ok=True)
            figures = inject(data_dir, workdir / "pruning", args.kills, args.seed, args.storage, say, pruning=True)
            bad = []
        else:
            (workdir / "kills").mkdir(exist_ok=True)
            figures = inject(data_dir, workdir / "kills", args.kills, args.seed, args.storage, say)
            bad = feed_bad_inputs(data_dir, workdir, say)
    seconds = time.perf_counter() - started
    if args.json:
        extra = {} if args.race or args.pruning else {"bad inputs": len(bad),
                                                      "bad inputs not refused cleanly": sum(1 for _, p, _ in bad if p)}
        print(json.dumps({**figures, **extra}))
    elif args.race:
        print(race_report(figures, seconds))
    else:
        print(pruning_report(figures, seconds) if args.pruning else report(figures, bad, seconds))
    problems = RACE_PROBLEMS if args.race else PRUNING_PROBLEMS if args.pruning else COARSE_PROBLEMS
    clean = all(figures[k] == 0 for k in problems)
    return 0 if clean and not any(p for _, p, _ in bad) else 1


def outage_main(args, data_dir, say, started):
    """``--outages N``: the report of :func:`outages`; status 1 when any count but the outages is not 0."""
    with tempfile.TemporaryDirectory(prefix="clrsearch-outages-") as tmp:
        workdir = Path(args.workdir or tmp).absolute()
        workdir.mkdir(parents=True, exist_ok=True)
        figures = outages(data_dir, workdir, args.outages, args.down_seconds, say)
    print(json.dumps(figures) if args.json else outage_report(figures, time.perf_counter() - started))
    clean = all(n == 0 for f in figures.values() if f is not None for key, n in f.items() if key != "outages")
    return 0 if clean else 1


def feed_bad_inputs(data_dir, workdir, say):
    """Feed every case of :func:`bad_inputs` to a fresh folder under ``workdir``; returns (case, problems, line)."""
    bad = []
    env = dict(os.environ)
    for k, case in enumerate(bad_inputs(data_dir, workdir / "inputs", ["--quiet"])):
        problems, line = check_bad_input(case, workdir / "bad" / str(k), env)
        bad.append((case, problems, line))
        say(f"{case.what}: {line}{'  PROBLEM: ' + '; '.join(problems) if problems else ''}")
    return bad


if __name__ == "__main__":
    raise SystemExit(main())
