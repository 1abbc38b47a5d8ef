"""The runs of the single commands: one network of a SPEC experiment (``train``) and the gradient check.

    train run       tags level=experiment, preset; the experiment as params; train_accuracy, val_accuracy,
                    test_accuracy; the curves by update step and eta; the command's figures (learning_curves,
                    eta, confusion_test, class_distribution .png), confusion_test.json and class_counts.json
    gradcheck run   tags level=gradcheck, passed; seed, lam, h as params; per scenario and parameter the
                    metrics scenario_<s>/<param>/<column>; gradcheck.json, the whole result

``python -m clrsearch.report`` reads them back.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.tracking import MlflowClient

from .artifacts import scalar_metrics, timed_curves, write_json
from .client import create_run, ended, log_batch, now_ms, to_ms
from .datasets import TESTING, TRAINING, VALIDATION, DataInputs, log_inputs
from .store import EXPERIMENT, experiment_id, git_commit

EXPERIMENT_LEVEL = "experiment"  # tag level of a train run
GRADCHECK_LEVEL = "gradcheck"  # tag level of a gradient-check run
CONFUSION_TEST_JSON = "confusion_test.json"
CLASS_COUNTS_JSON = "class_counts.json"  # {"class_names": [...], "<split>": [count per class], ...}
GRADCHECK_JSON = "gradcheck.json"  # {"seed": s, "passed": bool, "scenarios": {"1": run_check's result, ...}}
GRADCHECK_COLUMNS = ("pct_abs_below", "max_abs", "pct_rel_below", "max_rel")
TRAIN_STATUS = {"finished": "FINISHED", "stopped": "KILLED", "diverged": "FAILED"}


@dataclass
class ExperimentRun:
    """What a train run holds.

    preset : str; params : dict, flat; history : clrsearch.nn.trainer.History of one member;
    accuracies : dict ``train_accuracy``, ``val_accuracy``, ``test_accuracy`` (fractions 0..1);
    status : ``finished``, ``stopped`` or ``diverged``; pictures : list of PNG paths;
    documents : dict file name -> JSON-ready object; inputs : DataInputs, optional;
    started, ended : float, s since the epoch, the training's interval
    """

    preset: str
    params: dict
    history: object
    accuracies: dict
    status: str = "finished"
    pictures: list = field(default_factory=list)
    documents: dict = field(default_factory=dict)
    inputs: DataInputs | None = None
    started: float | None = None
    ended: float | None = None


def log_experiment_run(record: ExperimentRun, experiment: str = EXPERIMENT) -> str:
    """One run of ``python -m clrsearch.train``; returns its id."""
    client = MlflowClient()
    tags = {"level": EXPERIMENT_LEVEL, "preset": record.preset, "git_commit": git_commit()}
    run_id = create_run(client, experiment_id(client, experiment), f"train:{record.preset}", tags,
                        start_time=to_ms(record.started))
    end = to_ms(record.ended)
    with ended(client, run_id, TRAIN_STATUS.get(record.status, "FAILED"), end_time=end):
        metrics = timed_curves(record.history, 0, (), record.started, record.ended)
        metrics += scalar_metrics(record.accuracies, end or now_ms())
        log_batch(client, run_id, metrics=metrics, params=record.params)
        log_inputs(client, run_id, record.inputs, (TRAINING, VALIDATION, TESTING))
        _log_files(client, run_id, record.pictures, record.documents)
    return run_id


def log_gradient_check(result: dict, params: dict, experiment: str = EXPERIMENT) -> str:
    """One run of ``python -m clrsearch.gradcheck``: ``result`` as its ``--json`` prints it; returns the run's id."""
    client = MlflowClient()
    tags = {"level": GRADCHECK_LEVEL, "passed": str(bool(result["passed"])).lower(), "git_commit": git_commit()}
    run_id = create_run(client, experiment_id(client, experiment), "gradcheck", tags)
    with ended(client, run_id, "FINISHED"):
        values = {f"scenario_{s}/{name}/{column}": row[column]
                  for s, scenario in result["scenarios"].items() for name, row in scenario["table"].items()
                  for column in GRADCHECK_COLUMNS}
        values.update({f"scenario_{s}/seconds": scenario["seconds"] for s, scenario in result["scenarios"].items()})
        log_batch(client, run_id, metrics=scalar_metrics(values, now_ms()), params=params)
        _log_files(client, run_id, [], {GRADCHECK_JSON: result})
    return run_id


def _log_files(client, run_id, pictures, documents) -> None:
    """Upload the files ``pictures`` and each document written as JSON, in one call."""
    with tempfile.TemporaryDirectory(prefix="clrsearch-") as folder:
        for path in pictures:
            Path(folder, Path(path).name).write_bytes(Path(path).read_bytes())
        for name, document in documents.items():
            write_json(Path(folder) / name, document)
        client.log_artifacts(run_id, folder)
