"""Writing runs: create, log in one batch, end with the right status, beat a heartbeat.

Every run carries MLflow's standard source and user tags (:func:`.store.source_tags`),
the tag ``clrsearch.worker`` (host:pid:start of the process that created it)
and a study run the tag ``clrsearch.heartbeat``, refreshed while it runs;
:mod:`.recovery` reads the last two to end the runs of dead processes. A run
written after the fact (a trial, a replicate, the final model) gets the start
and end times of what it records.
"""

import contextlib
import signal
import time

from mlflow.entities import Param, RunInfo, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient

from .. import processes
from .store import source_tags

WORKER_TAG = "clrsearch.worker"  # host:pid:start of the process that created a run
HEARTBEAT_TAG = "clrsearch.heartbeat"  # unix time, refreshed while a study run runs


def create_run(client, exp_id, run_name, tags, start_time: int | None = None) -> str:
    """A new RUNNING run with the standard tags and ``tags``; ``start_time`` in ms since the epoch, else now."""
    return create_run_info(client, exp_id, run_name, tags, start_time).run_id


def create_run_info(client, exp_id, run_name, tags, start_time: int | None = None) -> RunInfo:
    """:func:`create_run`, returning the new run's ``RunInfo`` (its id and artifact location)."""
    tags = {**source_tags(), WORKER_TAG: processes.identity(), **tags}
    run = client.create_run(exp_id, start_time=start_time, run_name=run_name,
                            tags={k: str(v) for k, v in tags.items()})
    return run.info


def log_artifacts(client, run_info: RunInfo, folder) -> None:
    """Upload the files of ``folder`` to the run's artifacts, into the location ``run_info`` gives.

    ``MlflowClient.log_artifacts`` looks the run up first to find that
    location: one more read of the store per run, which a run just created
    does not need.
    """
    get_artifact_repository(run_info.artifact_uri, tracking_uri=client.tracking_uri).log_artifacts(str(folder))


def beat() -> str:
    return f"{time.time():.0f}"


def run_heartbeat(run_id: str, seconds: float) -> processes.Heartbeat:
    """A started :class:`processes.Heartbeat` refreshing the run's heartbeat tag every ``seconds`` until ``stop``."""
    client = MlflowClient()
    return processes.Heartbeat(lambda: client.set_tag(run_id, HEARTBEAT_TAG, beat()), seconds).start()


def log_batch(client, run_id, metrics=(), params=None, tags=None):
    """One ``log_batch`` call (MLflow splits it when it exceeds the batch limits)."""
    client.log_batch(run_id,
                     metrics=metrics,
                     params=[Param(key, str(value)) for key, value in (params or {}).items()],
                     tags=[RunTag(key, str(value)) for key, value in (tags or {}).items()])


@contextlib.contextmanager
def ended(client, run_id, status: str, end_time: int | None = None):
    """End the run when the block ends: with ``status`` at ``end_time`` (ms, None: now), or KILLED / FAILED
    now when it raises."""
    try:
        yield
    except BaseException as error:
        end_run(client, run_id, error_status(error), quiet=True)
        raise
    end_run(client, run_id, status, end_time=end_time)


def end_run(client, run_id, status: str, quiet: bool = False, end_time: int | None = None):
    """Terminate the run at ``end_time`` (ms, None: now); ``quiet`` keeps an MLflow error from hiding the
    exception being raised."""
    try:
        client.set_terminated(run_id, status, end_time=end_time)
    except MlflowException:
        if not quiet:
            raise


def error_status(error: BaseException) -> str:
    """How a run ends when ``error`` leaves its block: Ctrl-C (or exit status 130) KILLED, exit 0 FINISHED."""
    if isinstance(error, KeyboardInterrupt):
        return "KILLED"
    if isinstance(error, SystemExit):
        if error.code in (0, None):
            return "FINISHED"
        if error.code == 128 + signal.SIGINT:
            return "KILLED"
    return "FAILED"


def now_ms() -> int:
    return int(time.time() * 1000)


def to_ms(seconds: float | None) -> int | None:
    """Seconds since the epoch as MLflow's milliseconds; None stays None (MLflow then takes now)."""
    return None if seconds is None else int(round(seconds * 1000))
