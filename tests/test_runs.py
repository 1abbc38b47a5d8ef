"""The run tree of a study (clrsearch.tracking.runs) in a temporary MLflow store, checked against
the records and the History arrays it came from; runs end with the right status however the block ends."""

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clrsearch import plots, tracking
from clrsearch.config import DataConfig, TrainConfig
from clrsearch.data import load_splits
from clrsearch.nn import network
from clrsearch.nn.trainer import train
from helpers import experiment_runs, steps_and_values, write_tiny_cifar

PARENT = "mlflow.parentRunId"
PROTOCOL = {"n_batch": 20, "cycles": 1, "n_s": 10, "split": "batch1"}


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    """Three tiny networks trained together, and their validation predictions."""
    folder = write_tiny_cifar(tmp_path_factory.mktemp("data"), n_per_batch=100, n_test=50)
    splits = load_splits(DataConfig("batch1", data_dir=str(folder)))
    config = TrainConfig(n_batch=20, cycles=1, n_s=10, hidden=8, evals_per_cycle=4)
    result = train(splits, config, [0.01, 0.01, 0.1], [1, 2, 1])
    return splits, result, network.predict(result.params, splits.val.X)  # (K, N_val)



def trial_records(population):
    """A complete trial of two seeds, a pruned one whose seed stopped early, a failed one."""
    splits, result, val_pred = population
    history = result.history
    stopped = replace(history, metrics={name: v.copy() for name, v in history.metrics.items()})
    for values in stopped.metrics.values():
        values[2:, 2] = np.nan  # member 2 stopped after the second evaluation point
    accuracy = history.final("val_accuracy")

    def seed(k, seed, hist, status):
        return tracking.SeedRecord(seed=seed, val_accuracy=float(accuracy[k]), history=hist, member=k,
                                   val_true=splits.val.y, val_pred=val_pred[k], class_names=splits.label_names,
                                   status=status)

    complete = tracking.TrialRecord(number=0, lam=0.01, state="COMPLETE", mean=float(accuracy[:2].mean()),
                                    std=float(accuracy[:2].std()), params=PROTOCOL,
                                    seeds=[seed(0, 1, history, "finished"), seed(1, 2, history, "finished")])
    pruned = tracking.TrialRecord(number=1, lam=0.1, state="PRUNED", mean=float(accuracy[2]), std=0.0,
                                  params=PROTOCOL, seeds=[seed(2, 1, stopped, "stopped")],
                                  reason="below the median at step 10")
    failed = tracking.TrialRecord(number=2, lam=5.0, state="FAIL", mean=math.nan, std=math.nan,
                                  params=PROTOCOL, seeds=[], reason="all seeds diverged")
    return [complete, pruned, failed]



@pytest.fixture(scope="module")
def logged_study(store, population):
    """One study run with the three trials and a summary, logged once for the tests below."""
    trials = trial_records(population)
    params = {"study.name": "tiny", "train.n_s": 10, "train.eta_max": 0.1, "data.n_train": None}
    tags = {"study_name": "tiny", "kind": "coarse", "sampler": "random"}
    with tracking.StudyRun("tree", "coarse:tiny", params, tags) as study:
        ids = study.log_trials(trials)
        again = study.log_trials(trials[:1])
        figure = plots.lambda_search([0.01, 0.1], [0.5, 0.4], [0.01, 0.02])
        study.log_summary([{"number": 0, "lam": 0.01, "state": "COMPLETE"},
                           {"number": 1, "lam": 0.1, "state": "PRUNED", "reason": "pruned"}],
                          {"lambda_search": figure})
        study.log_metrics({"seconds_total": 12.5, "seconds_none": float("nan")})
        store.set_tag(study.run_id, "best_lam", "0.01")
    return study, trials, ids, again


def test_parent_run_holds_config_tags_summary_and_ends_finished(store, logged_study):
    study, _, _, _ = logged_study
    run = store.get_run(study.run_id)
    assert run.info.status == "FINISHED"
    assert PARENT not in run.data.tags
    assert run.data.params == {"study.name": "tiny", "train.n_s": "10", "train.eta_max": "0.1", "data.n_train": "None"}
    tags = run.data.tags
    assert (tags["study_name"], tags["kind"], tags["sampler"], tags["best_lam"]) == ("tiny", "coarse", "random", "0.01")
    assert tags["git_commit"] == tracking.git_commit()
    assert run.data.metrics["seconds_total"] == 12.5 and "seconds_none" not in run.data.metrics
    assert "tracking_seconds" in run.data.metrics

    folder = Path(store.download_artifacts(study.run_id, ""))
    with open(folder / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [{"number": "0", "lam": "0.01", "state": "COMPLETE", "reason": ""},
                    {"number": "1", "lam": "0.1", "state": "PRUNED", "reason": "pruned"}]
    with Image.open(folder / "lambda_search.png") as image:
        assert image.format == "PNG" and image.size[0] > 300


def test_one_trial_run_per_trial_nested_under_the_study_with_its_state(store, logged_study):
    study, trials, ids, again = logged_study
    runs = {r.info.run_id: r for r in experiment_runs(store, "tree")}
    trial_runs = [r for r in runs.values() if r.data.tags.get(PARENT) == study.run_id]
    assert sorted(r.info.run_id for r in trial_runs) == sorted(ids.values())
    assert again == {0: ids[0]}  # logged once only

    expected_status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
    for trial in trials:
        run = runs[ids[trial.number]]
        assert run.info.status == expected_status[trial.state]
        assert run.data.tags["state"] == trial.state
        assert run.data.tags.get("reason", "") == trial.reason
        assert run.data.params == {"lam": str(trial.lam), **{k: str(v) for k, v in PROTOCOL.items()}}
        metrics = run.data.metrics
        if math.isnan(trial.mean):
            assert "mean_val_accuracy" not in metrics and "std_val_accuracy" not in metrics
        else:
            assert metrics["mean_val_accuracy"] == pytest.approx(trial.mean)
            assert metrics["std_val_accuracy"] == pytest.approx(trial.std)
        for seed in trial.seeds:
            assert metrics[f"val_accuracy_seed_{seed.seed}"] == pytest.approx(seed.val_accuracy)
        seed_runs = [r for r in runs.values() if r.data.tags.get(PARENT) == run.info.run_id]
        assert sorted(int(r.data.tags["seed"]) for r in seed_runs) == sorted(s.seed for s in trial.seeds)
    assert not [r for r in runs.values() if r.info.status == "RUNNING"]


def test_seed_runs_hold_the_curves_by_update_step_eta_and_confusion_matrix(store, logged_study, population):
    _, trials, ids, _ = logged_study
    splits = population[0]
    runs = experiment_runs(store, "tree")
    for trial in trials:
        for seed in trial.seeds:
            (run,) = [r for r in runs if r.data.tags.get(PARENT) == ids[trial.number]
                      and r.data.tags["seed"] == str(seed.seed)]
            assert run.info.status == {"finished": "FINISHED", "stopped": "KILLED"}[seed.status]
            assert run.data.tags["status"] == seed.status
            history = seed.history
            active = ~np.all(np.isnan(np.stack([v[:, seed.member] for v in history.metrics.values()])), axis=0)
            for name, values in history.metrics.items():
                steps, logged = steps_and_values(store, run.info.run_id, name)
                assert steps == history.steps[active].tolist()
                np.testing.assert_allclose(logged, values[active, seed.member], rtol=1e-12)
            steps, epochs = steps_and_values(store, run.info.run_id, "epoch")
            np.testing.assert_allclose(epochs, np.asarray(steps) / history.batches_per_epoch)
            steps, eta = steps_and_values(store, run.info.run_id, "eta")  # the triangle's vertices
            schedule = history.eta_of(seed.member)  # (T,)
            assert steps[0] == 0 and steps[-1] == schedule.size - 1
            np.testing.assert_allclose(np.interp(np.arange(schedule.size), steps, eta), schedule, rtol=1e-9)
            assert run.data.metrics["final_val_accuracy"] == pytest.approx(seed.val_accuracy)

            folder = Path(store.download_artifacts(run.info.run_id, ""))
            report = json.loads((folder / "confusion_val.json").read_text())
            counts = np.zeros((10, 10), int)
            for true, predicted in zip(splits.val.y, seed.val_pred):
                counts[true, predicted] += 1
            assert report["confusion_matrix"] == counts.tolist()
            assert report["class_names"] == list(splits.label_names)
            assert report["accuracy"] == pytest.approx(np.mean(seed.val_pred == splits.val.y))
            with Image.open(folder / "confusion_val.png") as image:
                assert image.format == "PNG" and image.size == (648, 576)  # 9 x 8 inches at 72 dpi


@pytest.mark.parametrize("error, status", [(ValueError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED"),
                                           (SystemExit(130), "KILLED"), (SystemExit(0), "FINISHED")])
def test_every_run_ends_when_the_block_raises(store, population, error, status):
    experiment = f"raise-{type(error).__name__}-{status}"
    with pytest.raises(type(error)):
        with tracking.StudyRun(experiment, "raises", {"a": 1}, {}) as study:
            study.log_trials(trial_records(population)[:1])
            raise error
    runs = experiment_runs(store, experiment)
    assert len(runs) == 4  # study, trial, two seeds
    assert store.get_run(study.run_id).info.status == status
    assert sorted(r.info.status for r in runs if r.info.run_id != study.run_id) == ["FINISHED"] * 3
    for run in runs:  # each seed run got its matrix before it ended
        if run.data.tags["level"] == "seed":
            assert {a.path for a in store.list_artifacts(run.info.run_id)} == {"confusion_val.png",
                                                                              "confusion_val.json"}


def test_a_failure_while_logging_a_seed_ends_its_runs_failed(store, population):
    trial = trial_records(population)[0]
    broken = replace(trial, seeds=[trial.seeds[0], replace(trial.seeds[1], member=99)])  # no such column
    with pytest.raises(IndexError):
        with tracking.StudyRun("broken", "broken", {}, {}) as study:
            study.log_trials([broken])
    statuses = {r.data.tags.get("level"): r.info.status for r in experiment_runs(store, "broken")
                if r.data.tags.get("seed") != "1"}
    assert statuses == {"study": "FAILED", "trial": "FAILED", "seed": "FAILED"}
