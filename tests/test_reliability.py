"""Studies that survive killed workers, share a PostgreSQL storage, and refuse bad input.

The tests that share a study between processes run against a real PostgreSQL
server (see ``postgres_server`` in conftest.py) and are skipped without one. The
fine studies here run without the race (``--no-race``): each grid point is one trial.
Heartbeats beat every second and a worker elsewhere is taken for dead after
3 s (``CLRSEARCH_HEARTBEAT_SECONDS``, ``CLRSEARCH_GRACE_SECONDS``).
"""

import os
import re
import signal
import subprocess
import sys
import time

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

import faults
from clrsearch import coarse, fine, processes, tracking
from clrsearch.search import queue
from helpers import copy_storage, copy_store, dead_pid, experiment_runs, running_pids, sigint_default

# One seed per lambda keeps MLflow's writes few. 32 hidden units: from 24 rows of W1 on, OpenBLAS sums
# every member's products in the same order whatever the population size, so that a trial's value
# does not depend on the trials it trains with.
TINY = ["--n-s", "10", "--n-batch", "20", "--hidden", "32", "--n-seeds", "1", "--val-size", "200",
        "--eval-train-size", "100", "--evals-per-cycle", "1", "--quiet"]
SLOW = ["--n-s", "200"]  # a population trains for a few tenths of a second: long enough to be caught running
GRID = "0,0.001,0.003,0.01,0.03,0.1"
FINE = ("--no-race", "--no-final")  # one trial per grid point, no final model
TIMING = {"CLRSEARCH_HEARTBEAT_SECONDS": "1", "CLRSEARCH_GRACE_SECONDS": "3"}


class Workspace:
    """A working directory with its own MLflow store, the environment for commands run in it."""

    def __init__(self, folder, data, templates):
        self.folder = folder
        mlflow_template, self.optuna_template = templates
        self.tracking_uri = copy_store(mlflow_template, folder)
        self.env = {**os.environ, **TIMING, "MLFLOW_TRACKING_URI": self.tracking_uri}
        self.args = ["--data-dir", str(data), *TINY]
        self.storage = copy_storage(self.optuna_template, folder / "studies" / "clrsearch.db")

    def command(self, kind, *args):
        return [sys.executable, "-m", f"clrsearch.{kind}", *self.args, *args]

    def start(self, kind, *args):
        return subprocess.Popen(self.command(kind, *args), cwd=self.folder, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)

    def run(self, kind, *args, timeout=180):
        return subprocess.run(self.command(kind, *args), cwd=self.folder, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def runs(self):
        return experiment_runs(MlflowClient(tracking_uri=self.tracking_uri), "clrsearch")


@pytest.fixture
def workspace(tmp_path, tiny_data, mlflow_template, optuna_template, monkeypatch):
    space = Workspace(tmp_path, tiny_data, (mlflow_template, optuna_template))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", space.tracking_uri)
    for name, value in TIMING.items():
        monkeypatch.setenv(name, value)
    return space


@pytest.fixture(scope="module")
def one_worker_grid(tmp_path_factory, tiny_data, mlflow_template, optuna_template):
    """lambda -> value of the fine grid run by one worker, uninterrupted."""
    space = Workspace(tmp_path_factory.mktemp("one-worker"), tiny_data, (mlflow_template, optuna_template))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(space.folder)
        patch.setenv("MLFLOW_TRACKING_URI", space.tracking_uri)
        assert fine.main([*space.args, "--grid", GRID, *FINE]) == 0
    return {t.params["lam"]: t.value for t in load(space.storage, "fine").get_trials()}


def load(url, name):
    return optuna.load_study(study_name=name, storage=url)


def results_by_slot(study):
    """slot -> the trials that are its result (should be exactly one each)."""
    slots = {}
    for t in study.get_trials():
        slots.setdefault(t.user_attrs["slot"], [])
        if queue.is_final(t):
            slots[t.user_attrs["slot"]].append(t)
    return slots


def wait_for(predicate, timeout=60.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def running_trial_of(url, name, pid):
    """Whether study ``name`` has a RUNNING trial owned by process ``pid``."""
    return pid in running_pids(queue.read_trials(url, name))


def assert_each_grid_point_once(study, values):
    slots = results_by_slot(study)
    assert sorted(slots) == list(range(len(values)))
    assert all(len(found) == 1 for found in slots.values()), {s: len(f) for s, f in slots.items()}
    got = {found[0].params["lam"]: found[0].value for found in slots.values()}
    assert got == values  # exactly: the same seeds give the same values, whoever trains them


def assert_no_run_left_running(space):
    runs = space.runs()
    assert runs
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []


# ----------------------------------------------------------------------------- several workers


@pytest.mark.slow
@pytest.mark.postgres
def test_three_workers_of_two_commands_share_an_empty_postgresql_database_and_agree_with_one_worker(
        workspace, postgres_url, one_worker_grid):
    # As on two machines, one of them running two workers: started at the same moment, on a database
    # without tables yet, in populations of two so that every worker gets some.
    args = ("--grid", GRID, *FINE, "--trials-per-population", "2", "--storage", postgres_url)
    commands = [workspace.start("fine", *args, "--workers", "2"), workspace.start("fine", *args)]
    outputs = [command.communicate(timeout=180) for command in commands]
    assert [command.returncode for command in commands] == [0, 0], [err for _, err in outputs]
    assert "2 workers: this process and pid" in outputs[0][0]
    study = load(postgres_url, "fine")
    assert_each_grid_point_once(study, one_worker_grid)
    assert len(study.trials) == 6  # nothing claimed twice, nothing retried

    runs = workspace.runs()
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("level") == "study"}
    assert sorted(r.info.status for r in parents.values()) == ["FINISHED", "FINISHED"]
    trial_runs = [r for r in runs if r.data.tags.get("level") == "trial"]
    assert sorted(int(r.data.tags["trial"]) for r in trial_runs) == list(range(6))
    assert all(r.data.tags["mlflow.parentRunId"] in parents for r in trial_runs)  # helpers' runs too
    assert_no_run_left_running(workspace)


@pytest.mark.slow
@pytest.mark.postgres
def test_a_helper_killed_mid_trial_is_recovered_by_its_parent_which_reports_it(workspace, postgres_url):
    # Longer trials, one per population: the parent is still busy when its helper has started.
    args = ("--grid", GRID, *FINE, "--n-s", "300", "--trials-per-population", "1", "--storage", postgres_url,
            "--workers", "2")
    parent = workspace.start("fine", *args)
    helper = []

    def helper_running():
        assert parent.poll() is None, "the parent finished before its helper claimed a trial"
        helper[:] = running_pids(queue.read_trials(postgres_url, "fine")) - {parent.pid}
        return bool(helper)

    wait_for(helper_running, what="the helper to claim trials")
    os.kill(helper[0], signal.SIGKILL)
    _, err = parent.communicate(timeout=180)
    assert parent.returncode == 128 + signal.SIGKILL
    assert f"worker pid {helper[0]} ended with status {128 + signal.SIGKILL}" in err

    study = load(postgres_url, "fine")
    slots = results_by_slot(study)
    assert sorted(slots) == list(range(6)) and all(len(found) == 1 for found in slots.values())
    dead = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(dead) == 1 and "died" in dead[0].user_attrs["reason"]
    for t in dead:
        retry = slots[t.user_attrs["slot"]][0]  # a trial killed before it drew its lambda has no params yet
        assert optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(retry)[-1] == t.number
        assert retry.params == t.system_attrs["fixed_params"]
    assert_no_run_left_running(workspace)


# ----------------------------------------------------------------------------- one worker, killed


@pytest.mark.slow
def test_a_sigkilled_study_resumes_in_a_restarted_worker_with_the_values_of_an_uninterrupted_run(workspace):
    args = ("--grid", GRID, *FINE, "--trials-per-population", "2", *SLOW)
    reference = copy_storage(workspace.optuna_template, workspace.folder / "uninterrupted.db")
    assert fine.main([*workspace.args, *args, "--storage", reference, "--experiment", "uninterrupted"]) == 0
    uninterrupted = {t.params["lam"]: t.value for t in load(reference, "fine").get_trials()}

    process = workspace.start("fine", *args)
    wait_for(lambda: any(t.state == TrialState.COMPLETE for t in queue.read_trials(workspace.storage, "fine"))
             and running_trial_of(workspace.storage, "fine", process.pid), what="a completed trial and a running one")
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = {t.number: t.state for t in load(workspace.storage, "fine").get_trials()}

    assert fine.main([*workspace.args, *args]) == 0
    study = load(workspace.storage, "fine")
    assert_each_grid_point_once(study, uninterrupted)
    for number, state in before.items():  # completed trials kept, not run again
        if state == TrialState.COMPLETE:
            assert study.trials[number].state == TrialState.COMPLETE
    assert sum(1 for t in study.trials if t.state == TrialState.FAIL) == 2  # the population killed
    statuses = sorted(r.info.status for r in workspace.runs() if r.data.tags.get("level") == "study")
    assert statuses == ["FINISHED", "KILLED"]
    assert_no_run_left_running(workspace)


@pytest.mark.slow
def test_ctrl_c_gives_the_trials_back_says_how_to_resume_and_the_study_resumes(workspace):
    args = ("--n-trials", "3", "--trials-per-population", "1", *SLOW)
    process = workspace.start("coarse", *args)
    wait_for(lambda: running_trial_of(workspace.storage, "coarse", process.pid), what="a running trial")
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in err
    assert re.search(r"interrupted: study 'coarse' has \d of 3 trials finished, kept in sqlite:///", err)
    assert "to resume it, run the same command again: python -m clrsearch.coarse --data-dir" in err
    study = load(workspace.storage, "coarse")
    given_back = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(given_back) == 1 and given_back[0].user_attrs["reason"] == queue.INTERRUPTED
    assert [r.info.status for r in workspace.runs() if r.data.tags.get("level") == "study"] == ["KILLED"]

    assert coarse.main([*workspace.args, *args]) == 0
    slots = results_by_slot(load(workspace.storage, "coarse"))
    assert len(slots) == 3 and all(len(found) == 1 for found in slots.values())


@pytest.mark.slow
def test_trials_told_by_a_process_that_died_before_logging_them_are_logged_by_the_next(workspace, monkeypatch):
    args = [*workspace.args, "--n-trials", "2", "--trials-per-population", "2"]
    def die(self, trials):
        raise KeyboardInterrupt

    dead = processes.identity(dead_pid())
    with monkeypatch.context() as patch:  # a process that dies between telling Optuna and writing to MLflow
        patch.setattr(processes, "identity", lambda pid=None: dead)
        patch.setattr(tracking.StudyRun, "log_trials", die)
        with pytest.raises(SystemExit):
            coarse.main(args)
    study = load(workspace.storage, "coarse")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert [r for r in workspace.runs() if r.data.tags.get("level") == "trial"] == []

    assert coarse.main(args) == 0
    runs = {int(r.data.tags["trial"]): r for r in workspace.runs() if r.data.tags.get("level") == "trial"}
    assert sorted(runs) == [0, 1]
    for t in study.trials:
        assert runs[t.number].info.status == "FINISHED" and runs[t.number].data.tags["curves"] == "lost"
        assert runs[t.number].data.metrics["mean_val_accuracy"] == t.value


# ----------------------------------------------------------------------------- trials that end early


@pytest.mark.slow
def test_a_diverging_lambda_fails_within_its_first_epoch_and_the_study_goes_on(workspace):
    assert fine.main([*workspace.args, "--grid", "0,0.001,1000", *FINE]) == 0
    trials = {t.params["lam"]: t for t in load(workspace.storage, "fine").get_trials()}
    assert [trials[lam].state for lam in (0.0, 0.001)] == [TrialState.COMPLETE] * 2
    failed = trials[1000.0]
    assert failed.state == TrialState.FAIL and failed.user_attrs["final_failure"]
    step = int(re.search(r"diverged: NaN or inf in the cost at update step (\d+)", failed.user_attrs["reason"])[1])
    assert step < 800 // 20  # images / n_batch: within the first epoch
    runs = {r.data.tags.get("trial"): r for r in workspace.runs() if r.data.tags.get("level") == "trial"}
    assert runs[str(failed.number)].info.status == "FAILED"
    assert runs[str(failed.number)].data.tags["reason"] == failed.user_attrs["reason"]


@pytest.mark.slow
@pytest.mark.parametrize("pruner", ["median", "hyperband"])
def test_a_hopeless_lambda_is_pruned_after_its_first_cycle(workspace, pruner):
    # lambda up to 30: the largest ones shrink the weights at every peak of eta. The pruner judges a trial
    # on its first replicate, which at lambda 0.1 fits the tiny data perfectly after one cycle; smaller
    # networks than elsewhere.
    assert coarse.main([*workspace.args, "--hidden", "16", "--n-seeds", "2", "--pruner", pruner, "--n-trials", "8",
                        "--trials-per-population", "1", "--lam-min", "1e-4", "--lam-max", "30"]) == 0
    study = load(workspace.storage, "coarse")
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert max(study.trials, key=lambda t: t.params["lam"]) in pruned
    for t in pruned:
        assert list(t.intermediate_values) == [1]  # stopped after cycle 1 of 2
        assert t.user_attrs["reason"].startswith("pruned after cycle 1")
    runs = {r.data.tags.get("trial"): r for r in workspace.runs() if r.data.tags.get("level") == "trial"}
    for t in pruned:
        assert runs[str(t.number)].info.status == "KILLED"
        assert runs[str(t.number)].data.tags["state"] == "PRUNED"
        assert runs[str(t.number)].data.tags["reason"] == t.user_attrs["reason"]




# ----------------------------------------------------------------------------- bad input


def test_every_kind_of_bad_input_gets_one_line_exit_2_and_leaves_nothing_behind(
        tmp_path, tiny_data, mlflow_template, monkeypatch, capsys):
    cases = faults.bad_inputs(tiny_data, tmp_path / "inputs", TINY)
    assert len(cases) >= 25
    problems = {}
    for k, case in enumerate(cases):
        folder = tmp_path / f"case-{k}"
        copy_store(mlflow_template, folder)
        if case.prepare is not None:
            case.prepare(folder)
        with monkeypatch.context() as patch:
            patch.chdir(folder)
            patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder}/mlflow.db")
            for name, value in case.env.items():
                patch.setenv(name, value)
            with pytest.raises(SystemExit) as exited:
                (coarse if case.command == "coarse" else fine).main(case.argv)
        err = capsys.readouterr().err
        found = faults.leftovers(folder)
        if exited.value.code != 2:
            found.append(f"exit status {exited.value.code}")
        if len(err.strip().splitlines()) != 1 or case.expect not in err:
            found.append(f"stderr {err!r}")
        if found:
            problems[case.what] = found
    assert problems == {}


@pytest.mark.slow
def test_bad_input_from_the_shell_is_one_line_without_traceback(workspace):
    done = workspace.run("coarse", "--eta-min", "0.1", "--eta-max", "0.01")
    assert done.returncode == 2
    assert done.stderr == "error: the command line: [train] eta_min (0.1) must be smaller than eta_max (0.01)\n"
    assert faults.leftovers(workspace.folder) == []
