"""Runs written after the fact keep the times of the training they record, and every run carries MLflow's
standard tags (clrsearch.tracking.runs, .client, .artifacts); checked in a temporary MLflow store against
hand-made times, and on a coarse study end to end against the blocks that trained it."""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from clrsearch import tracking
from clrsearch.config import DataConfig, SearchConfig, StudyConfig, TrainConfig
from clrsearch.data import load_splits
from clrsearch.nn import network
from clrsearch.nn.trainer import train
from clrsearch.search import population, summary
from clrsearch.search.runner import RunOptions, StudyRunner
from clrsearch.tracking import artifacts
from helpers import copy_storage, copy_store, experiment_runs, write_tiny_cifar

STARTED = 1_700_000_000.0  # s since the epoch: the hand-made training below ran 60 s from here
STANDARD = ("mlflow.source.name", "mlflow.source.type", "mlflow.source.git.commit", "mlflow.user")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = write_tiny_cifar(tmp_path_factory.mktemp("data"), n_per_batch=100, n_test=20)
    splits = load_splits(DataConfig("batch1", data_dir=str(folder)))
    result = train(splits, TrainConfig(n_batch=20, cycles=1, n_s=10, hidden=8, evals_per_cycle=4),
                   [0.01], [1])
    return splits, result


@pytest.fixture(scope="module")
def logged(store, trained):
    """A trial of one seed whose 5 evaluation points were reached at 0, 10, 20, 40 and 60 s."""
    splits, result = trained
    eval_times = tuple(STARTED + np.array([0.0, 10.0, 20.0, 40.0, 60.0]))
    seed = tracking.SeedRecord(seed=0, val_accuracy=0.3, history=result.history, member=0, val_true=splits.val.y,
                               val_pred=network.predict(result.params, splits.val.X)[0],
                               class_names=splits.label_names, status="finished", eval_times=eval_times,
                               started=STARTED - 1.0, ended=STARTED + 61.0)
    trial = tracking.TrialRecord(number=0, lam=0.01, state="COMPLETE", mean=0.3, std=0.0, seeds=[seed],
                                 started=STARTED - 1.0, ended=STARTED + 61.0)
    with tracking.StudyRun("times", "coarse:times", {}, {"study_name": "times"}) as study:
        trial_id = study.log_trials([trial])[0]
        study.log_summary([{"trial": 0}], description="| trial |\n|---:|\n| 0 |")
    seed_id = store.search_runs([study.experiment_id], f"tags.`mlflow.parentRunId` = '{trial_id}'")[0].info.run_id
    return study, trial_id, seed_id, result.history


def test_trial_and_seed_runs_start_and_end_with_their_training(store, logged):
    _, trial_id, seed_id, _ = logged
    for run_id in (trial_id, seed_id):
        info = store.get_run(run_id).info
        assert (info.start_time, info.end_time) == (1_699_999_999_000, 1_700_000_061_000)
        assert info.status == "FINISHED"


def test_curve_points_carry_the_time_training_reached_them(store, logged):
    _, trial_id, seed_id, history = logged
    points = sorted(store.get_metric_history(seed_id, "val_accuracy"), key=lambda m: m.step)
    assert [m.step for m in points] == history.steps.tolist() == [0, 5, 10, 15, 20]
    assert [m.timestamp for m in points] == [1_700_000_000_000, 1_700_000_010_000, 1_700_000_020_000,
                                             1_700_000_040_000, 1_700_000_060_000]
    # eta at its vertices 0, 10, 19: step 10 is a point's (20 s), step 19 is 4/5 of the way from 40 s (step 15)
    # to 60 s (step 20).
    eta = {m.step: m.timestamp for m in store.get_metric_history(seed_id, "eta")}
    assert eta == {0: 1_700_000_000_000, 10: 1_700_000_020_000, 19: 1_700_000_056_000}
    assert store.get_metric_history(seed_id, "final_val_accuracy")[0].timestamp == 1_700_000_061_000
    assert store.get_metric_history(trial_id, "mean_val_accuracy")[0].timestamp == 1_700_000_061_000


def test_every_run_has_the_standard_source_and_user_tags(store, logged):
    study, trial_id, seed_id, _ = logged
    for run_id in (study.run_id, trial_id, seed_id):
        tags = store.get_run(run_id).data.tags
        assert all(name in tags for name in STANDARD), tags
        commit = tags["mlflow.source.git.commit"]
        # A full hash of a commit of the package's checkout (HEAD when the process first asked; it may move since).
        known = subprocess.run(["git", "cat-file", "-t", commit], cwd=Path(tracking.__file__).parent,
                               capture_output=True, text=True).stdout.strip()
        assert tags["mlflow.source.type"] == "LOCAL" and len(commit) == 40 and known == "commit"
        assert tags["mlflow.source.name"] == os.path.abspath(sys.argv[0])


def test_the_study_run_description_is_the_markdown_it_was_given(store, logged):
    study = logged[0]
    assert store.get_run(study.run_id).data.tags["mlflow.note.content"] == "| trial |\n|---:|\n| 0 |"


def test_without_recorded_times_the_points_are_placed_in_the_interval_by_step():
    ms = artifacts.point_timestamps([0, 10, 40], (), started=100.0, ended=104.0)
    assert ms.tolist() == [100_000, 101_000, 104_000]
    assert artifacts.point_timestamps([0, 10], (1.0, 2.5)).tolist() == [1000, 2500]
    assert artifacts.step_timestamps([0, 10], [1000, 2000], 12).tolist()[:3] == [1000, 1100, 1200]


@pytest.mark.slow
def test_a_coarse_study_writes_its_runs_with_the_times_and_datasets_of_their_blocks(tmp_path, monkeypatch,
                                                                                    mlflow_template, optuna_template):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", copy_store(mlflow_template, tmp_path))
    folder = write_tiny_cifar(tmp_path / "data")
    blocks = []
    real_train_block = population._train_block

    def keep(*args, **kwargs):
        blocks.append(real_train_block(*args, **kwargs))
        return blocks[-1]

    monkeypatch.setattr(population, "_train_block", keep)
    config = SearchConfig(StudyConfig(kind="coarse", name="times", sampler="random", n_trials=2, replicates="paired",
                                      storage=copy_storage(optuna_template, tmp_path / "studies.db")),
                          DataConfig("full", val_size=200, data_dir=str(folder)),
                          TrainConfig(n_batch=20, cycles=1, n_s=20, hidden=8, evals_per_cycle=2))
    assert StudyRunner(config, RunOptions(quiet=True)).run() == 0

    runs = experiment_runs(MlflowClient(), "clrsearch")
    study = [r for r in runs if r.data.tags.get("level") == "study"]
    trials = [r for r in runs if r.data.tags.get("level") == "trial"]
    seeds = [r for r in runs if r.data.tags.get("level") == "seed"]
    assert (len(study), len(trials), len(seeds)) == (1, 2, 6)
    # One block trains the three replicates of both trials, all on one schedule: every trial and seed run
    # starts with it and ends at its last evaluation point.
    assert len(blocks) == 1
    block = blocks[0]
    for run in trials + seeds:
        assert (run.info.start_time, run.info.end_time) == (round(1000 * block.started),
                                                            round(1000 * block.eval_times[-1]))
    for run in study + trials + seeds:
        contexts = sorted(t.value for i in run.inputs.dataset_inputs for t in i.tags)
        names = sorted(i.dataset.name for i in run.inputs.dataset_inputs)
        assert (contexts, names) == (["training", "validation"], ["cifar10-full-train-800", "cifar10-full-val-200"])
        assert all(name in run.data.tags for name in STANDARD)
    note = study[0].data.tags["mlflow.note.content"]
    assert note.startswith("### coarse study 'times'") and note.count("\n| ") == 3  # header and two trials


def test_a_member_that_stops_before_its_block_ends_at_its_last_evaluation_point():
    """Member 1 (a shorter schedule, or pruned) has no values after the second point, member 2 none at all."""
    accuracy = np.array([[0.1, 0.1, np.nan], [0.2, 0.2, np.nan], [0.3, np.nan, np.nan]])  # (P, K)
    history = SimpleNamespace(metrics={"val_accuracy": accuracy})
    block = SimpleNamespace(training=SimpleNamespace(history=history), eval_times=[100.0, 130.0, 190.0],
                            ended=191.0)
    assert [summary.member_ended(block, k) for k in range(3)] == [190.0, 130.0, 191.0]
