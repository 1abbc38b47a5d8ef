"""One study run as a tree of MLflow runs::

    study run    the config as params; tags study, kind, sampler, git_commit; the summary
    |            table as its description; trials.csv and the study's figures; tracking_seconds
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
exception. The final model's run is :mod:`.registry`'s.

Every run has MLflow's source and user tags, and the study, trial and seed
runs the training and validation sets as dataset inputs (:mod:`.datasets`;
under the ``blocks`` replicates a seed run holds its block's sets and a trial
run those of its replicates).
Trial and seed runs are written once their population has trained, with the
times of that training: a seed run starts and ends with its block, a trial
run spans the blocks of its replicates, and every point of a curve carries
the time training reached it, so that the UI's durations and time axes are
those of the training.

Each run is written with one ``log_batch`` and one ``log_artifacts`` call; a
thread draws the confusion matrices and summary figures, which
:meth:`StudyRun.finish_runs` uploads before the runs end. Matplotlib's state is shared by
threads, so the study draws nothing itself while that thread has drawings in hand.
"""
from __future__ import annotations

import contextlib
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NOTE

from .. import plots
from ..config import WORKER_TIMING, WorkerTiming
from ..outages import PatientClient
from ..confusion import CONFUSION_DPI, ConfusionFigure, seed_files
from .artifacts import FIGURE_DPI, scalar_metrics, timed_curves, write_csv
from .client import (HEARTBEAT_TAG, beat, create_run_info, end_run, error_status, log_artifacts, log_batch,
                     now_ms, run_heartbeat, to_ms)
from .datasets import DataInputs, log_inputs
from .recovery import trial_runs
from .store import EXPERIMENT, experiment_id, git_commit

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
    eval_times: tuple = ()  # (P,) s since the epoch when training reached each point of ``history``
    started: float | None = None  # s since the epoch: when its population began training (None: unknown)
    ended: float | None = None  # ... and when it was done
    inputs: DataInputs | None = None  # the images of its block, when they are its own (None: the study's)


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
    started: float | None = None  # s since the epoch: when its first replicate began training (None: unknown)
    ended: float | None = None  # ... and when its last one was done
    searched: dict = field(default_factory=dict)  # the point's searched dimensions besides lam, e.g. {"n_s_epochs": 4}

    @property
    def run_name(self) -> str:
        """e.g. ``trial-3 lam=0.0011 n_s_epochs=4``."""
        return " ".join([f"trial-{self.number} lam={self.lam:.3g}"] + [f"{k}={v}" for k, v in self.searched.items()])


class StudyRun:
    """The parent run of one study run, as a context manager.

    The run ends FINISHED when the block ends, KILLED on ``KeyboardInterrupt``
    and FAILED on any other exception; its metric ``tracking_seconds`` is the
    time spent in this object's methods. While it runs, a thread refreshes its
    ``clrsearch.heartbeat`` tag every ``heartbeat_seconds``.

    Parameters
    ----------
    experiment : str, experiment name, created when missing
    run_name : str
    params : dict, flat, the whole config (values are logged as str)
    tags : dict, e.g. study, kind ("coarse" or "fine"), sampler; ``git_commit``
        is added unless given
    run_id : str, optional, an existing study run to log trials under (the
        helper workers of ``--workers N``); it is neither created nor ended here
    inputs : tracking.DataInputs, optional, the study's data: the training and
        validation sets become dataset inputs of the study run and of every
        trial and seed run
    timing : config.WorkerTiming, how often the study run's heartbeat tag is refreshed (``heartbeat_seconds``)
        and how long a tracking server out of reach is waited for (``outage_seconds``, see
        :class:`clrsearch.outages.PatientClient`)

    Attributes
    ----------
    run_id, experiment_id : str, once entered
    tracking_seconds : float, time spent in MLflow calls and rendering so far
    """

    def __init__(self, experiment: str = EXPERIMENT, run_name: str | None = None,
                 params: dict | None = None, tags: dict | None = None, run_id: str | None = None,
                 inputs: DataInputs | None = None, timing: WorkerTiming = WORKER_TIMING):
        self.experiment = experiment
        self._drawing = None  # TemporaryDirectory of the files drawn for the runs (matrices, summary figures)
        self._drawn = {}  # (trial number, seed) -> Future of the folder drawn ahead
        self.inputs = inputs
        self.timing = timing
        self.run_name = run_name
        self.params = dict(params or {})
        self.tags = dict(tags or {})
        self.run_id = run_id
        self._info = None  # the study run's RunInfo, once entered
        self.experiment_id = None
        self.tracking_seconds = 0.0
        self._attached = run_id is not None
        self._client = None
        self._heartbeat = None
        self._confusion = ConfusionFigure(CONFUSION_DPI)  # drawn on by the drawing thread only
        self._drawer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clrsearch-drawing")
        self._trial_runs = {}  # trial number -> run id
        self._unfinished = []  # of _Unfinished: runs written but for files being drawn, in the order they end
        self._summaries = 0  # log_summary calls so far: each writes a folder of its own

    def __enter__(self):
        with self._timed():
            self._client = PatientClient(MlflowClient(), self.timing.outage_seconds)
            if self._attached:
                self._info = self._client.get_run(self.run_id).info
                self.experiment_id = self._info.experiment_id
                return self
            self.experiment_id = experiment_id(self._client, self.experiment)
            tags = {"level": "study", **self.tags, HEARTBEAT_TAG: beat()}
            if "git_commit" not in tags:
                tags["git_commit"] = git_commit()
            self._info = create_run_info(self._client, self.experiment_id, self.run_name, tags)
            self.run_id = self._info.run_id
            try:
                log_batch(self._client, self.run_id, params=self.params)
                log_inputs(self._client, self.run_id, self.inputs)
            except BaseException as error:
                end_run(self._client, self.run_id, error_status(error), quiet=True)
                raise
            self._heartbeat = run_heartbeat(self.run_id, self.timing.heartbeat_seconds)
        return self

    def __exit__(self, exc_type, exc, tb):
        failed = None  # an error finishing the runs, raised once the study run has ended as it ends it
        try:
            self.finish_runs()
        except BaseException as error:
            failed = error
        finally:
            self._drawer.shutdown(wait=True, cancel_futures=True)
            if self._drawing is not None:
                self._drawing.cleanup()
        exc = exc or failed
        if not self._attached:
            self._heartbeat.stop()
            status = "FINISHED" if exc is None else error_status(exc)
            if status == "FINISHED":
                with contextlib.suppress(MlflowException):
                    log_batch(self._client, self.run_id,
                               metrics=scalar_metrics({"tracking_seconds": self.tracking_seconds}, now_ms()))
            end_run(self._client, self.run_id, status, quiet=exc is not None)
        if failed is not None and exc is failed:
            raise failed
        return False

    def draw_ahead(self, trials: list[TrialRecord]) -> None:
        """Start drawing the confusion matrices of ``trials``, for :meth:`log_trials` to pick up: they are
        drawn while the study records the trials."""
        for trial in trials:
            for seed in trial.seeds:
                key = (trial.number, seed.seed)
                if trial.number not in self._trial_runs and key not in self._drawn:
                    self._drawn[key] = self._draw(trial, seed)

    def log_trials(self, trials: list[TrialRecord]) -> dict[int, str]:
        """Create one run per trial, nested under this run, and one per seed under it.

        A trial this study run has logged before is not logged again. The seed
        runs get their confusion matrices, and the runs end, at the next
        :meth:`finish_runs`.

        Returns
        -------
        dict trial number -> trial run id, for every trial given
        """
        new = [trial for trial in trials if trial.number not in self._trial_runs]
        with self._timed():
            # The confusion matrices are drawn by the drawing thread while this one writes the runs.
            files = [[self._drawn.pop((trial.number, seed.seed), None) or self._draw(trial, seed)
                      for seed in trial.seeds] for trial in new]
            for trial, trial_files in zip(new, files):
                self._trial_runs[trial.number] = self._log_trial(trial, trial_files)
        return {trial.number: self._trial_runs[trial.number] for trial in trials}

    def finish_runs(self) -> None:
        """Give the runs logged so far the files drawn for them (the seed runs' confusion matrices, the study
        run's summary figures), waiting for the drawings, and end the trial and seed runs with their own
        status; should that fail, the trial and seed runs left end as the error ends them."""
        with self._timed():
            try:
                while self._unfinished:
                    run = self._unfinished[0]
                    for drawing in run.drawings:
                        drawing.result()
                    if run.folder is not None:
                        self._client.ride_out(lambda: log_artifacts(self._client, run.info, run.folder))
                    if run.status is not None:
                        end_run(self._client, run.info.run_id, run.status, end_time=run.end_time)
                    self._unfinished.pop(0)
            except BaseException as error:
                self._end_unfinished(error_status(error))
                raise

    def _end_unfinished(self, status: str, since: int = 0) -> None:
        """End with ``status``, without their files, the unfinished runs from the ``since``-th on."""
        for run in self._unfinished[since:]:
            if run.status is not None:
                end_run(self._client, run.info.run_id, status, quiet=True)
        del self._unfinished[since:]

    def mark_trials(self, verdicts: dict) -> None:
        """Log each trial's comparison with the best on its trial run: metrics ``delta_vs_best``, ``p_vs_best``
        and ``p_best``, tags ``verdict`` and ``best_set``; ``verdicts`` maps trial number (str or int) -> those
        values (``p_best`` and ``best_set`` optional)."""
        with self._timed():
            runs = trial_runs(self.experiment, self.tags.get("study_name", ""))
            now = now_ms()
            for number, v in verdicts.items():
                run_id = runs.get(int(number))
                if run_id is None:
                    continue
                tags = {"verdict": v["verdict"], **({"best_set": str(v["best_set"])} if "best_set" in v else {})}
                log_batch(self._client, run_id, tags=tags,
                          metrics=scalar_metrics({"delta_vs_best": v["delta_vs_best"], "p_vs_best": v["p_vs_best"],
                                                  "p_best": v.get("p_best")}, now))

    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        """Scalar metrics of the study run (NaN and None left out)."""
        with self._timed():
            log_batch(self._client, self.run_id, metrics=scalar_metrics(metrics, now_ms(), step))

    def log_summary(self, table_rows: list[dict], figures: dict | None = None, description: str | None = None) -> None:
        """``trials.csv`` (one row per dict, columns in first-seen order), ``<name>.png`` per figure, and
        ``description`` (Markdown) as the run's description, ``mlflow.note.content``, shown atop its page.

        The figures are saved by the drawing thread, and the files uploaded at
        the next :meth:`finish_runs`; the caller leaves them to it.
        """
        with self._timed():
            self._summaries += 1
            folder = self._folder() / f"summary-{self._summaries}"
            folder.mkdir()
            write_csv(folder / "trials.csv", table_rows)
            drawings = [self._drawer.submit(fig.savefig, folder / f"{stem}.png", dpi=FIGURE_DPI)
                        for stem, fig in (figures or {}).items()]
            if description is not None:
                log_batch(self._client, self.run_id, tags={MLFLOW_RUN_NOTE: description})
            self._unfinished.append(_Unfinished(self._info, None, None, folder, tuple(drawings)))

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
        run = create_run_info(client, self.experiment_id, trial.run_name, tags, start_time=to_ms(trial.started))
        unfinished = len(self._unfinished)
        try:
            values = {"mean_val_accuracy": trial.mean, "std_val_accuracy": trial.std}
            values.update({f"val_accuracy_seed_{seed}": a for seed, a in trial.seed_accuracies.items()})
            values.update({f"val_accuracy_seed_{s.seed}": s.val_accuracy for s in trial.seeds})
            log_batch(client, run.run_id, metrics=scalar_metrics(values, to_ms(trial.ended) or now_ms()),
                       params={"lam": trial.lam, **trial.params})
            log_inputs(client, run.run_id, [s.inputs for s in trial.seeds if s.inputs is not None] or self.inputs)
            for seed, files in zip(trial.seeds, seed_files):
                self._log_seed(trial, seed, run.run_id, files)
        except BaseException as error:  # the trial's runs end now, as the error ends them
            self._end_unfinished(error_status(error), since=unfinished)
            end_run(client, run.run_id, error_status(error), quiet=True)
            raise
        self._unfinished.append(_Unfinished(run, TRIAL_STATUS.get(trial.state, "FAILED"), to_ms(trial.ended)))
        return run.run_id

    def _log_seed(self, trial: TrialRecord, seed: SeedRecord, trial_run_id: str, files) -> None:
        """The seed's run, but for its artifacts; ``files`` is the future of the folder holding them."""
        client = self._client
        tags = {"level": "seed", "trial": trial.number, "lam": trial.lam, "seed": seed.seed, "status": seed.status,
                MLFLOW_PARENT_RUN_ID: trial_run_id}
        run = create_run_info(client, self.experiment_id, f"seed-{seed.seed}", tags, start_time=to_ms(seed.started))
        try:
            metrics = timed_curves(seed.history, seed.member, seed.eval_times, seed.started, seed.ended)
            metrics += scalar_metrics({"final_val_accuracy": seed.val_accuracy}, to_ms(seed.ended) or now_ms())
            log_batch(client, run.run_id, metrics=metrics)
            log_inputs(client, run.run_id, seed.inputs or self.inputs)
        except BaseException as error:
            end_run(client, run.run_id, error_status(error), quiet=True)
            raise
        self._unfinished.append(_Unfinished(run, SEED_STATUS.get(seed.status, "FAILED"), to_ms(seed.ended),
                                            self._seed_folder(trial, seed), (files,)))

    def _seed_folder(self, trial: TrialRecord, seed: SeedRecord) -> Path:
        return self._folder() / f"trial-{trial.number}-seed-{seed.seed}"

    def _folder(self) -> Path:
        """The folder of the files drawn for this study run's runs, made on first use."""
        if self._drawing is None:
            self._drawing = tempfile.TemporaryDirectory(prefix="clrsearch-")
        return Path(self._drawing.name)

    def _draw(self, trial: TrialRecord, seed: SeedRecord):
        """A Future of a new folder holding the seed's validation confusion matrix as PNG and JSON."""
        folder = self._seed_folder(trial, seed)
        return self._drawer.submit(seed_files, self._confusion, folder, seed.val_true, seed.val_pred,
                                   seed.class_names, f"validation, seed {seed.seed}")


@dataclass
class _Unfinished:
    """A run written but for the files of ``folder`` being drawn: they become its artifacts once the
    ``drawings`` are done, and the run ends with ``status`` at ``end_time`` (ms), in ``finish_runs``."""

    info: object  # mlflow.entities.RunInfo
    status: str | None  # None: the run goes on (the study run)
    end_time: int | None
    folder: Path | None = None
    drawings: tuple = ()  # Futures of the files of ``folder``


def latest_study_run(experiment_id: str, client: MlflowClient | None = None):
    """The FINISHED study run (tag ``level`` = ``study``) of experiment ``experiment_id`` that started last,
    or None; ``client`` reads the store, ``MlflowClient()`` by default."""
    client = client or MlflowClient()
    studies = client.search_runs([experiment_id], "tags.level = 'study' and attributes.status = 'FINISHED'",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    return studies[0] if studies else None


def child_runs(experiment_id: str, parent_run_id: str, level: str, client: MlflowClient | None = None, *,
               page_size: int = 1000) -> list:
    """Every active run directly under run ``parent_run_id`` whose tag ``level`` is ``level`` (``trial`` under a
    study run, ``seed`` under a trial run, ``final``: the final model's), in MLflow's order, ``page_size`` runs
    per search call (MLflow allows 50 000); ``client`` reads the store, ``MlflowClient()`` by default."""
    client = client or MlflowClient()
    quote = '"' if "'" in level else "'"
    filter_string = f"tags.{MLFLOW_PARENT_RUN_ID} = '{parent_run_id}' and tags.level = {quote}{level}{quote}"
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=page_size, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def log_range_test(result, test, data, train_config, experiment: str = EXPERIMENT,
                   inputs: DataInputs | None = None) -> str:
    """One run holding an LR range test's settings, suggestion, curve and plot (``lr_range.png``); returns its id.

    Parameters
    ----------
    result : clrsearch.nn.lrrange.RangeResult
    test : clrsearch.config.RangeTest; data : DataConfig; train_config : TrainConfig
    inputs : DataInputs, optional, the data it ran on: its training and validation sets are logged
    """
    params = {**{f"range.{k}": v for k, v in test.__dict__.items()}, "data.split": data.split,
              "train.n_batch": train_config.n_batch, "train.hidden": train_config.hidden}
    rows = [{"eta": float(e), "val_accuracy": float(a), "val_loss": float(l)}
            for e, a, l in zip(result.etas, result.accuracy, result.loss)]
    with StudyRun(experiment, "lr-range-test", params, {"kind": "lr_range_test", "git_commit": git_commit()},
                  inputs=inputs) as run:
        run.log_metrics({"suggested_eta_min": result.eta_min, "suggested_eta_max": result.eta_max})
        run.log_summary(rows, {"lr_range": plots.lr_range_result(result)})
        return run.run_id
