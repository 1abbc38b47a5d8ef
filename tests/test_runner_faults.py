"""The fault windows of StudyRunner.train_all (clrsearch.search.runner): from the claim to the tell a population
beats and is given back on any exception; the study is over only when one look at it under its lock finds no
trial waiting or running; a disk or storage error is one line and no death.

The runner works on a real study storage, with the tracking run and the training replaced by fakes."""

import errno
import time
from dataclasses import replace
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from clrsearch.search import queue, runner
from test_queue import new_queue

TIMING = replace(queue.WORKER_TIMING, heartbeat_seconds=0.3, grace_seconds=1.0)


class Parent:
    """The study's tracking run: ``finish_runs`` does what the test asks of it (e.g. wait for a slow server)."""

    def __init__(self, finish_runs=lambda: None):
        self.finish_runs = finish_runs


def study_runner(shared, finish_runs=lambda: None, train_and_tell=None):
    """A StudyRunner of a random study on ``shared``, one trial per population; ``train_and_tell(trials)``
    defaults to telling every trial 0.5."""
    study_runner = runner.StudyRunner(None, runner.RunOptions(quiet=True))
    study_cfg = SimpleNamespace(trials_per_population=1, sampler="random", n_trials=0, kind="coarse")
    study_runner.config = SimpleNamespace(study=study_cfg, timing=TIMING)
    study_runner.shared, study_runner.parent, study_runner.url = shared, Parent(finish_runs), shared.url
    tell = train_and_tell or (lambda trials: [shared.study.tell(t, 0.5) for t in trials])
    study_runner.train_and_tell = lambda study, trials, splits: tell(trials)
    return study_runner


def another_worker(url):
    """Another worker's queue of study "s": its own storage, as another process opens it."""
    with queue.study_lock(url):
        storage = queue.open_storage(url, TIMING)
        return queue.TrialQueue(optuna.load_study(study_name="s", storage=storage), storage, url, TIMING)


def states(shared):
    return [t.state for t in shared.study.get_trials()]


def test_a_slow_tracking_server_before_training_does_not_let_another_worker_take_the_trials(study_url):
    shared = new_queue(study_url, 0.1, timing=TIMING)
    other = another_worker(study_url)  # another worker of the study, recovering what it finds stale
    seen = []

    def slow_server():
        if not seen:
            time.sleep(TIMING.grace_seconds + 1.2)  # SQLite's clock, which heartbeats use, ticks in seconds
            optuna.storages.fail_stale_trials(other.study)

    def train_and_tell(trials):
        seen.extend(shared.storage.get_trial(shared.trial_id(t.number)).state for t in trials)
        for t in trials:
            shared.study.tell(t, 0.5)

    study_runner(shared, slow_server, train_and_tell).train_all(shared.study, None)
    assert seen == [TrialState.RUNNING]
    assert states(shared) == [TrialState.COMPLETE]


def test_ctrl_c_while_the_runs_before_are_finished_gives_the_claimed_trials_back(study_url):
    shared = new_queue(study_url, 0.1, 0.2, timing=TIMING)

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        study_runner(shared, interrupted).train_all(shared.study, None)
    trials = shared.study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING, TrialState.WAITING]
    assert trials[0].user_attrs["reason"] == queue.INTERRUPTED
    assert trials[2].user_attrs["slot"] == 0  # its copy


def test_a_trial_requeued_after_the_last_claim_is_trained_before_the_study_ends(study_url):
    shared = new_queue(study_url, 0.1, timing=TIMING)
    elsewhere = another_worker(study_url)  # the machine that runs slot 0
    [theirs] = elsewhere.claim(SimpleNamespace(study=SimpleNamespace(trials_per_population=1, sampler="random",
                                                                     n_trials=0)))
    claim = shared.claim
    calls = []

    def claim_then_requeued(config):
        trials = claim(config)
        if not calls:  # nothing to claim; meanwhile the other machine gives its trial back, a copy waits
            elsewhere.give_back([theirs])
        calls.append(trials)
        return trials

    shared.claim = claim_then_requeued
    study_runner(shared).train_all(shared.study, None)
    assert states(shared) == [TrialState.FAIL, TrialState.COMPLETE]


def test_a_full_disk_while_training_is_one_line_and_no_death(study_url):
    shared = new_queue(study_url, 0.1, timing=TIMING)

    def disk_full(trials):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/mlruns/x.png")

    with pytest.raises(OSError) as raised:  # said in one line by the command (outages.disk_full_in_one_line)
        study_runner(shared, train_and_tell=disk_full).train_all(shared.study, None)
    assert raised.value.errno == errno.ENOSPC
    trials = shared.study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs["reason"] == "infrastructure: [Errno 28] No space left on device: '/data/mlruns/x.png'"


def test_sqlite_full_behind_optunas_storage_error_is_a_full_disk_too(study_url):
    import sqlite3

    import optuna
    import sqlalchemy

    shared = new_queue(study_url, 0.1, timing=TIMING)

    def disk_full(trials):
        try:
            raise sqlalchemy.exc.OperationalError("COMMIT", {}, sqlite3.OperationalError("database or disk is full"))
        except sqlalchemy.exc.OperationalError as error:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from error

    with pytest.raises(optuna.exceptions.StorageInternalError):  # not a SystemExit of a storage failure
        study_runner(shared, train_and_tell=disk_full).train_all(shared.study, None)
