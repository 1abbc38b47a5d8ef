"""The reads of the store that the developer tools make through clrsearch.tracking: the experiment's id
without creating it, deleting an experiment, the latest finished study run, a run's children page by page,
the version an alias points to. Each test has a fresh SQLite store of its own in ``tmp_path``."""

import time

import helpers
import pytest
from mlflow.tracking import MlflowClient

from clrsearch import tracking
from clrsearch.errors import UsageError


@pytest.fixture
def client(tmp_path, monkeypatch, mlflow_template):
    """A client of a new SQLite store ``tmp_path``/mlflow.db (a copy of the empty, migrated template),
    also the store of ``MlflowClient()``; artifacts go to ``tmp_path``/mlruns."""
    uri = helpers.copy_store(mlflow_template, tmp_path)
    assert uri == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.chdir(tmp_path)
    return MlflowClient()


def experiment_names(client):
    from mlflow.entities import ViewType

    return {e.name for e in client.search_experiments(view_type=ViewType.ALL)}


def study(name, **tags):
    """A study run of experiment "clrsearch" named ``name``, left FINISHED; returns its run id."""
    with tracking.StudyRun(run_name=name, params={"study.n_trials": 2}, tags={"kind": "coarse", **tags}) as run:
        pass
    return run.run_id


def later():
    """Let the clock move on, so that the next run starts at a later millisecond than the last."""
    time.sleep(0.02)


def child(client, exp_id, parent_id, level, name):
    """A run nested under ``parent_id`` with tag ``level``; returns its id."""
    tags = {"mlflow.parentRunId": parent_id, "level": level}
    run_id = client.create_run(exp_id, run_name=name, tags=tags).info.run_id
    client.set_terminated(run_id, "FINISHED")
    return run_id


# ----------------------------------------------------------------------------- experiments


def test_find_experiment_id_is_none_for_a_missing_experiment_and_creates_none(client):
    assert tracking.find_experiment_id(client=client) is None
    assert tracking.find_experiment_id("other") is None  # the default client, same store
    assert tracking.EXPERIMENT not in experiment_names(client)
    assert "other" not in experiment_names(client)


def test_find_experiment_id_is_the_id_of_the_experiment_runs_went_to(client):
    made = client.create_experiment("other")
    with tracking.StudyRun(run_name="s") as run:
        pass
    assert tracking.find_experiment_id(client=client) == run.experiment_id
    assert tracking.find_experiment_id(tracking.EXPERIMENT) == run.experiment_id
    assert tracking.find_experiment_id("other", client) == made != run.experiment_id


def test_delete_experiment_creates_a_missing_one_and_deletes_it(client):
    exp_id = tracking.delete_experiment("gone", client)
    found = client.get_experiment(exp_id)
    assert found.name == "gone" and found.lifecycle_stage == "deleted"
    assert tracking.find_experiment_id("gone", client) == exp_id  # a deleted experiment keeps its id
    with pytest.raises(UsageError, match="experiment 'gone' is deleted"):
        tracking.check_store("gone")


def test_delete_experiment_deletes_an_existing_one_and_leaves_a_deleted_one_deleted(client):
    exp_id = client.create_experiment("old")
    kept = client.create_experiment("kept")
    assert tracking.delete_experiment("old") == exp_id
    assert client.get_experiment(exp_id).lifecycle_stage == "deleted"
    assert tracking.delete_experiment("old", client) == exp_id  # again: same experiment, still deleted
    assert client.get_experiment(exp_id).lifecycle_stage == "deleted"
    assert client.get_experiment(kept).lifecycle_stage == "active"
    assert experiment_names(client) >= {"old", "kept"}


# ----------------------------------------------------------------------------- study runs


def test_latest_study_run_is_none_without_a_finished_study_run(client):
    exp_id = client.create_experiment(tracking.EXPERIMENT)
    assert tracking.latest_study_run(exp_id, client) is None
    with tracking.StudyRun(run_name="running") as run:
        assert tracking.latest_study_run(exp_id, client) is None  # still RUNNING
    assert tracking.latest_study_run(exp_id).info.run_id == run.run_id


def test_latest_study_run_is_the_finished_study_run_that_started_last(client):
    first = study("first")
    later()
    second = study("second")
    exp_id = tracking.find_experiment_id(client=client)
    assert client.get_run(first).info.start_time < client.get_run(second).info.start_time
    latest = tracking.latest_study_run(exp_id, client)
    assert latest.info.run_id == second and latest.info.run_name == "second"
    assert latest.info.status == "FINISHED" and latest.data.tags["level"] == "study"

    later()
    with pytest.raises(RuntimeError), tracking.StudyRun(run_name="failed"):
        raise RuntimeError("a study that failed")
    later()
    child(client, exp_id, second, "trial", "a finished trial run, started last")
    later()
    with tracking.StudyRun(run_name="still running"):
        assert tracking.latest_study_run(exp_id, client).info.run_id == second
    # The run that was still running has ended FINISHED and is now the latest.
    assert tracking.latest_study_run(exp_id, client).info.run_name == "still running"


def test_latest_study_run_reads_only_the_experiment_given(client):
    mine = study("mine")
    later()
    with tracking.StudyRun("other", run_name="other"):
        pass
    exp_id = tracking.find_experiment_id(client=client)
    assert tracking.latest_study_run(exp_id, client).info.run_id == mine


# ----------------------------------------------------------------------------- children


def test_child_runs_are_the_trial_runs_a_study_run_logged(client):
    trials = [tracking.TrialRecord(number=n, lam=10.0 ** -n, state="COMPLETE", mean=0.3 + n / 100, std=0.01,
                                   seed_accuracies={0: 0.3, 1: 0.31}) for n in range(3)]
    with tracking.StudyRun(run_name="study", tags={"study_name": "s"}) as run:
        logged = run.log_trials(trials)
    with tracking.StudyRun(run_name="another study") as other:
        other.log_trials(trials[:1])
    exp_id = run.experiment_id

    found = tracking.child_runs(exp_id, run.run_id, "trial", client)
    assert sorted(r.info.run_id for r in found) == sorted(logged.values())
    assert sorted(int(r.data.tags["trial"]) for r in found) == [0, 1, 2]
    assert {r.data.metrics["mean_val_accuracy"] for r in found} == {0.3, 0.31, 0.32}
    assert tracking.child_runs(exp_id, run.run_id, "seed", client) == []  # logged without seed runs
    assert len(tracking.child_runs(exp_id, other.run_id, "trial")) == 1


def test_child_runs_read_every_page_and_only_the_level_asked_for(client):
    exp_id = client.create_experiment(tracking.EXPERIMENT)
    parent = client.create_run(exp_id, run_name="study", tags={"level": "study"}).info.run_id
    trial_ids = {child(client, exp_id, parent, "trial", f"trial-{n}") for n in range(7)}
    first_trial = min(trial_ids)
    seed_ids = {child(client, exp_id, first_trial, "seed", f"seed-{n}") for n in range(5)}
    final_id = child(client, exp_id, parent, "final", "final")
    child(client, exp_id, client.create_run(exp_id).info.run_id, "trial", "under another parent")

    one_page = client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent}' and tags.level = 'trial'",
                                  max_results=3)
    assert len(one_page) == 3 and one_page.token  # 7 trial runs do not fit one page of 3

    for page_size in (3, 7, 1000):
        found = tracking.child_runs(exp_id, parent, "trial", client, page_size=page_size)
        assert len(found) == 7 and {r.info.run_id for r in found} == trial_ids
    assert {r.info.run_id for r in tracking.child_runs(exp_id, first_trial, "seed", client, page_size=2)} == seed_ids
    assert [r.info.run_id for r in tracking.child_runs(exp_id, parent, "final")] == [final_id]
    assert tracking.child_runs(exp_id, parent, "seed", client) == []  # seeds are grandchildren
    assert tracking.child_runs(exp_id, parent, "it's", client) == []  # a quote in the level is no syntax error


# ----------------------------------------------------------------------------- registry


def test_aliased_version_is_the_version_the_alias_points_to(client):
    exp_id = client.create_experiment(tracking.EXPERIMENT)
    run_id = client.create_run(exp_id).info.run_id
    assert tracking.aliased_version(client=client) is None  # no registered model
    client.create_registered_model(tracking.REGISTERED_NAME)
    versions = [client.create_model_version(tracking.REGISTERED_NAME, f"runs:/{run_id}/model", run_id).version
                for _ in range(3)]
    assert [str(v) for v in versions] == ["1", "2", "3"]
    assert tracking.aliased_version(client=client) is None  # no alias yet

    client.set_registered_model_alias(tracking.REGISTERED_NAME, tracking.ALIAS, "2")
    assert tracking.aliased_version(client=client) == "2"
    assert tracking.aliased_version() == "2"
    client.set_registered_model_alias(tracking.REGISTERED_NAME, "old", "1")
    client.set_registered_model_alias(tracking.REGISTERED_NAME, tracking.ALIAS, "3")
    assert tracking.aliased_version(tracking.REGISTERED_NAME, tracking.ALIAS, client) == "3"
    assert tracking.aliased_version(alias="old", client=client) == "1"
    assert tracking.aliased_version(alias="nobody", client=client) is None
    assert tracking.aliased_version("another-model", client=client) is None
