"""Fault injection: kill studies at random moments, resume them, count what was lost; feed bad input.

    python tools/faults.py --data-dir /tmp/cifar --kills 16 [--seed 0] [--storage URL] [--json]

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
from dataclasses import dataclass, field
from pathlib import Path

from clrsearch import tracking
from clrsearch.cli.args import ArgumentParser, entry_point, non_negative_int, positive_int
from clrsearch.data import ensure_data
from clrsearch.data.cifar10 import DATA_FILES, FOLDER_NAME, TEST_FILE
from clrsearch.data.download import MANIFEST_NAME
from clrsearch.search import queue
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
    kills: int = 16  # default of --kills: kills to land
    seed: int = 0  # default of --seed: seed of the kill moments
    heartbeat_seconds: float = 1.0  # seconds, CLRSEARCH_HEARTBEAT_SECONDS of the killed studies
    grace_seconds: float = 3.0  # seconds, CLRSEARCH_GRACE_SECONDS of the killed studies
    poll_seconds: float = 0.05  # seconds between looks at the storage while waiting for a trial to train
    mid_trial_delay: float = 0.3  # seconds, largest random wait after a trial is seen training, before a kill
    bad_input_timeout: float = 300.0  # seconds a bad-input command may run before it counts as hung


SETTINGS = FaultSettings()
KILLS = ("SIGKILL", "SIGINT", "SIGKILL parent of 2 workers", "SIGKILL helper of 2 workers")  # kinds, in turn


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
        Case("fine grid without a coarse study", "fine", base, expect="no coarse study"),
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


def study_argv(data_dir, storage, name, workers=1):
    argv = ["--config", "faults.toml", "--data-dir", str(data_dir), "--storage", storage, "--study-name", name,
            "--quiet"]
    return argv + (["--workers", str(workers)] if workers > 1 else [])


def start(argv, workdir, env):
    return subprocess.Popen([sys.executable, "-m", "clrsearch.coarse", *argv], cwd=workdir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


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


def wait_mid_trial(process, how, storage, name, rng):
    """Wait until a trial of ``process`` (or of its helper) trains, then a random fraction of a second more."""
    while process.poll() is None:
        pids = queue.running_pids(storage, name)
        wanted = set(children(process.pid)) if how == "SIGKILL helper of 2 workers" else {process.pid}
        if pids & wanted:
            time.sleep(rng.uniform(0, SETTINGS.mid_trial_delay))
            return True
        time.sleep(SETTINGS.poll_seconds)
    return False


def slot_results(storage, name):
    """slot -> [(state, value)] of the trials that count as the slot's result; their numbers; the failed trials."""
    results, numbers, failed = {}, set(), []
    for t in queue.read_trials(storage, name):
        results.setdefault(t.user_attrs.get(queue.SLOT), [])
        if queue.is_final(t):
            results[t.user_attrs.get(queue.SLOT)].append((t.state.name, t.value))
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


def inject(data_dir, workdir, kills, seed, storage, say):
    """Kill studies ``kills`` times and check them; returns the figures.

    Kill k is of kind ``KILLS[k % 4]``; kills 0-3, 8-11, ... land at a random
    moment of the run, kills 4-7, 12-15, ... while a trial trains.
    """
    workdir = Path(workdir)
    (workdir / "faults.toml").write_text(SETTINGS.study_toml)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlflow.db",
           "CLRSEARCH_HEARTBEAT_SECONDS": f"{SETTINGS.heartbeat_seconds:g}",
           "CLRSEARCH_GRACE_SECONDS": f"{SETTINGS.grace_seconds:g}"}
    storage = storage or f"sqlite:///{workdir}/studies.db"
    rng = random.Random(seed)

    started = time.perf_counter()
    reference = start(study_argv(data_dir, storage, "reference"), workdir, env)
    _, err = reference.communicate()
    wall = time.perf_counter() - started
    if reference.returncode != 0:
        raise RuntimeError(f"the reference study failed: {err.strip()}")
    expected, _, _ = slot_results(storage, "reference")
    say(f"reference study: {wall:.1f} s")
    estimate = wall  # seconds a start is expected to run

    figures = {"kills": 0, "kills by kind": {f"{k}, {when}": 0 for when in ("at a random moment", "mid-trial")
                                             for k in KILLS},
               "starts": 0, "studies": 0, "slots": 0, "trials lost": 0, "trials duplicated": 0,
               "values differing from the reference": 0, "finished trials without their MLflow run": 0,
               "trials lost with their worker and trained again": 0,
               "trials given back on Ctrl-C and trained again": 0, "MLflow runs left RUNNING": 0,
               "reference wall time (s)": round(wall, 1)}
    while figures["kills"] < kills:
        figures["studies"] += 1
        name = f"killed-{figures['studies']}"
        while True:
            k = figures["kills"]
            how = KILLS[k % len(KILLS)]
            when = "mid-trial" if (k // len(KILLS)) % 2 else "at a random moment"
            process = start(study_argv(data_dir, storage, name, 2 if "2 workers" in how else 1), workdir, env)
            figures["starts"] += 1
            began = time.perf_counter()
            if when == "mid-trial":
                ready = wait_mid_trial(process, how, storage, name, rng)
            else:
                try:
                    process.wait(rng.uniform(0, estimate))
                    ready = False
                except subprocess.TimeoutExpired:
                    ready = True
            if ready and k < kills and kill(process, how):
                figures["kills"] += 1
                figures["kills by kind"][f"{how}, {when}"] += 1
                say(f"{name}: {how}, {when}, after {time.perf_counter() - began:.1f} s")
            _, err = process.communicate()
            if process.returncode == 0:
                if not ready:  # the start ended by itself: how long starts take now, on this machine
                    estimate = (estimate + time.perf_counter() - began) / 2
                break
            # Killed by SIGINT itself: Ctrl-C while the interpreter was starting, before any clrsearch code ran.
            if exit_status(process.returncode) not in (128 + signal.SIGINT, 128 + signal.SIGKILL):
                raise RuntimeError(f"{name} ended with status {process.returncode}: {err.strip()[-2000:]}")
        got, numbers, failed = slot_results(storage, name)
        figures["slots"] += len(expected)
        figures["finished trials without their MLflow run"] += len(numbers - logged_trials(workdir, name))
        for slot, reference_results in expected.items():
            results = got.get(slot, [])
            figures["trials lost"] += len(results) == 0
            figures["trials duplicated"] += max(0, len(results) - 1)
            figures["values differing from the reference"] += bool(results) and results[0] != reference_results[0]
        given_back = sum(1 for t in failed if t.user_attrs.get("reason") == queue.INTERRUPTED)
        figures["trials given back on Ctrl-C and trained again"] += given_back
        figures["trials lost with their worker and trained again"] += len(failed) - given_back
    figures["MLflow runs left RUNNING"] = running_runs(workdir)
    return figures


def report(figures, bad, seconds):
    """The Markdown table of docs/RELIABILITY.md."""
    lines = ["| what | count |", "|---|---|"]
    for key in ("kills", "starts", "studies", "slots", "trials lost with their worker and trained again",
                "trials given back on Ctrl-C and trained again", "trials lost", "trials duplicated",
                "values differing from the reference", "finished trials without their MLflow run",
                "MLflow runs left RUNNING"):
        lines.append(f"| {key} | {figures[key]} |")
    lines.append(f"| kinds of bad input tried | {len(bad)} |")
    lines.append(f"| bad inputs not refused cleanly | {sum(1 for _, problems, _ in bad if problems)} |")
    lines += ["", "| kill | count |", "|---|---|"]
    lines += [f"| {kind} | {count} |" for kind, count in figures["kills by kind"].items()]
    lines += ["", "| bad input | refused with |", "|---|---|"]
    for case, problems, line in bad:
        lines.append(f"| {case.what} | `{line}`{' **' + '; '.join(problems) + '**' if problems else ''} |")
    lines.append("")
    lines.append(f"{seconds:.0f} s in all; reference study {figures['reference wall time (s)']} s.")
    return "\n".join(lines)


@entry_point
def main(argv=None):
    parser = ArgumentParser(prog="python tools/faults.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="folder of cifar-10-batches-py (default: as the studies find it)")
    parser.add_argument("--kills", type=positive_int, default=SETTINGS.kills,
                        help=f"kills to land (default {SETTINGS.kills})")
    parser.add_argument("--seed", type=non_negative_int, default=SETTINGS.seed,
                        help=f"seed of the kill moments (default {SETTINGS.seed})")
    parser.add_argument("--storage", help="study storage URL (default: SQLite in the work folder)")
    parser.add_argument("--workdir", help="keep everything in this folder (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    data_dir = ensure_data(args.data_dir)
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clrsearch-faults-") as tmp:
        workdir = Path(args.workdir or tmp).absolute()
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "kills").mkdir(exist_ok=True)
        figures = inject(data_dir, workdir / "kills", args.kills, args.seed, args.storage, say)
        bad = []
        env = dict(os.environ)
        for k, case in enumerate(bad_inputs(data_dir, workdir / "inputs", ["--quiet"])):
            problems, line = check_bad_input(case, workdir / "bad" / str(k), env)
            bad.append((case, problems, line))
            say(f"{case.what}: {line}{'  PROBLEM: ' + '; '.join(problems) if problems else ''}")
    seconds = time.perf_counter() - started
    if args.json:
        print(json.dumps({**figures, "bad inputs": len(bad),
                          "bad inputs not refused cleanly": sum(1 for _, p, _ in bad if p)}))
    else:
        print(report(figures, bad, seconds))
    clean = all(figures[k] == 0 for k in ("trials lost", "trials duplicated", "values differing from the reference",
                                           "finished trials without their MLflow run", "MLflow runs left RUNNING"))
    return 0 if clean and not any(p for _, p, _ in bad) else 1


if __name__ == "__main__":
    raise SystemExit(main())
