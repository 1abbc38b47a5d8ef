"""Every MLflow call of clrsearch: runs, metrics, artifacts and the model registry.

Runs go where MLflow puts them by default: ``$MLFLOW_TRACKING_URI`` when set,
else ``sqlite:///mlflow.db`` in the working directory with artifacts under
``mlruns/``. Experiment ``clrsearch`` unless a caller names another. One study
run is a tree of runs::

    study run    the config as params; tags study, kind, sampler, git_commit;
    |            trials.csv and the study's figures; tracking_seconds
    +- trial run     lam and the protocol as params; mean_val_accuracy,
    |  |             std_val_accuracy, val_accuracy_seed_<seed>; tags study_name, trial, state,
    |  |             reason (a trial whose runs died with their process is logged again
    |  |             from the study, without seed runs, tagged curves=lost)
    |  +- seed run       curves by update step (train/val loss, cost, accuracy,
    |                    epoch), eta, final_val_accuracy; the validation confusion
    |                    matrix as confusion_val.png and confusion_val.json
    ...

Run status says how a run ended: FINISHED, KILLED for a pruned trial or a
stopped seed (and for Ctrl-C), FAILED for a failed trial, a diverged seed or an
exception. The final model run (`log_final_model`) holds the curves,
test_accuracy and final_val_accuracy, the test confusion matrix
(confusion_test.png, .json) and the model, registered as ``clrsearch-cifar10``
with the alias ``champion`` moved to the new version.

Every run carries the tag ``clrsearch.worker`` (host:pid:start of the process
that created it) and a study run the tag ``clrsearch.heartbeat``, refreshed
while it runs. ``end_dead_runs`` ends as KILLED the runs a killed process left
RUNNING: at once when the process was on this host, after the grace period
without a heartbeat otherwise.

Each run is written with one ``MlflowClient.log_batch`` and one
``log_artifacts`` call, and the confusion matrices of a study are drawn on one
reused figure, so that tracking costs a few percent of a study's time.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from matplotlib.backends.backend_agg import FigureCanvasAgg
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from . import plots, workers
from .errors import UsageError

EXPERIMENT = "clrsearch"
REGISTERED_NAME = "clrsearch-cifar10"
ALIAS = "champion"
ETA_POINTS = 100  # at most this many regularly spaced eta values per run, plus the turning points
FIGURE_DPI = 100  # study figures and the test confusion matrix
CONFUSION_DPI = 72  # the per-seed validation confusion matrices: 648 x 576 pixels
MODEL_NAME = "model"  # name of the logged model within its run

WORKER_TAG = "clrsearch.worker"  # host:pid:start of the process that created a run
HEARTBEAT_TAG = "clrsearch.heartbeat"  # unix time, refreshed while a study run runs
CHILD_RUN_SECONDS = 600  # a trial, seed or final run of another host still RUNNING after this is dead

# How a trial's Optuna state and a seed's training status end their runs.
TRIAL_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
SEED_STATUS = {"finished": "FINISHED", "stopped": "KILLED", "diverged": "FAILED"}


@dataclass
class SeedRecord:
    """One network of a trial: its curves and its final validation predictions."""

    seed: int
    val_accuracy: float  # final, fraction 0..1 (NaN if diverged)
    history: object  # clrsearch.train.History
    member: int  # column of this seed in history.metrics arrays (P, K)
    val_true: np.ndarray  # (N_val,) int labels
    val_pred: np.ndarray  # (N_val,) int predictions of the final network
    class_names: tuple
    status: str  # "finished" | "diverged" | "stopped"


@dataclass
class TrialRecord:
    """One Optuna trial: a lambda trained from several seeds."""

    number: int  # Optuna trial number
    lam: float
    state: str  # "COMPLETE" | "PRUNED" | "FAIL"
    mean: float  # mean validation accuracy of its seeds (NaN if none)
    std: float
    seeds: list = field(default_factory=list)  # of SeedRecord
    params: dict = field(default_factory=dict)  # protocol params of the trial run
    reason: str = ""  # why pruned or failed
    tags: dict = field(default_factory=dict)  # more tags of the trial run
    seed_accuracies: dict = field(default_factory=dict)  # seed -> final val accuracy, when ``seeds`` is empty


def git_commit() -> str:
    """Short hash of the commit the package is checked out at, or "unknown"."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


class StudyRun:
    """The parent run of one study run, as a context manager.

    The run ends FINISHED when the block ends, KILLED on ``KeyboardInterrupt``
    and FAILED on any other exception; its metric ``tracking_seconds`` is the
    time spent in this object's methods. While it runs, a thread refreshes its
    ``clrsearch.heartbeat`` tag every ``workers.heartbeat_seconds()``.

    Parameters
    ----------
    experiment : str, experiment name, created when missing
    run_name : str
    params : dict, flat, the whole config (values are logged as str)
    tags : dict, e.g. study, kind ("coarse" or "fine"), sampler; ``git_commit``
        is added unless given
    run_id : str, optional, an existing study run to log trials under (the
        helper workers of ``--workers N``); it is neither created nor ended here

    Attributes
    ----------
    run_id, experiment_id : str, once entered
    tracking_seconds : float, time spent in MLflow calls and rendering so far
    """

    def __init__(self, experiment: str = EXPERIMENT, run_name: str | None = None,
                 params: dict | None = None, tags: dict | None = None, run_id: str | None = None):
        self.experiment = experiment
        self.run_name = run_name
        self.params = dict(params or {})
        self.tags = dict(tags or {})
        self.run_id = run_id
        self.experiment_id = None
        self.tracking_seconds = 0.0
        self._attached = run_id is not None
        self._client = None
        self._heartbeat = None
        self._confusion = ConfusionFigure(CONFUSION_DPI)
        self._trial_runs = {}  # trial number -> run id

    def __enter__(self):
        with self._timed():
            self._client = MlflowClient()
            if self._attached:
                self.experiment_id = self._client.get_run(self.run_id).info.experiment_id
                return self
            self.experiment_id = experiment_id(self._client, self.experiment)
            tags = {"level": "study", **self.tags, HEARTBEAT_TAG: _beat()}
            if "git_commit" not in tags:
                tags["git_commit"] = git_commit()
            self.run_id = _create_run(self._client, self.experiment_id, self.run_name, tags)
            try:
                _log_batch(self._client, self.run_id, params=self.params)
            except BaseException as error:
                _end(self._client, self.run_id, _error_status(error), quiet=True)
                raise
            self._heartbeat = _RunHeartbeat(self.run_id)
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._attached:
            return False
        self._heartbeat.stop()
        status = "FINISHED" if exc is None else _error_status(exc)
        if status == "FINISHED":
            with contextlib.suppress(MlflowException):
                _log_batch(self._client, self.run_id,
                           metrics=scalar_metrics({"tracking_seconds": self.tracking_seconds}, _now_ms()))
        _end(self._client, self.run_id, status, quiet=exc is not None)
        return False

    def log_trials(self, trials: list[TrialRecord]) -> dict[int, str]:
        """Create one run per trial, nested under this run, and one per seed under it.

        A trial this study run has logged before is not logged again.

        Returns
        -------
        dict trial number -> trial run id, for every trial given
        """
        new = [trial for trial in trials if trial.number not in self._trial_runs]
        with self._timed(), tempfile.TemporaryDirectory(prefix="clrsearch-") as folder, _one_thread() as painter:
            # A second thread draws the confusion matrices while this one mostly waits for the
            # store to write to disk (each run's writes are a few fsyncs).
            files = [[painter.submit(self._seed_files, Path(folder) / f"trial-{trial.number}-seed-{k}", seed)
                      for k, seed in enumerate(trial.seeds)] for trial in new]
            for trial, seed_files in zip(new, files):
                self._trial_runs[trial.number] = self._log_trial(trial, seed_files)
        return {trial.number: self._trial_runs[trial.number] for trial in trials}

    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        """Scalar metrics of the study run (NaN and None left out)."""
        with self._timed():
            _log_batch(self._client, self.run_id, metrics=scalar_metrics(metrics, _now_ms(), step))

    def log_summary(self, table_rows: list[dict], figures: dict | None = None) -> None:
        """``trials.csv`` (one row per dict, columns in first-seen order) and ``<name>.png`` per figure."""
        with self._timed(), tempfile.TemporaryDirectory(prefix="clrsearch-") as folder:
            write_csv(Path(folder) / "trials.csv", table_rows)
            for stem, fig in (figures or {}).items():
                fig.savefig(Path(folder) / f"{stem}.png", dpi=FIGURE_DPI)
            self._client.log_artifacts(self.run_id, folder)

    def set_tags(self, tags: dict) -> None:
        """Add or overwrite tags of the study run."""
        with self._timed():
            _log_batch(self._client, self.run_id, tags=tags)

    @contextlib.contextmanager
    def _timed(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.tracking_seconds += time.perf_counter() - start

    def _log_trial(self, trial: TrialRecord, seed_files: list) -> str:
        """The trial's run and its seeds' runs; ``seed_files`` holds the futures of their artifact folders."""
        client = self._client
        tags = {"level": "trial", "trial": trial.number, "state": trial.state, MLFLOW_PARENT_RUN_ID: self.run_id,
                **trial.tags}
        if "study_name" in self.tags:
            tags["study_name"] = self.tags["study_name"]
        if trial.reason:
            tags["reason"] = trial.reason
        run_id = _create_run(client, self.experiment_id, f"trial-{trial.number} lam={trial.lam:.3g}", tags)
        with _ended(client, run_id, TRIAL_STATUS.get(trial.state, "FAILED")):
            values = {"mean_val_accuracy": trial.mean, "std_val_accuracy": trial.std}
            values.update({f"val_accuracy_seed_{seed}": a for seed, a in trial.seed_accuracies.items()})
            values.update({f"val_accuracy_seed_{s.seed}": s.val_accuracy for s in trial.seeds})
            _log_batch(client, run_id, metrics=scalar_metrics(values, _now_ms()),
                       params={"lam": trial.lam, **trial.params})
            for seed, files in zip(trial.seeds, seed_files):
                self._log_seed(trial, seed, run_id, files)
        return run_id

    def _log_seed(self, trial: TrialRecord, seed: SeedRecord, trial_run_id: str, files) -> str:
        """The seed's run; ``files`` is the future of the folder holding its artifacts."""
        client = self._client
        tags = {"level": "seed", "trial": trial.number, "lam": trial.lam, "seed": seed.seed, "status": seed.status,
                MLFLOW_PARENT_RUN_ID: trial_run_id}
        run_id = _create_run(client, self.experiment_id, f"seed-{seed.seed}", tags)
        with _ended(client, run_id, SEED_STATUS.get(seed.status, "FAILED")):
            now = _now_ms()
            metrics = curve_metrics(seed.history, seed.member, now) + eta_metrics(seed.history.eta, now)
            metrics += scalar_metrics({"final_val_accuracy": seed.val_accuracy}, now)
            _log_batch(client, run_id, metrics=metrics)
            client.log_artifacts(run_id, str(files.result()))
        return run_id

    def _seed_files(self, folder: Path, seed: SeedRecord) -> Path:
        """Write the seed's validation confusion matrix as PNG and JSON into ``folder``."""
        folder.mkdir()
        if seed.val_pred is not None:
            self._confusion.save(folder / "confusion_val.png", seed.val_true, seed.val_pred, seed.class_names,
                                 title=f"validation, seed {seed.seed}")
            write_json(folder / "confusion_val.json",
                       confusion_report(seed.val_true, seed.val_pred, seed.class_names))
        return folder


def log_final_model(*, experiment: str = EXPERIMENT, run_name: str, params: dict, history, member: int,
                    val_accuracy: float, test_accuracy: float, test_true, test_pred, class_names,
                    networks, normaliser, dtype: str, input_example: np.ndarray,
                    parent_run_id: str | None = None, registered_name: str = REGISTERED_NAME,
                    alias: str = ALIAS, extra_metrics: dict | None = None,
                    figures: dict | None = None) -> tuple[str, str]:
    """The final model's run: curves, accuracies, test confusion matrix, and the registered model.

    Parameters
    ----------
    experiment, run_name : str
    params : dict, flat config of the final training
    history : clrsearch.train.History; member : int, its column to log
    val_accuracy, test_accuracy : float, fractions 0..1
    test_true, test_pred : (N_test,) int labels and predictions
    class_names : sequence of C str
    networks : dict or list of dicts ``W1`` (M, D), ``b1`` (M, 1), ``W2`` (C, M), ``b2`` (C, 1);
        several form an ensemble that averages class probabilities
    normaliser : clrsearch.data.Normaliser of the training split, stored in the model
    dtype : str, precision the networks compute in
    input_example : (n, 3072) uint8, a few raw CIFAR-10 rows
    parent_run_id : str, optional, nest the run under this one
    registered_name, alias : str, the registered model and the alias moved to the new version
    extra_metrics : dict, optional, more scalar metrics; like ``val_accuracy`` (logged as
        ``final_val_accuracy``), one named like a curve gets the prefix ``final_``
    figures : dict name -> Figure, optional, logged as ``<name>.png``

    Returns
    -------
    (run_id, model version) : (str, str)
    """
    from . import model

    networks = [networks] if isinstance(networks, dict) else list(networks)
    classifier = model.Classifier(tuple(networks), normaliser, tuple(class_names), str(dtype))
    client = MlflowClient()
    exp_id = experiment_id(client, experiment)
    tags = {"level": "final", "git_commit": git_commit()}
    if parent_run_id:
        tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    run_id = _create_run(client, exp_id, run_name, tags)
    with _ended(client, run_id, "FINISHED"), tempfile.TemporaryDirectory(prefix="clrsearch-") as folder:
        folder = Path(folder)
        # Logged before the model, so that the logged model carries them too. A final value named
        # like a curve (val_accuracy, train_accuracy, ...) gets the prefix final_: same key, one history.
        extra = {"val_accuracy": val_accuracy, "test_accuracy": test_accuracy, **(extra_metrics or {})}
        summary = {f"final_{key}" if key in history.metrics else key: value for key, value in extra.items()}
        params = {**params, "n_networks": len(networks)}
        _log_batch(client, run_id, metrics=scalar_metrics(summary, _now_ms()), params=params)
        version = _log_model(client, exp_id, run_id, classifier, input_example, registered_name, params,
                             folder / "model")
        client.set_registered_model_alias(registered_name, alias, version)

        now = _now_ms()
        _log_batch(client, run_id, metrics=curve_metrics(history, member, now) + eta_metrics(history.eta, now),
                   tags={"registered_model": f"{registered_name}/{version}"})
        artifacts = folder / "artifacts"
        artifacts.mkdir()
        cm = plots.confusion_matrix(test_true, test_pred, class_names, title="test set")
        cm.savefig(artifacts / "confusion_test.png", dpi=FIGURE_DPI)
        write_json(artifacts / "confusion_test.json", confusion_report(test_true, test_pred, class_names))
        for stem, fig in (figures or {}).items():
            fig.savefig(artifacts / f"{stem}.png", dpi=FIGURE_DPI)
        client.log_artifacts(run_id, str(artifacts))
    return run_id, version


def _log_model(client, exp_id, run_id, classifier, input_example, registered_name, params, folder: Path) -> str:
    """Log ``classifier`` as a pyfunc model of the run and register it; returns the new version."""
    import mlflow
    import pandas as pd
    from mlflow.models import Model, infer_signature

    from . import __version__, model

    folder.mkdir()
    weights = classifier.save(folder / "weights.npz")
    code = model.write_model_code(folder)
    example = model.raw_rows(input_example)
    # Column schema of doubles: uint8 and float rows, arrays and DataFrames all pass it.
    signature = infer_signature(pd.DataFrame(example.astype(np.float64)), classifier.predict(example))
    requirements = [f"clrsearch=={__version__}", f"mlflow=={mlflow.__version__}",
                    f"numpy=={np.__version__}", f"pandas=={pd.__version__}"]
    # Created here so that it belongs to the run's experiment, not to the default one.
    logged = client.create_logged_model(exp_id, name=MODEL_NAME, source_run_id=run_id,
                                        params={key: str(value) for key, value in params.items()})
    info = Model.log(artifact_path=None, name=MODEL_NAME, flavor=mlflow.pyfunc, run_id=run_id,
                     model_id=logged.model_id, python_model=str(code),
                     artifacts={model.WEIGHTS_ARTIFACT: str(weights)}, signature=signature,
                     input_example=pd.DataFrame(example), pip_requirements=requirements,
                     registered_model_name=registered_name)
    return str(info.registered_model_version)


def load_model(model_uri: str):
    """The pyfunc model at ``model_uri``.

    Raises
    ------
    UsageError
        No such model, alias or version, or no MLflow store where MLflow looks.
    """
    import mlflow
    import mlflow.pyfunc

    hint = "train and register one with python -m clrsearch.fine first"
    store_uri = mlflow.get_registry_uri() if model_uri.startswith("models:") else mlflow.get_tracking_uri()
    if store_uri.startswith("sqlite:///") and not Path(store_uri.removeprefix("sqlite:///")).is_file():
        # MLflow would create an empty store there; say where it looked instead.
        raise UsageError(f"no MLflow store at {store_uri.removeprefix('sqlite:///')} to load {model_uri} from; "
                         f"{hint}, or point MLFLOW_TRACKING_URI at the store that has it")
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(f"cannot load model {model_uri} ({reason}); {hint}") from error


def run_metrics(run_id: str | None) -> dict:
    """Latest value of every metric of the run; empty when there is no such run."""
    if not run_id:
        return {}
    try:
        return dict(MlflowClient().get_run(run_id).data.metrics)
    except MlflowException:
        return {}


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
        raise UsageError(f"cannot use the MLflow tracking store {_redact(uri)} ({reason}); point "
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


def end_dead_runs(experiment: str = EXPERIMENT) -> int:
    """End as KILLED the runs of ``experiment`` left RUNNING by processes that died; returns how many.

    A run's process is dead when it was on this host and is gone, or when it
    was elsewhere and the run's heartbeat is older than
    ``workers.grace_seconds()`` (a run without heartbeat, i.e. a trial, seed
    or final run, after ``CHILD_RUN_SECONDS``). Runs without the worker tag
    are left alone.
    """
    from mlflow.entities import ViewType

    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return 0
    grace, now = workers.grace_seconds(), time.time()
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
        alive = workers.alive(worker)
        if alive is None:
            beat = run.data.tags.get(HEARTBEAT_TAG)
            last = float(beat) if beat else run.info.start_time / 1000
            alive = now - last <= (grace if beat else max(grace, CHILD_RUN_SECONDS))
        if not alive:
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
    from mlflow.entities import ViewType

    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return set()
    quote = '"' if "'" in study_name else "'"
    trial_runs = f"tags.level = 'trial' and tags.study_name = {quote}{study_name}{quote}"
    numbers, token = set(), None
    while True:
        page = client.search_runs([found.experiment_id], filter_string=trial_runs,
                                  run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
        numbers.update(int(r.data.tags["trial"]) for r in page if "clrsearch.ended" not in r.data.tags)
        token = page.token
        if not token:
            return numbers


def _redact(uri: str) -> str:
    """A URI without its password."""
    if "://" in uri and "@" in uri:
        scheme, rest = uri.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}@{host}"
    return uri


def curve_metrics(history, member: int, timestamp: int) -> list[Metric]:
    """The learning curves of one member, one metric per name and evaluation point, step = update step.

    Points after the member stopped (all its values NaN) are left out; ``epoch``
    maps each step to epochs.
    """
    metrics = []
    values = {name: np.asarray(v, dtype=float)[:, member] for name, v in history.metrics.items()}  # (P,) each
    for p, step in enumerate(np.asarray(history.steps)):
        point = {name: v[p] for name, v in values.items()}
        if all(math.isnan(v) for v in point.values()):
            continue
        point["epoch"] = float(history.epochs[p])
        metrics += [Metric(name, float(v), timestamp, int(step)) for name, v in point.items()]
    return metrics


def eta_metrics(eta, timestamp: int, max_points: int = ETA_POINTS) -> list[Metric]:
    """``eta`` of every update step, thinned to about ``max_points`` regularly spaced steps.

    The steps where the schedule turns (its maxima and minima) are always kept,
    so that the logged curve reaches the true bounds.
    """
    eta = np.asarray(eta, dtype=float)  # (T,)
    steps = eta_steps(eta, max_points)
    return [Metric("eta", float(eta[t]), timestamp, int(t)) for t in steps]


def eta_steps(eta, max_points: int = ETA_POINTS) -> np.ndarray:
    """Sorted update steps at which ``eta`` (T,) is logged."""
    n = eta.size
    if n <= max_points:
        return np.arange(n)
    stride = math.ceil(n / max_points)
    slope = np.sign(np.diff(eta))  # (T-1,)
    turns = np.flatnonzero(slope[1:] != slope[:-1]) + 1  # steps where eta stops rising or falling
    if turns.size > max_points:
        turns = turns[:0]
    return np.unique(np.concatenate([np.arange(0, n, stride), turns, [n - 1]]))


def confusion_report(y_true, y_pred, class_names) -> dict:
    """Counts (rows true class, columns predicted class), class names and accuracy, as JSON-ready values."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    c = len(class_names)
    counts = np.bincount(c * y_true + y_pred, minlength=c * c).reshape(c, c)  # (C, C)
    n = int(counts.sum())
    return {
        "class_names": [str(name) for name in class_names],
        "confusion_matrix": counts.tolist(),
        "accuracy": float(np.trace(counts) / n) if n else float("nan"),
        "n_images": n,
        "rows": "true class",
        "columns": "predicted class",
    }


class ConfusionFigure:
    """PNG files of many confusion matrices, drawn fast on one reused figure.

    ``plots.confusion_matrix`` builds and lays out a figure in about 0.25 s, and
    a study logs one matrix per seed. Here the first matrix is drawn by it; the
    layout is then frozen and what does not depend on the counts (tick labels,
    axis labels) is kept as a background image. A later matrix with the same
    class names and as many digits in its largest count (so that the colour-bar
    labels still fit) only updates the cells, their labels, the colour scale and
    the title the way ``plots.confusion_matrix`` sets them, and redraws those:
    about 0.08 s at 72 dpi, most of it spent on the C x C cell labels. Should
    the background hold anything over the cells (a style with a grid or inner
    ticks), the whole figure is redrawn instead.
    """

    def __init__(self, dpi: float = CONFUSION_DPI):
        self.dpi = dpi
        self.figure = None
        self._key = None
        self._canvas = None
        self._background = None  # None: redraw the whole figure
        self._dynamic = []  # artists redrawn over the background, in drawing order

    def draw(self, y_true, y_pred, class_names, title: str) -> np.ndarray:
        """RGBA pixels (H, W, 4) uint8 of the matrix drawn with ``title``."""
        counts = np.asarray(confusion_report(y_true, y_pred, class_names)["confusion_matrix"])  # (C, C)
        key = (tuple(class_names), len(str(counts.max())))
        if key != self._key:
            self._start(y_true, y_pred, class_names, title)
            self._key = key
        else:
            self._update(counts, title)
        if self._background is None:
            self._canvas.draw()
        else:
            self._canvas.restore_region(self._background)
            for artist in self._dynamic:
                self.figure.draw_artist(artist)
        return np.asarray(self._canvas.buffer_rgba())

    def save(self, path, y_true, y_pred, class_names, title: str) -> Path:
        """Draw the matrix and write it as a PNG file."""
        pixels = self.draw(y_true, y_pred, class_names, title)
        Image.fromarray(pixels).save(path, format="png", compress_level=1)  # 15% larger, twice as fast as 6
        return Path(path)

    def _start(self, y_true, y_pred, class_names, title):
        self.figure = plots.confusion_matrix(y_true, y_pred, class_names, title=title)
        self.figure.set_dpi(self.dpi)
        self._canvas = FigureCanvasAgg(self.figure)
        self._canvas.draw()  # lays the figure out
        self.figure.set_layout_engine("none")
        ax, colorbar_ax = self.figure.axes
        # The spines are redrawn as the cells, drawn after the background, cover half of them.
        self._dynamic = [*ax.images, *ax.spines.values(), *ax.texts, ax.title, colorbar_ax]
        for artist in self._dynamic:
            artist.set_animated(True)
        self._canvas.draw()  # everything but the animated artists
        box = ax.get_window_extent()
        height = self._canvas.get_width_height()[1]
        inside = np.asarray(self._canvas.buffer_rgba())[
            int(height - box.y1) + 2:int(height - box.y0) - 2, int(box.x0) + 2:int(box.x1) - 2]  # (h, w, 4)
        if np.all(inside == inside[:1, :1]):
            self._background = self._canvas.copy_from_bbox(self.figure.bbox)
        else:
            for artist in self._dynamic:
                artist.set_animated(False)
            self._background = None

    def _update(self, counts, title):
        """Set the cells, labels, colour scale and title as plots.confusion_matrix does."""
        ax = self.figure.axes[0]
        image = ax.images[0]
        image.set_data(counts)
        image.set_clim(0, max(counts.max(), 1))
        dark = counts > 0.5 * counts.max()  # white text where the cell is dark
        for text, count, is_dark in zip(ax.texts, counts.ravel(), dark.ravel()):
            text.set_text(str(count))
            text.set_color("white" if is_dark else "black")
        accuracy = 100.0 * np.trace(counts) / max(counts.sum(), 1)
        ax.set_title(f"{title}: accuracy {accuracy:.2f}%")


def write_csv(path, rows: list[dict]) -> Path:
    """Rows as CSV with a header of all keys in first-seen order."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def write_json(path, obj) -> Path:
    """``obj`` as JSON; NaN becomes null."""
    Path(path).write_text(json.dumps(_json_safe(obj), indent=1))
    return Path(path)


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {key: _json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(value) for value in obj]
    return obj


def _create_run(client, exp_id, run_name, tags) -> str:
    tags = {WORKER_TAG: workers.identity(), **tags}
    run = client.create_run(exp_id, run_name=run_name, tags={k: str(v) for k, v in tags.items()})
    return run.info.run_id


def _beat() -> str:
    return f"{time.time():.0f}"


class _RunHeartbeat:
    """Refreshes a run's heartbeat tag in a background thread until ``stop``."""

    def __init__(self, run_id: str):
        self._run_id = run_id
        self._stop = threading.Event()
        self._seconds = workers.heartbeat_seconds()
        self._thread = threading.Thread(target=self._run, name="clrsearch-run-heartbeat", daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()

    def _run(self):
        client = MlflowClient()
        while not self._stop.wait(self._seconds):
            try:
                client.set_tag(self._run_id, HEARTBEAT_TAG, _beat())
            except Exception:  # a missed beat is retried at the next interval
                pass


def scalar_metrics(values: dict, timestamp: int, step: int = 0) -> list[Metric]:
    """One metric per name at ``step``; values that are None or NaN (no such value) are left out."""
    return [Metric(key, float(value), timestamp, step) for key, value in values.items()
            if value is not None and not math.isnan(value)]


def _log_batch(client, run_id, metrics=(), params=None, tags=None):
    """One ``log_batch`` call (MLflow splits it when it exceeds the batch limits)."""
    client.log_batch(run_id,
                     metrics=metrics,
                     params=[Param(key, str(value)) for key, value in (params or {}).items()],
                     tags=[RunTag(key, str(value)) for key, value in (tags or {}).items()])


@contextlib.contextmanager
def _one_thread():
    """A worker thread for the block; jobs not started when the block ends are dropped."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clrsearch-tracking")
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _ended(client, run_id, status: str):
    """End the run when the block ends: with ``status``, or KILLED / FAILED when it raises."""
    try:
        yield
    except BaseException as error:
        _end(client, run_id, _error_status(error), quiet=True)
        raise
    _end(client, run_id, status)


def _end(client, run_id, status: str, quiet: bool = False):
    """Terminate the run; ``quiet`` keeps an MLflow error from hiding the exception being raised."""
    try:
        client.set_terminated(run_id, status)
    except MlflowException:
        if not quiet:
            raise


def _error_status(error: BaseException) -> str:
    """How a run ends when ``error`` leaves its block: Ctrl-C (or exit status 130) KILLED, exit 0 FINISHED."""
    if isinstance(error, KeyboardInterrupt):
        return "KILLED"
    if isinstance(error, SystemExit):
        if error.code in (0, None):
            return "FINISHED"
        if error.code == 128 + signal.SIGINT:
            return "KILLED"
    return "FAILED"


def _now_ms() -> int:
    return int(time.time() * 1000)

