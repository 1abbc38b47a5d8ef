"""Coarse and fine studies end to end (clrsearch.search.runner.StudyRunner) on tiny data, with a
temporary study storage and tracking store; checked against networks trained one at a time, a
coarse study made by hand, and the registered model loaded back from MLflow."""

import math
import re
import socket
from dataclasses import replace

import mlflow.pyfunc
import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from clrsearch import coarse as coarse_command
from clrsearch import processes
from clrsearch.config import DataConfig, SearchConfig, StudyConfig, TrainConfig
from clrsearch.data import load_batch, load_splits
from clrsearch.nn.trainer import train
from clrsearch.search import population, queue, runner
from clrsearch.search.runner import RunOptions, StudyRunner
from helpers import copy_storage, copy_store, dead_pid, experiment_runs, log_uniform_draws

TRAIN = TrainConfig(n_batch=20, cycles=2, n_s=10, hidden=8, evals_per_cycle=2, eval_train_size=100)


@pytest.fixture
def workspace(tmp_path, monkeypatch, tiny_data, mlflow_template, optuna_template):
    """A working directory with its own study storage and tracking store; returns ``config(kind, **study)``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", copy_store(mlflow_template, tmp_path))
    storage = copy_storage(optuna_template, tmp_path / "studies" / "clrsearch.db")
    data = DataConfig("full", val_size=200, data_dir=str(tiny_data))

    def config(kind, train=TRAIN, **study):
        sampler = "grid" if kind == "fine" else "random"
        fields = {"kind": kind, "name": kind, "sampler": sampler, "storage": storage, "replicates": "paired", **study}
        if kind == "fine":
            fields = {"race": False, "final_val_size": 200, "final_seeds": 2, **fields}
        return SearchConfig(StudyConfig(**fields), data, train)

    config.storage = storage
    return config


def run(config, **options):
    return StudyRunner(config, RunOptions(quiet=True, **options)).run()


def load(config):
    return optuna.load_study(study_name=config.study.name, storage=config.study.storage)


def all_runs():
    return experiment_runs(MlflowClient(), "clrsearch")


@pytest.mark.slow
def test_coarse_trials_are_the_seeded_draws_and_their_values_the_replicate_means(workspace, tiny_data):
    config = workspace("coarse", train=replace(TRAIN, dtype="float64"), n_trials=3, trials_per_population=2)
    assert run(config) == 0
    trials = sorted(load(config).get_trials(), key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert [t.params["lam"] for t in trials] == pytest.approx(log_uniform_draws(0, 3, 1e-5, 1e-1), rel=1e-12)

    # Independent check: train the first trial's replicates one network at a time. Replicate r starts
    # from init seed r and, paired, takes the mini-batch order of shuffle seed r.
    splits = load_splits(DataConfig("full", val_size=200, data_dir=str(tiny_data)), dtype=np.float64)
    alone = []
    for r in (0, 1, 2):
        result = train(splits, replace(config.train, shuffle_seed=r), [trials[0].params["lam"]],
                       [r])
        alone.append(result.history.final("val_accuracy")[0])
    assert trials[0].user_attrs["replicates"] == [0, 1, 2]
    assert trials[0].user_attrs["val_accuracies"] == pytest.approx(alone, abs=1e-12)
    assert trials[0].value == pytest.approx(np.mean(alone), abs=1e-12)
    assert trials[0].user_attrs["val_accuracy_std"] == pytest.approx(np.std(alone), abs=1e-12)


@pytest.mark.slow
def test_run_tree_parent_trial_seed_with_curves_and_artifacts(workspace):
    assert run(workspace("coarse", n_trials=2)) == 0
    client = MlflowClient()
    found = all_runs()
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.tags["kind"] == "coarse" and parent.data.params["study.n_trials"] == "2"
    trial_runs = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trial_runs) == 2
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "lambda_search.png"} <= artifacts
    for trial_run in trial_runs:
        seed_runs = [r for r in found if r.data.tags.get("mlflow.parentRunId") == trial_run.info.run_id]
        assert len(seed_runs) == 3
        seed_values = [r.data.metrics["final_val_accuracy"] for r in seed_runs]
        assert trial_run.data.metrics["mean_val_accuracy"] == pytest.approx(np.mean(seed_values))
        history = client.get_metric_history(seed_runs[0].info.run_id, "val_accuracy")
        # 2 cycles of 20 steps, 2 evaluation points per cycle, plus the start.
        assert sorted(m.step for m in history) == [0, 10, 20, 30, 40]
        seed_artifacts = {a.path for a in client.list_artifacts(seed_runs[0].info.run_id)}
        assert {"confusion_val.png", "confusion_val.json"} <= seed_artifacts


def hand_made_coarse_study(storage):
    """A coarse study whose best three lambdas are 7e-4, 2.2e-3 and 3e-3: the derived grid of 3 points is
    0 to 2 x 3e-3 in steps of 6e-3 / 2 = 3e-3."""
    coarse = optuna.create_study(study_name="coarse", storage=storage, direction="maximize")
    distribution = {"lam": FloatDistribution(1e-5, 1e-1, log=True)}
    for lam, value in {1e-4: 0.40, 7e-4: 0.52, 2.2e-3: 0.50, 3e-3: 0.45, 5e-2: 0.30}.items():
        coarse.add_trial(create_trial(params={"lam": lam}, distributions=distribution, value=value))


@pytest.mark.slow
def test_fine_derives_its_grid_trains_and_registers_the_final_model(workspace, tiny_data):
    config = workspace("fine", grid_points=3)
    hand_made_coarse_study(config.study.storage)
    assert run(config) == 0
    fine_study = load(config)
    assert sorted(t.params["lam"] for t in fine_study.get_trials()) == pytest.approx([0.0, 0.003, 0.006], abs=1e-15)

    client = MlflowClient()
    version = client.get_model_version_by_alias("clrsearch-cifar10", "champion")
    final = client.get_run(version.run_id)
    best = max(fine_study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.value)
    assert float(final.data.params["lam"]) == best.params["lam"]
    assert final.data.params["members"] == "2" and final.data.params["n_train"] == "800"

    rows, labels = load_batch(tiny_data / "test_batch")
    predictions = mlflow.pyfunc.load_model("models:/clrsearch-cifar10@champion").predict(rows)
    assert np.mean(predictions == labels) == pytest.approx(final.data.metrics["test_accuracy"])


@pytest.mark.slow
def test_interrupted_study_resumes_and_trains_only_the_missing_trials(workspace, monkeypatch):
    config = workspace("coarse", n_trials=4, trials_per_population=2)
    blocks = []  # the lambdas of every population trained
    real_train = population.train

    def interrupted_second_population(*args, **kwargs):
        blocks.append(sorted(set(args[2])))
        if len(blocks) == 2:  # one block per population: the 2nd is population 2
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(population, "train", interrupted_second_population)
    with pytest.raises(SystemExit) as stopped:
        run(config)
    assert stopped.value.code == 130
    study = load(config)
    done = sorted(t.params["lam"] for t in study.get_trials(states=(TrialState.COMPLETE,)))
    assert len(done) == 2

    blocks.clear()
    monkeypatch.setattr(population, "train", lambda *a, **kw: blocks.append(sorted(set(a[2]))) or real_train(*a, **kw))
    assert run(config) == 0
    planned = log_uniform_draws(0, 4, 1e-5, 1e-1)
    missing = sorted(lam for lam in planned if not any(math.isclose(lam, d, rel_tol=1e-12) for d in done))
    assert len(blocks) == 1 and blocks[0] == pytest.approx(missing, rel=1e-12)  # the 3 replicates of 2 trials
    study = load(config)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.params["lam"] for t in complete) == pytest.approx(sorted(planned), rel=1e-12)
    statuses = sorted(r.info.status for r in all_runs() if "mlflow.parentRunId" not in r.data.tags)
    assert statuses == ["FINISHED", "KILLED"]


@pytest.mark.slow
def test_exhausted_grid_stops_cleanly(workspace, monkeypatch, capsys):
    config = workspace("fine", grid=(0.0, 0.01), final=False)
    assert run(config) == 0
    monkeypatch.setattr(population, "train", lambda *a, **kw: pytest.fail("a finished grid trained again"))
    assert run(config) == 0
    assert "best: trial" in capsys.readouterr().out
    assert len(load(config).get_trials()) == 2


@pytest.mark.slow
def test_a_diverging_lambda_fails_alone(workspace):
    config = workspace("fine", grid=(0.0, 1000.0), final=False, n_seeds=1)
    assert run(config) == 0
    trials = {t.params["lam"]: t for t in load(config).get_trials()}
    assert trials[0.0].state == TrialState.COMPLETE
    assert trials[1000.0].state == TrialState.FAIL
    assert "diverged" in trials[1000.0].user_attrs["reason"]


def test_the_command_builds_the_config_from_its_flags(workspace, tiny_data, monkeypatch):
    ran = []
    monkeypatch.setattr(runner.StudyRunner, "run", lambda self: ran.append((self.request, self.options)) or 0)
    assert coarse_command.main(["--data-dir", str(tiny_data), "--n-trials", "2", "--n-s", "10", "--quiet",
                                "--workers", "2", "--eta-max", "auto"]) == 0
    (config, options), = ran
    assert (config.study.kind, config.study.n_trials, config.train.n_s) == ("coarse", 2, 10)
    assert config.data.data_dir == str(tiny_data)
    assert options.quiet and options.n_workers == 2 and options.auto_eta == frozenset({"eta_max"})
    assert options.argv[:2] == ("--data-dir", str(tiny_data))


def test_per_worker_gives_every_worker_a_population():
    config = SearchConfig(StudyConfig(n_trials=10, trials_per_population=8))
    assert runner.per_worker(config, 1).study.trials_per_population == 8
    assert runner.per_worker(config, 2).study.trials_per_population == 5
    assert runner.per_worker(config, 3).study.trials_per_population == 4  # ceil(10 / 3)
    assert runner.per_worker(config, 20).study.trials_per_population == 1


def test_json_dumps_writes_numpy_numbers_as_numbers():
    assert runner.json_dumps({"a": np.float32(0.5), "b": np.int64(3), "d": [1.0, np.float64(2.5)]}) == \
        '{"a": 0.5, "b": 3, "d": [1.0, 2.5]}'


def test_json_dumps_writes_nan_as_null():
    assert runner.json_dumps({"c": float("nan"), "d": np.float32("nan")}) == '{"c": null, "d": null}'


@pytest.mark.slow
def test_a_point_whose_workers_keep_dying_fails_the_command_in_one_line_until_tried_again(workspace, monkeypatch,
                                                                                         capsys):
    config = workspace("coarse", n_trials=2, trials_per_population=1)
    config = replace(config, timing=replace(config.timing, heartbeat_seconds=0.2, grace_seconds=1.0))
    claim = queue.TrialQueue.claim

    def slot_1_kills_its_worker(shared, config):
        trials = claim(shared, config)
        for trial in [t for t in trials if t.user_attrs["slot"] == 1]:  # claimed by a process that died at once
            shared.storage.set_trial_system_attr(shared.trial_id(trial.number), queue.WORKER_ATTR,
                                                 processes.identity(dead_pid()))
        return [t for t in trials if t.user_attrs["slot"] != 1]

    monkeypatch.setattr(queue.TrialQueue, "claim", slot_1_kills_its_worker)
    assert run(config, command="python -m clrsearch.coarse --n-trials 2") == 1
    lam = log_uniform_draws(0, 2, 1e-5, 1e-1)[1]
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1 and re.fullmatch(
        f"error: point 1 \\(lambda {lam:.4g}\\) was given up: its workers died 6 times \\(last: worker "
        f"{socket.gethostname()}:[0-9]+ died\\); to try it again, run the same command again: "
        f"python -m clrsearch.coarse --n-trials 2", errors[0]), errors
    assert [t.state for t in load(config).get_trials()] == [TrialState.COMPLETE] + [TrialState.FAIL] * 6

    monkeypatch.setattr(queue.TrialQueue, "claim", claim)
    assert run(config) == 0
    assert [t.state for t in load(config).get_trials()][-1] == TrialState.COMPLETE
