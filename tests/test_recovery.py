"""Runs left behind by processes that died (clrsearch.tracking.recovery): ended KILLED when their
process is gone or silent, and not counted as logged trials."""

import time

from clrsearch import processes
from clrsearch.tracking import recovery
from clrsearch.tracking.client import HEARTBEAT_TAG, WORKER_TAG
from clrsearch.tracking.store import experiment_id
from helpers import dead_pid


def test_runs_of_dead_processes_end_killed(store):
    experiment = experiment_id(store, "recovery-runs")
    now = time.time()

    def run(worker, beat=None):
        tags = {} if worker is None else {WORKER_TAG: worker}
        if beat is not None:
            tags[HEARTBEAT_TAG] = f"{beat:.0f}"
        return store.create_run(experiment, tags=tags).info.run_id

    dead = processes.identity(dead_pid())
    dead_here = run(dead)
    alive_here = run(processes.identity())
    stale = run("elsewhere:1:1", now - 60)  # silent for longer than the grace period
    fresh = run("elsewhere:2:1", now)
    untagged = run(None)
    assert recovery.end_dead_runs("recovery-runs", grace=20) == 2
    status = {r: store.get_run(r).info.status for r in (dead_here, alive_here, stale, fresh, untagged)}
    assert status == {dead_here: "KILLED", alive_here: "RUNNING", stale: "KILLED", fresh: "RUNNING",
                      untagged: "RUNNING"}
    assert store.get_run(dead_here).data.tags["clrsearch.ended"] == f"its process {dead} died"
    assert "clrsearch.ended" not in store.get_run(alive_here).data.tags


def test_a_child_run_of_another_host_counts_as_dead_only_after_child_run_seconds(store):
    experiment = experiment_id(store, "recovery-children")
    young = store.create_run(experiment, tags={WORKER_TAG: "elsewhere:3:1"}).info.run_id
    assert recovery.end_dead_runs("recovery-children", grace=20) == 0
    old_start = int(1000 * (time.time() - recovery.CHILD_RUN_SECONDS - 5))
    old = store.create_run(experiment, start_time=old_start, tags={WORKER_TAG: "elsewhere:4:1"}).info.run_id
    assert recovery.end_dead_runs("recovery-children", grace=20) == 1
    assert (store.get_run(young).info.status, store.get_run(old).info.status) == ("RUNNING", "KILLED")
    assert recovery.end_dead_runs("no-such-experiment") == 0


def test_logged_trials_are_the_trial_runs_of_the_study_but_those_of_dead_processes(store):
    experiment = experiment_id(store, "recovery-trials")
    study = "it's fine"  # a quote in the name: the filter quotes it with the other kind

    def trial_run(number, study_name=study, **tags):
        return store.create_run(experiment, tags={"level": "trial", "study_name": study_name, "trial": str(number),
                                                  **tags}).info.run_id

    trial_run(0)
    trial_run(3)
    trial_run(5, **{"clrsearch.ended": "its process elsewhere:1:1 died"})
    trial_run(7, study_name="another")
    store.create_run(experiment, tags={"level": "seed", "study_name": study, "trial": "9"})
    assert recovery.logged_trials("recovery-trials", study) == {0, 3}
    assert recovery.logged_trials("recovery-trials", "another") == {7}
    assert recovery.logged_trials("no-such-experiment", study) == set()
