"""The trial queue (clrsearch.search.queue): storage URLs checked before anything is created, claims
of concurrent processes that never overlap, the trials of dead workers failed and copied once, and
trials given back on Ctrl-C."""

import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from clrsearch import processes
from clrsearch.errors import UsageError
from clrsearch.search import queue
from helpers import dead_pid


def lambdas(*values):
    """enqueue_missing's entries: slot k -> lambda values[k], no more user attrs."""
    return {slot: ({"lam": float(lam)}, {}) for slot, lam in enumerate(values)}


def new_study(url, *values):
    with queue.study_lock(url):
        study = optuna.create_study(study_name="s", storage=queue.open_storage(url))
        queue.enqueue_missing(study, lambdas(*values))
    return study


# ----------------------------------------------------------------------------- storage URLs


def test_a_relative_sqlite_storage_gets_its_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert queue.storage_url(None) == "sqlite:///studies/clrsearch.db"
    assert (tmp_path / "studies").is_dir()
    assert queue.storage_url("sqlite:///deep/er/s.db") == "sqlite:///deep/er/s.db"
    assert (tmp_path / "deep" / "er").is_dir()
    assert queue.sqlite_path("sqlite:///deep/er/s.db") == (tmp_path / "deep" / "er" / "s.db").relative_to(tmp_path)
    assert queue.sqlite_path("postgresql://u@h/db") is None


@pytest.mark.parametrize("url, message", [
    ("mysql://user@host/db", "is not a database URL"),
    ("studies.db", "is not a database URL"),
    ("sqlite://", "would live in memory"),
    ("sqlite:///:memory:", "would live in memory"),
    ("postgresql://user@host", "names no database"),
    ("postgresql+nosuchdriver://user@host/db", "is not a valid database URL"),
])
def test_bad_storage_urls_are_one_line_usage_errors(url, message):
    with pytest.raises(UsageError) as error:
        queue.storage_url(url)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_sqlite_storage_naming_a_folder_is_refused(tmp_path):
    with pytest.raises(UsageError, match="names a folder"):
        queue.storage_url(f"sqlite:///{tmp_path}")


def test_an_unreachable_postgresql_server_is_one_line_without_the_password():
    url = "postgresql://someone:secret@127.0.0.1:9/db"
    with pytest.raises(UsageError) as error:
        with queue.study_lock(url):
            pass
    message = str(error.value)
    assert message.startswith("cannot reach the storage postgresql://someone@127.0.0.1:9/db: ")
    assert "secret" not in message and "\n" not in message


# ----------------------------------------------------------------------------- claims


def test_enqueue_missing_enqueues_each_slot_once(study_url):
    study = new_study(study_url, 0.1, 0.2)
    with queue.study_lock(queue.url_of(study)):
        queue.enqueue_missing(study, {**lambdas(0.5, 0.6, 0.3), 3: ({"lam": 0.4}, {"point": 7})})
    trials = study.get_trials()
    assert [(t.user_attrs[queue.SLOT], t.system_attrs["fixed_params"]["lam"]) for t in trials] == \
        [(0, 0.1), (1, 0.2), (2, 0.3), (3, 0.4)]
    assert trials[3].user_attrs["point"] == 7
    assert queue.url_of(study) == study_url


def test_a_claimed_trial_names_its_worker_before_it_runs(study_url):
    study = new_study(study_url, 0.1, 0.2, 0.3)
    with queue.study_lock(queue.url_of(study)):
        claimed = queue.claim_waiting(study, 2)
    assert [t.number for t in claimed] == [0, 1]
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.RUNNING, TrialState.RUNNING, TrialState.WAITING]
    assert all(t.system_attrs[queue.WORKER_ATTR] == processes.identity() for t in study.get_trials()[:2])
    assert queue.running_pids(queue.url_of(study), "s") == {processes.os.getpid()}
    assert queue.others_running(study) == 2


@pytest.mark.slow
def test_claims_of_concurrent_processes_never_overlap(study_url):
    url = study_url
    new_study(url, *range(60))
    claimer = ("import sys, optuna; from clrsearch.search import queue\n"
               "url = sys.argv[1]; study = optuna.load_study(study_name='s', storage=queue.open_storage(url))\n"
               "while True:\n"
               "    with queue.study_lock(url):\n"
               "        trials = queue.claim_waiting(study, 1)\n"
               "    if not trials: break\n"
               "    print(trials[0].number, flush=True)\n")
    claimers = [subprocess.Popen([sys.executable, "-c", claimer, url], stdout=subprocess.PIPE, text=True)
                for _ in range(3)]
    claimed = [int(n) for p in claimers for n in p.communicate(timeout=120)[0].split()]
    assert sorted(claimed) == list(range(60))
    assert [p.returncode for p in claimers] == [0, 0, 0]


def test_read_trials_of_a_study_not_made_yet_is_empty(tmp_path, study_url):
    assert queue.read_trials(f"sqlite:///{tmp_path}/none.db", "s") == []
    assert not (tmp_path / "none.db").exists()
    new_study(study_url, 0.1)
    assert queue.read_trials(study_url, "other") == []
    assert [t.state for t in queue.read_trials(study_url, "s")] == [TrialState.WAITING]


# ----------------------------------------------------------------------------- dead workers, Ctrl-C


def test_trials_of_dead_workers_get_one_copy_each_and_live_ones_are_left_alone(study_url, monkeypatch):
    timing = {"CLRSEARCH_HEARTBEAT_SECONDS": 0.3, "CLRSEARCH_GRACE_SECONDS": 1.0}
    for name, value in timing.items():
        monkeypatch.setenv(name, str(value))
    study = new_study(study_url, 0.1, 0.2, 0.3, 0.4)
    with queue.study_lock(queue.url_of(study)):
        dead_here, elsewhere, alive, half_done = queue.claim_waiting(study, 4)
    study._storage.set_trial_system_attr(dead_here._trial_id, queue.WORKER_ATTR, processes.identity(dead_pid()))
    study._storage.set_trial_system_attr(elsewhere._trial_id, queue.WORKER_ATTR, "elsewhere:1:1")
    for trial in (dead_here, elsewhere, alive, half_done):
        trial.suggest_float("lam", 0.1, 0.4)
    # A worker that failed a dead worker's trial, then died before enqueueing its copy:
    study._storage.set_trial_state_values(half_done._trial_id, TrialState.FAIL)

    queue.recover_dead_workers(study)
    states = {t.number: t.state for t in study.get_trials()}
    assert states[dead_here.number] == TrialState.FAIL  # at once: its process is gone from this host
    assert states[elsewhere.number] == states[alive.number] == TrialState.RUNNING
    with queue.Heartbeat(study, [alive]):
        time.sleep(timing["CLRSEARCH_GRACE_SECONDS"] + 1.2)  # SQLite's clock, which heartbeats use, ticks in seconds
        queue.recover_dead_workers(study)
        queue.recover_dead_workers(study)  # twice: still one copy per slot
    trials = study.get_trials()
    assert trials[elsewhere.number].state == TrialState.FAIL  # after the grace period without heartbeat
    assert trials[alive.number].state == TrialState.RUNNING
    copies = [t for t in trials if t.state == TrialState.WAITING]
    assert sorted((t.user_attrs["slot"], t.user_attrs["retry_of"]) for t in copies) == \
        sorted((t.user_attrs["slot"], t.number) for t in (dead_here, elsewhere, half_done))
    assert sorted(t.system_attrs["fixed_params"]["lam"] for t in copies) == [0.1, 0.2, 0.4]
    assert queue.deaths(study, 0) == 1 and queue.deaths(study, 2) == 0


def test_trials_given_back_are_enqueued_again_and_not_counted_as_deaths(study_url):
    study = new_study(study_url, 0.1, 0.2)
    with queue.study_lock(queue.url_of(study)):
        first, second = queue.claim_waiting(study, 2)
    for trial in (first, second):
        trial.suggest_float("lam", 0.1, 0.2)
    study.tell(second, 0.5)
    queue.give_back(study, [first, second])
    trials = study.get_trials()
    assert trials[first.number].state == TrialState.FAIL
    assert trials[first.number].user_attrs["reason"] == queue.INTERRUPTED
    assert trials[second.number].state == TrialState.COMPLETE  # finished: left alone
    (copy,) = [t for t in trials if t.state == TrialState.WAITING]
    assert (copy.user_attrs["slot"], copy.user_attrs["retry_of"]) == (0, first.number)
    assert copy.system_attrs["fixed_params"]["lam"] == 0.1
    assert queue.deaths(study, 0) == 0
    assert [queue.is_final(t) for t in trials] == [False, True, False]
    assert [queue.is_live(t) for t in trials] == [False, False, True]
