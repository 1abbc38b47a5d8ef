"""The tracking store: is it usable, which experiment, which commit.

Runs go where MLflow puts them by default: ``$MLFLOW_TRACKING_URI`` when set,
else ``sqlite:///mlflow.db`` in the working directory with artifacts under
``mlruns/``. Experiment ``clrsearch`` unless a caller names another.
"""
from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ..errors import UsageError, redact

EXPERIMENT = "clrsearch"


def git_commit() -> str:
    """Short hash of the commit the package is checked out at, or "unknown"."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def experiment_id(client: MlflowClient, name: str) -> str:
    """Id of the experiment ``name``, created when missing.

    Raises
    ------
    UsageError
        The experiment exists but was deleted.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name)
        except MlflowException:  # created meanwhile by another process
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise UsageError(f"MLflow experiment {name!r} is deleted; restore it "
                         f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) "
                         f"or choose another experiment name")
    return experiment.experiment_id


def find_experiment_id(name: str = EXPERIMENT, client: MlflowClient | None = None) -> str | None:
    """Id of the experiment ``name``, without creating it.

    Parameters
    ----------
    name : str, optional
        Experiment name, ``EXPERIMENT`` by default.
    client : MlflowClient, optional
        Client of the store to read, ``MlflowClient()`` (``$MLFLOW_TRACKING_URI``) by default.

    Returns
    -------
    str or None
        The experiment's id, also when it is deleted; None when the store has
        no experiment of that name.
    """
    client = client or MlflowClient()
    found = client.get_experiment_by_name(name)
    return None if found is None else found.experiment_id


def delete_experiment(name: str, client: MlflowClient | None = None) -> str:
    """Delete the experiment ``name``, creating it first when the store has none of that name.

    Parameters
    ----------
    name : str
        Experiment name.
    client : MlflowClient, optional
        Client of the store, ``MlflowClient()`` (``$MLFLOW_TRACKING_URI``) by default.

    Returns
    -------
    str
        Id of the deleted experiment. An experiment deleted already stays so
        and its id is returned.
    """
    with _quiet_store_creation():
        client = client or MlflowClient()
        found = client.get_experiment_by_name(name)
        if found is None:
            try:
                exp_id = client.create_experiment(name)
            except MlflowException:  # created meanwhile by another process
                found = client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found is not None:
            exp_id = found.experiment_id
            if found.lifecycle_stage != "active":
                return exp_id
        client.delete_experiment(exp_id)
    return exp_id


def check_store(experiment: str = EXPERIMENT) -> None:
    """Raise UsageError unless the tracking store answers and ``experiment`` is not deleted.

    Creates no run and no experiment, so that a study refused here leaves
    nothing behind in MLflow.
    """
    import mlflow

    uri = mlflow.get_tracking_uri()
    try:
        with _quiet_store_creation():
            found = MlflowClient().get_experiment_by_name(experiment)
    except Exception as error:  # MlflowException, or the store's own error for a bad URI or a dead server
        reason = str(error).strip().splitlines()[0].split(". ")[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"cannot use the MLflow tracking store {redact(uri)} ({reason}); point "
                         f"MLFLOW_TRACKING_URI at a running server (http://HOST:5000) or a database, "
                         f"or unset it for sqlite:///mlflow.db") from None
    if found is not None and found.lifecycle_stage != "active":
        raise UsageError(f"MLflow experiment {experiment!r} is deleted; restore it "
                         f"(mlflow experiments restore --experiment-id {found.experiment_id}) "
                         f"or choose another experiment name")


@contextlib.contextmanager
def _quiet_store_creation():
    """Without MLflow's INFO lines about creating a new SQLite store, so that an error after it stays one line."""
    import logging

    logger = logging.getLogger("mlflow.store.db.utils")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
