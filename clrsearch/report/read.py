"""What the report reads: runs and artifacts of the MLflow store, studies of the Optuna storage, the registry.

Only reads, through ``MlflowClient`` (``search_runs``, ``list_artifacts``,
``download_artifacts``, the registry's getters) and ``optuna.load_study``;
the one write is the report itself, an artifact of the fine study run
(:meth:`Tracked.attach`). A store or storage whose SQLite file does not exist
reads as empty and is not created.
"""
from __future__ import annotations

import contextlib
import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import optuna
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from ..config import DEFAULT_STORAGE
from ..files import sqlite_path
from ..tracking import ALIAS, EXPERIMENT, REGISTERED_NAME
from ..tracking.single import EXPERIMENT_LEVEL, GRADCHECK_LEVEL

REPORT_ARTIFACT = "report.html"  # the report's name among the fine study run's artifacts


@dataclass(frozen=True)
class Sources:
    """Where the report reads: the MLflow store and experiment, the Optuna storage and studies, the model."""

    tracking_uri: str  # e.g. sqlite:///mlflow.db or http://host:5000
    experiment: str = EXPERIMENT
    storage: str = DEFAULT_STORAGE
    coarse_study: str = "coarse"
    fine_study: str = "fine"
    registered_name: str = REGISTERED_NAME
    alias: str = ALIAS


class Tracked:
    """Read access to the sources, for the block: artifacts are downloaded into a folder removed at its end."""

    def __init__(self, sources: Sources):
        self.sources = sources
        self.client = None  # None: no store there
        self.experiment_id = None
        self._folder = None
        self._studies = {}

    def __enter__(self):
        self._folder = tempfile.TemporaryDirectory(prefix="clrsearch-report-")
        path = sqlite_path(self.sources.tracking_uri)
        if path is None or path.is_file():
            self.client = MlflowClient(self.sources.tracking_uri, registry_uri=self.sources.tracking_uri)
            found = self.client.get_experiment_by_name(self.sources.experiment)
            self.experiment_id = None if found is None else found.experiment_id
        return self

    def __exit__(self, *exc):
        self._folder.cleanup()
        return False

    # ------------------------------------------------------------------ runs

    def runs(self, filter_string: str, max_results: int = 1000) -> list:
        """FINISHED runs of the experiment matching ``filter_string``, the latest first."""
        if self.experiment_id is None:
            return []
        return self.client.search_runs([self.experiment_id], f"{filter_string} and attributes.status = 'FINISHED'",
                                       order_by=["attributes.start_time DESC"], max_results=max_results)

    def train_runs(self, preset: str) -> list:
        """The runs of ``python -m clrsearch.train --preset <preset>``, the latest first."""
        return self.runs(f"tags.level = '{EXPERIMENT_LEVEL}' and tags.preset = '{preset}'")

    def gradcheck_run(self):
        """The latest run of ``python -m clrsearch.gradcheck``, or None."""
        return next(iter(self.runs(f"tags.level = '{GRADCHECK_LEVEL}'", 1)), None)

    def study_run(self, study_name: str):
        """The latest finished study run of the study ``study_name``, or None."""
        return next(iter(self.runs(f"tags.level = 'study' and tags.study_name = '{study_name}'", 1)), None)

    def final_run(self, study_run):
        """The final model's run under ``study_run``, or None."""
        if study_run is None:
            return None
        return next(iter(self.runs(f"tags.level = 'final' and tags.`{MLFLOW_PARENT_RUN_ID}` = "
                                   f"'{study_run.info.run_id}'", 1)), None)

    def metric_history(self, run, key: str) -> list:
        """(step, value) of every point of the run's metric ``key``, in step order."""
        return sorted((m.step, m.value) for m in self.client.get_metric_history(run.info.run_id, key))

    # ------------------------------------------------------------------ artifacts

    def artifact_names(self, run) -> list[str]:
        """The paths of the run's artifacts at its root."""
        return [f.path for f in self.client.list_artifacts(run.info.run_id) if not f.is_dir]

    def artifact(self, run, path: str) -> bytes | None:
        """The bytes of the run's artifact ``path``, None when it has none."""
        if run is None or path not in self.artifact_names(run):
            return None
        folder = Path(self._folder.name) / run.info.run_id
        folder.mkdir(exist_ok=True)
        with contextlib.redirect_stderr(io.StringIO()):  # MLflow's progress bar of every download
            return Path(self.client.download_artifacts(run.info.run_id, path, str(folder))).read_bytes()

    def artifact_json(self, run, path: str):
        """The run's JSON artifact ``path``, None when it has none."""
        data = self.artifact(run, path)
        return None if data is None else json.loads(data)

    def attach(self, run, path, name: str = REPORT_ARTIFACT) -> None:
        """Log the file ``path`` as the artifact ``name`` of ``run`` (replacing one of that name)."""
        copy = Path(self._folder.name) / name
        copy.write_bytes(Path(path).read_bytes())
        self.client.log_artifact(run.info.run_id, str(copy))

    # ------------------------------------------------------------------ studies and the registry

    def study(self, name: str):
        """The Optuna study ``name`` of the storage, or None (no such study, no storage file)."""
        if name not in self._studies:
            path = sqlite_path(self.sources.storage)
            study = None
            if path is None or path.is_file():
                try:
                    study = optuna.load_study(study_name=name, storage=self.sources.storage)
                except KeyError:  # Optuna's answer for a storage without that study
                    study = None
            self._studies[name] = study
        return self._studies[name]

    def champion(self):
        """The model version the alias points to, or None."""
        return self.version_by_alias(self.sources.alias)

    def version_by_alias(self, alias: str):
        if self.client is None:
            return None
        try:
            return self.client.get_model_version_by_alias(self.sources.registered_name, alias)
        except MlflowException:
            return None

    def version(self, number):
        """Version ``number`` of the registered model, or None."""
        if self.client is None:
            return None
        try:
            return self.client.get_model_version(self.sources.registered_name, str(number))
        except MlflowException:
            return None

    def versions(self) -> list:
        """Every version of the registered model, the newest first."""
        if self.client is None:
            return []
        found = self.client.search_model_versions(f"name = '{self.sources.registered_name}'")
        return sorted(found, key=lambda v: -int(v.version))
