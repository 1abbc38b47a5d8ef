"""Coarse and fine studies end to end on tiny data, with a temporary storage and tracking store."""

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from clrsearch import coarse, fine, search
from clrsearch.config import StudyConfig, TrainConfig
from clrsearch.data import load_splits
from clrsearch.train import train
from conftest import write_tiny_cifar

TINY = ["--n-s", "10", "--n-batch", "20", "--hidden", "8", "--eval-train-size", "100", "--val-size", "200",
        "--evals-per-cycle", "2", "--quiet"]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A working directory with tiny data, its own study storage and tracking store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    folder = write_tiny_cifar(tmp_path / "data")
    return ["--data-dir", str(folder), *TINY], folder


def load(name):
    return optuna.load_study(study_name=name, storage="sqlite:///studies/clrsearch.db")


def runs(client, kind=None):
    experiment = client.get_experiment_by_name("clrsearch")
    found = client.search_runs([experiment.experiment_id], max_results=1000)
    return found


def test_coarse_trials_are_the_seeded_draws_and_their_values_the_seed_means(workspace):
    args, folder = workspace
    assert coarse.main(args + ["--n-trials", "3", "--trials-per-population", "2", "--dtype", "float64"]) == 0
    study = load("coarse")
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert [t.params["lam"] for t in trials] == search.planned_lambdas(StudyConfig(n_trials=3))

    # Independent check: train the first trial's seeds one network at a time.
    splits = load_splits("full", folder, val_size=200, dtype=np.float64)
    config = TrainConfig(n_batch=20, cycles=2, n_s=10, hidden=8, dtype="float64", evals_per_cycle=2,
                         eval_train_size=100)
    alone = []
    for seed in (0, 1, 2):
        result = train(splits.train, splits.val, config, [trials[0].params["lam"]], [seed])
        alone.append(result.history.final("val_accuracy")[0])
    assert trials[0].user_attrs["val_accuracies"] == pytest.approx(alone, abs=1e-12)
    assert trials[0].value == pytest.approx(np.mean(alone), abs=1e-12)
    assert trials[0].user_attrs["val_accuracy_std"] == pytest.approx(np.std(alone), abs=1e-12)


def test_run_tree_parent_trial_seed_with_curves_and_artifacts(workspace):
    args, _ = workspace
    assert coarse.main(args + ["--n-trials", "2"]) == 0
    client = MlflowClient()
    all_runs = runs(client)
    parents = [r for r in all_runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.tags["kind"] == "coarse" and parent.data.params["study.n_trials"] == "2"
    trial_runs = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trial_runs) == 2
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "lambda_search.png"} <= artifacts
    for trial_run in trial_runs:
        seed_runs = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == trial_run.info.run_id]
        assert len(seed_runs) == 3
        seed_values = [r.data.metrics["final_val_accuracy"] for r in seed_runs]
        assert trial_run.data.metrics["mean_val_accuracy"] == pytest.approx(np.mean(seed_values))
        history = client.get_metric_history(seed_runs[0].info.run_id, "val_accuracy")
        # 2 cycles of 20 steps, 2 evaluation points per cycle, plus the start.
        assert sorted(m.step for m in history) == [0, 10, 20, 30, 40]
        seed_artifacts = {a.path for a in client.list_artifacts(seed_runs[0].info.run_id)}
        assert {"confusion_val.png", "confusion_val.json"} <= seed_artifacts


def test_fine_derives_its_grid_trains_and_registers_the_final_model(workspace):
    args, folder = workspace
    assert coarse.main(args + ["--n-trials", "3"]) == 0
    assert fine.main(args + ["--grid-points", "3", "--final-cycles", "1"]) == 0
    coarse_best = sorted(load("coarse").get_trials(), key=lambda t: t.value, reverse=True)[:3]
    top = 2 * max(t.params["lam"] for t in coarse_best)
    step = float(f"{top / 2:.2g}")
    fine_study = load("fine")
    assert sorted(t.params["lam"] for t in fine_study.get_trials()) == pytest.approx([0.0, step, 2 * step])

    client = MlflowClient()
    version = client.get_model_version_by_alias("clrsearch-cifar10", "champion")
    final = client.get_run(version.run_id)
    assert final.data.params["lam"] == repr(fine_study.best_params["lam"]) or \
        float(final.data.params["lam"]) == pytest.approx(fine_study.best_params["lam"])

    import mlflow.pyfunc
    from clrsearch.data import load_batch

    rows, labels = load_batch(folder / "test_batch")
    predictions = mlflow.pyfunc.load_model("models:/clrsearch-cifar10@champion").predict(rows)
    assert np.mean(predictions == labels) == pytest.approx(final.data.metrics["test_accuracy"])


def test_interrupted_study_resumes_and_trains_only_the_missing_trials(workspace, monkeypatch):
    args, _ = workspace
    populations = []
    real_train = search.train

    def interrupted_second_population(*a, **kw):
        populations.append(len(a[3]))
        if len(populations) == 2:
            raise KeyboardInterrupt
        return real_train(*a, **kw)

    monkeypatch.setattr(search, "train", interrupted_second_population)
    with pytest.raises(SystemExit) as stopped:
        coarse.main(args + ["--n-trials", "4", "--trials-per-population", "2"])
    assert stopped.value.code == 130
    study = load("coarse")
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2

    populations.clear()
    monkeypatch.setattr(search, "train", lambda *a, **kw: populations.append(len(a[3])) or real_train(*a, **kw))
    assert coarse.main(args + ["--n-trials", "4", "--trials-per-population", "2"]) == 0
    assert populations == [2 * 3]  # one population: the two missing trials, three seeds each
    study = load("coarse")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.params["lam"] for t in complete) == sorted(search.planned_lambdas(StudyConfig(n_trials=4)))
    statuses = sorted(r.info.status for r in runs(MlflowClient()) if "mlflow.parentRunId" not in r.data.tags)
    assert statuses == ["FINISHED", "KILLED"]


def test_exhausted_grid_stops_cleanly(workspace, monkeypatch, capsys):
    args, _ = workspace
    assert fine.main(args + ["--grid", "0,0.01", "--no-final"]) == 0
    monkeypatch.setattr(search, "train", lambda *a, **kw: pytest.fail("a finished grid trained again"))
    assert fine.main(args + ["--grid", "0,0.01", "--no-final"]) == 0
    out = capsys.readouterr().out
    assert "best: trial" in out
    assert len(load("fine").get_trials()) == 2


def test_a_diverging_lambda_fails_alone(workspace):
    args, _ = workspace
    assert fine.main(args + ["--grid", "0,1000", "--no-final"]) == 0
    trials = {t.params["lam"]: t for t in load("fine").get_trials()}
    assert trials[0.0].state == TrialState.COMPLETE
    assert trials[1000.0].state == TrialState.FAIL
    assert "diverged" in trials[1000.0].user_attrs["reason"]
