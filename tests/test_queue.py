"""The trial queue (clrsearch.search.queue): storage URLs checked before anything is created, claims
of concurrent processes that never overlap, the trials of dead workers failed and copied once, and
trials given back on Ctrl-C."""

import subprocess
import sys
import time
from dataclasses import replace
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from clrsearch import processes
from clrsearch.errors import UsageError
from clrsearch.search import queue
from helpers import UNSHARE, dead_pid, running_pids, unshare_permitted


def lambdas(*values):
    """enqueue_missing's entries: slot k -> lambda values[k], no more user attrs."""
    return {slot: ({"lam": float(lam)}, {}) for slot, lam in enumerate(values)}


def new_queue(url, *values, timing=queue.WORKER_TIMING):
    """A TrialQueue of study "s" whose slots 0, 1, ... wait with the lambdas ``values``, beating with ``timing``."""
    with queue.study_lock(url):
        storage = queue.open_storage(url, timing)
        study = optuna.create_study(study_name="s", storage=storage)
        queue.enqueue_missing(study, lambdas(*values))
    return queue.TrialQueue(study, storage, url, timing)


def claim(shared, n, sampler="random", n_trials=0):
    """Claim up to ``n`` trials as a study of ``sampler`` with ``n_trials`` trials would."""
    study_cfg = SimpleNamespace(trials_per_population=n, sampler=sampler, n_trials=n_trials)
    return shared.claim(SimpleNamespace(study=study_cfg))


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
    shared = new_queue(study_url, 0.1, 0.2)
    with shared.lock():
        queue.enqueue_missing(shared.study, {**lambdas(0.5, 0.6, 0.3), 3: ({"lam": 0.4}, {"point": 7})})
    trials = shared.study.get_trials()
    assert [(t.user_attrs[queue.SLOT], t.system_attrs["fixed_params"]["lam"]) for t in trials] == \
        [(0, 0.1), (1, 0.2), (2, 0.3), (3, 0.4)]
    assert trials[3].user_attrs["point"] == 7


def test_claims_take_waiting_trials_in_order_and_name_their_worker(study_url):
    shared = new_queue(study_url, 0.1, 0.2, 0.3)
    claimed = claim(shared, 2)
    assert [t.number for t in claimed] == [0, 1]
    assert [t.state for t in shared.study.get_trials()] == [TrialState.RUNNING, TrialState.RUNNING, TrialState.WAITING]
    assert all(t.system_attrs[queue.WORKER_ATTR] == processes.identity() for t in shared.study.get_trials()[:2])
    assert running_pids(queue.read_trials(study_url, "s")) == {processes.os.getpid()}
    assert shared.running() == 2
    assert [t.number for t in claim(shared, 5)] == [2]
    assert claim(shared, 5) == []  # a random or grid study never asks the sampler for more trials


def test_an_adaptive_study_is_asked_only_for_the_trials_it_lacks(study_url):
    shared = new_queue(study_url, 0.1)
    first = claim(shared, 3, sampler="tpe", n_trials=4)  # the waiting trial, then two new ones
    assert [(t.number, t.user_attrs[queue.SLOT]) for t in first] == [(0, 0), (1, 1), (2, 2)]
    assert [t.number for t in claim(shared, 3, sampler="tpe", n_trials=4)] == [3]
    assert claim(shared, 3, sampler="tpe", n_trials=4) == []  # 4 running: nothing lacks


@pytest.mark.slow
def test_claims_of_concurrent_processes_never_overlap(study_url):
    url = study_url
    new_queue(url, *range(60))
    claimer = ("import sys, optuna; from types import SimpleNamespace as N; from clrsearch.search import queue\n"
               "url = sys.argv[1]; storage = queue.open_storage(url)\n"
               "shared = queue.TrialQueue(optuna.load_study(study_name='s', storage=storage), storage, url)\n"
               "config = N(study=N(trials_per_population=1, sampler='random', n_trials=0))\n"
               "while True:\n"
               "    trials = shared.claim(config)\n"
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
    new_queue(study_url, 0.1)
    assert queue.read_trials(study_url, "other") == []
    assert [t.state for t in queue.read_trials(study_url, "s")] == [TrialState.WAITING]


# ----------------------------------------------------------------------------- dead workers, Ctrl-C


def retried(frozen):
    """The number of the trial a copy retries (Optuna's retry history), else None."""
    history = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(frozen)
    return history[-1] if history else None


@pytest.mark.slow
def test_trials_of_dead_workers_get_one_copy_each_and_live_ones_are_left_alone(study_url):
    timing = replace(queue.WORKER_TIMING, heartbeat_seconds=0.3, grace_seconds=1.0)
    shared = new_queue(study_url, 0.1, 0.2, 0.3, 0.4, timing=timing)
    dead_here, elsewhere, alive, half_done = claim(shared, 4)
    storage = shared.storage
    storage.set_trial_system_attr(shared.trial_id(dead_here.number), queue.WORKER_ATTR, processes.identity(dead_pid()))
    storage.set_trial_system_attr(shared.trial_id(elsewhere.number), queue.WORKER_ATTR, "elsewhere:1:1")
    for trial in (dead_here, elsewhere, alive, half_done):
        trial.suggest_float("lam", 0.1, 0.4)
    # A worker that failed a dead worker's trial, then died before enqueueing its copy:
    storage.set_trial_state_values(shared.trial_id(half_done.number), TrialState.FAIL)

    shared.recover()
    states = {t.number: t.state for t in shared.study.get_trials()}
    assert states[dead_here.number] == TrialState.FAIL  # at once: its process is gone from this host
    assert states[elsewhere.number] == states[alive.number] == TrialState.RUNNING
    with shared.heartbeat([alive]):
        time.sleep(timing.grace_seconds + 1.2)  # SQLite's clock, which heartbeats use, ticks in seconds
        shared.recover()
        shared.recover()  # twice: still one copy per slot
    trials = shared.study.get_trials()
    assert trials[elsewhere.number].state == TrialState.FAIL  # after the grace period without heartbeat
    assert trials[alive.number].state == TrialState.RUNNING
    copies = [t for t in trials if t.state == TrialState.WAITING]
    assert sorted((t.user_attrs["slot"], retried(t)) for t in copies) == \
        sorted((t.user_attrs["slot"], t.number) for t in (dead_here, elsewhere, half_done))
    assert sorted(t.params["lam"] for t in copies) == [0.1, 0.2, 0.4]
    assert all(queue.WORKER_ATTR not in t.system_attrs and "reason" not in t.user_attrs for t in copies)
    # The copies are claimed like any waiting trial, with the lambda of the trial they retry.
    again = claim(shared, 5)
    assert sorted(t.suggest_float("lam", 0.1, 0.4) for t in again) == [0.1, 0.2, 0.4]


def test_a_trial_claimed_but_never_marked_is_taken_for_dead_after_the_grace_period(study_url):
    shared = new_queue(study_url, 0.1, timing=replace(queue.WORKER_TIMING, heartbeat_seconds=0.3, grace_seconds=1.0))
    with shared.lock():
        unmarked = shared.study.ask()  # as a worker killed between asking and naming itself leaves it
    shared.recover()
    assert shared.study.get_trials()[unmarked.number].state == TrialState.RUNNING
    time.sleep(1.3)
    shared.recover()
    assert [t.state for t in shared.study.get_trials()] == [TrialState.FAIL, TrialState.WAITING]


def test_a_slot_whose_workers_keep_dying_is_given_up(study_url):
    shared = new_queue(study_url, 0.1)
    for _ in range(queue.WORKER_TIMING.max_deaths + 3):
        for trial in claim(shared, 1):
            shared.storage.set_trial_system_attr(shared.trial_id(trial.number), queue.WORKER_ATTR,
                                                 processes.identity(dead_pid()))
        shared.recover()
    states = [t.state for t in shared.study.get_trials()]
    assert states == [TrialState.FAIL] * (queue.WORKER_TIMING.max_deaths + 1)  # the first and its copies


def test_trials_given_back_are_enqueued_again_and_not_counted_as_deaths(study_url):
    shared = new_queue(study_url, 0.1, 0.2)
    first, second = claim(shared, 2)
    for trial in (first, second):
        trial.suggest_float("lam", 0.1, 0.2)
    shared.study.tell(second, 0.5)
    for _ in range(queue.WORKER_TIMING.max_deaths + 2):  # Ctrl-C as often as one likes: the slot stays
        shared.give_back([first, second])
        [first] = claim(shared, 1)
    trials = shared.study.get_trials()
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["reason"] == queue.INTERRUPTED
    assert trials[second.number].state == TrialState.COMPLETE  # finished: left alone
    assert (first.user_attrs["slot"], retried(shared.study.get_trials()[first.number])) == (0, first.number - 1)
    assert first.suggest_float("lam", 0.1, 0.2) == 0.1
    assert [queue.is_final(t) for t in trials[:3]] == [False, True, False]
    assert [queue.is_live(t) for t in trials] == [False, False] + [False] * (len(trials) - 3) + [True]


def die(shared, trials):
    """The worker of ``trials`` is killed: they name a process that is gone, and recovery fails them."""
    for trial in trials:
        shared.storage.set_trial_system_attr(shared.trial_id(trial.number), queue.WORKER_ATTR,
                                             processes.identity(dead_pid()))
    shared.recover()


def test_a_lost_slot_is_listed_with_its_point_and_tried_anew_when_a_command_starts_again(study_url):
    shared = new_queue(study_url, 0.1, 0.2)
    for _ in range(queue.WORKER_TIMING.max_deaths + 1):  # six deaths: the first trial and its five copies
        die(shared, [t for t in claim(shared, 2) if t.user_attrs["slot"] == 0])
    [lost] = queue.lost_slots(shared.study)
    assert (lost.slot, lost.point, lost.params, lost.deaths) == (0, 0, {"lam": 0.1}, 6)
    reason = lost.last.user_attrs["reason"]  # the worker as people read it: host:pid
    assert reason.startswith(f"worker {processes.socket.gethostname()}:") and reason.endswith(" died")
    assert reason.count(":") == 1
    assert [(s.slot, s.deaths) for s in shared.retry_lost()] == [(0, 6)]
    assert queue.lost_slots(shared.study) == []
    for _ in range(queue.WORKER_TIMING.max_deaths):  # as many tries again
        die(shared, claim(shared, 1))
    assert [t.state for t in shared.study.get_trials()][-1] == TrialState.WAITING
    die(shared, claim(shared, 1))
    assert [(s.slot, s.deaths) for s in queue.lost_slots(shared.study)] == [(0, 6)]


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                   optuna.exceptions.StorageInternalError("database is locked"),
                                   RuntimeError("a bug")])
def test_trials_given_back_on_any_error_are_no_deaths(study_url, error):
    shared = new_queue(study_url, 0.1)
    for _ in range(queue.WORKER_TIMING.max_deaths + 3):
        shared.give_back(claim(shared, 1), queue.give_back_reason(error))
    trials = shared.study.get_trials()
    assert trials[-1].state == TrialState.WAITING and queue.lost_slots(shared.study) == []
    expected = {OSError: "infrastructure: [Errno 28] No space left on device",
                RuntimeError: "error: RuntimeError: a bug"}.get(type(error), "infrastructure: database is locked")
    assert trials[0].user_attrs["reason"] == expected


def test_trials_taken_over_from_a_worker_that_still_ran_are_no_deaths(study_url):
    shared = new_queue(study_url, 0.1)
    for _ in range(queue.WORKER_TIMING.max_deaths + 3):
        [trial] = claim(shared, 1)
        with shared.lock():  # another worker fails it, as it fails a trial whose heartbeat stalled
            shared.storage.set_trial_state_values(shared.trial_id(trial.number), TrialState.FAIL)
            queue._retry(shared.study, shared.storage.get_trial(shared.trial_id(trial.number)))
    trials = shared.study.get_trials()
    assert trials[-1].state == TrialState.WAITING  # its worker, this process, was alive each time
    assert trials[-1].user_attrs[queue.SPARED] == list(range(len(trials) - 1))


def test_a_worker_that_finds_its_trial_taken_over_spares_it(study_url):
    shared = new_queue(study_url, 0.1)
    for _ in range(queue.WORKER_TIMING.max_deaths + 1):  # taken over from a machine whose worker ran on
        [trial] = claim(shared, 1)
        shared.storage.set_trial_system_attr(shared.trial_id(trial.number), queue.WORKER_ATTR, "far:1:1:other")
        with shared.lock():
            shared.storage.set_trial_state_values(shared.trial_id(trial.number), TrialState.FAIL)
            queue._retry(shared.study, shared.storage.get_trial(shared.trial_id(trial.number)))
    [lost] = queue.lost_slots(shared.study)
    assert lost.deaths == queue.WORKER_TIMING.max_deaths + 1
    shared.spare([0, 2])  # the far worker's tell found two of them taken over: the slot gets a copy again
    trials = shared.study.get_trials()
    assert trials[-1].state == TrialState.WAITING and trials[-1].user_attrs[queue.SPARED] == [0, 2]
    shared.spare([1])
    assert shared.study.get_trials()[-1].user_attrs[queue.SPARED] == [0, 1, 2]


# A worker in a PID namespace of its own: claims the one trial, beats until its stdin closes.
CLAIMER = """\
import sys
from dataclasses import replace
from types import SimpleNamespace as N
import optuna
from clrsearch.search import queue
url = sys.argv[1]
timing = replace(queue.WORKER_TIMING, heartbeat_seconds=0.3, grace_seconds=1.0)
with queue.study_lock(url):
    storage = queue.open_storage(url, timing)
shared = queue.TrialQueue(optuna.load_study(study_name="s", storage=storage), storage, url, timing)
trials = shared.claim(N(study=N(trials_per_population=1, sampler="random", n_trials=0)))
with shared.heartbeat(trials):
    print(trials[0].number, flush=True)
    sys.stdin.read()
"""
RECOVERER = """\
import sys
import optuna
from clrsearch.search import queue
url = sys.argv[1]
with queue.study_lock(url):
    storage = queue.open_storage(url)
queue.TrialQueue(optuna.load_study(study_name="s", storage=storage), storage, url).recover()
"""




@pytest.mark.slow
@pytest.mark.skipif(not unshare_permitted(), reason="unshare of a PID namespace is not permitted here")
def test_a_worker_of_another_pid_namespace_of_the_same_hostname_keeps_its_live_trial(study_url):
    shared = new_queue(study_url, 0.1)
    claimer = subprocess.Popen([*UNSHARE, sys.executable, "-c", CLAIMER, study_url], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert claimer.stdout.readline().strip() == "0"
        time.sleep(0.1)  # the recovering worker's pid 1 starts later than the claimer's
        subprocess.run([*UNSHARE, sys.executable, "-c", RECOVERER, study_url], check=True, timeout=120)
        [trial] = shared.study.get_trials()
        assert trial.state == TrialState.RUNNING
        assert trial.system_attrs[queue.WORKER_ATTR].split(":")[:2] == [processes.socket.gethostname(), "1"]
    finally:
        claimer.communicate("", timeout=60)
