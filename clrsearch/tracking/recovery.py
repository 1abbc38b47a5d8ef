"""Runs left RUNNING by processes that died, and the trials whose runs died with them.

``end_dead_runs`` ends as KILLED the runs a killed process left RUNNING: at
once when the process was on this host, after the grace period without a
heartbeat otherwise. ``logged_trials`` tells the study which finished trials
have a trial run, so that the others are logged again from the study.
"""
from __future__ import annotations

import contextlib

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from .. import processes
from ..config import WORKER_TIMING
from .client import HEARTBEAT_TAG, WORKER_TAG
from .store import EXPERIMENT

CHILD_RUN_SECONDS = 600  # a trial, seed or final run of another host still RUNNING after this is dead


def end_dead_runs(experiment: str = EXPERIMENT, grace: float = WORKER_TIMING.grace_seconds) -> int:
    """End as KILLED the runs of ``experiment`` left RUNNING by processes that died; returns how many.

    A run's process is dead when it was on this host and is gone, or when it
    was elsewhere and the run's heartbeat is older than
    ``grace`` seconds (a run without heartbeat, i.e. a trial, seed
    or final run, after ``CHILD_RUN_SECONDS``). Runs without the worker tag
    are left alone.
    """
    from mlflow.entities import ViewType

    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return 0
    running, token = [], None
    while True:
        page = client.search_runs([found.experiment_id], filter_string="attributes.status = 'RUNNING'",
                                  run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
        running.extend(page)
        token = page.token
        if not token:
            break
    ended = 0
    for run in running:
        worker = run.data.tags.get(WORKER_TAG)
        if worker is None:
            continue
        beat = run.data.tags.get(HEARTBEAT_TAG)
        last = float(beat) if beat else run.info.start_time / 1000
        if processes.dead(worker, last, grace if beat else max(grace, CHILD_RUN_SECONDS)):
            with contextlib.suppress(MlflowException):
                client.set_tag(run.info.run_id, "clrsearch.ended", f"its process {worker} died")
                client.set_terminated(run.info.run_id, "KILLED")
                ended += 1
    return ended


def logged_trials(experiment: str, study_name: str) -> set:
    """Numbers of the trials of ``study_name`` with a trial run written or being written.

    A run that a dead process left unfinished (ended by ``end_dead_runs``)
    does not count.
    """
    return set(trial_runs(experiment, study_name))


def trial_runs(experiment: str, study_name: str) -> dict:
    """trial number -> run id of the trial runs of ``study_name`` (the latest one of a trial logged twice),
    leaving out runs that a dead process left unfinished."""
    from mlflow.entities import ViewType

    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return {}
    quote = '"' if "'" in study_name else "'"
    filter_string = f"tags.level = 'trial' and tags.study_name = {quote}{study_name}{quote}"
    runs, token = {}, None
    while True:
        page = client.search_runs([found.experiment_id], filter_string=filter_string,
                                  run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token,
                                  order_by=["attributes.start_time ASC"])
        runs.update({int(r.data.tags["trial"]): r.info.run_id for r in page if "clrsearch.ended" not in r.data.tags})
        token = page.token
        if not token:
            return runs
