"""Commands started together on new stores share them: the MLflow SQLite store and the Optuna SQLite
storage are each created once, whole (built beside the file, renamed into place), under a lock on a file
beside them, and every command of one study name
succeeds with each planned lambda trained once. A store that is broken for good (a file that is no
database, a folder in the store's place) is still one line naming the file, with a fix about the file.
"""

import contextlib
import fcntl
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from clrsearch.errors import UsageError
from clrsearch.search import queue
from clrsearch.tracking import store
from helpers import assert_one_line_naming, log_uniform_draws, write_tiny_cifar

# The tiny protocol of tests/test_ui.py: a few update steps per trial on the tiny CIFAR copy.
TINY = ["--n-s", "10", "--n-batch", "20", "--hidden", "8", "--eval-train-size", "100", "--val-size", "200",
        "--evals-per-cycle", "2", "--quiet"]
STUDY = ["--study-name", "together", "--n-trials", "4", "--n-seeds", "1"]
FILE_FIX = "is an MLflow SQLite store in a folder you can write to"


def command_env(folder, data):
    """The environment of a coarse command in ``folder``: its own MLflow SQLite store, the tiny data."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{folder}/mlflow.db", MLFLOW_DISABLE_TELEMETRY="true",
               CLRSEARCH_DATA=str(data))
    return env


def start_coarse(folder, data, n):
    """``n`` coarse commands of one study started at once in ``folder`` (default Optuna storage there)."""
    env = command_env(folder, data)
    return [subprocess.Popen([sys.executable, "-m", "clrsearch.coarse", *TINY, *STUDY], cwd=folder, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]


@pytest.mark.slow
def test_three_commands_on_fresh_stores_all_succeed_and_train_each_lambda_once(tmp_path):
    data = write_tiny_cifar(tmp_path / "data")
    folder = tmp_path / "work"
    folder.mkdir()
    processes = start_coarse(folder, data, 3)
    outputs = [process.communicate(timeout=300) for process in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr
    study = optuna.load_study(study_name="together", storage=f"sqlite:///{folder}/studies/clrsearch.db")
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    lambdas = sorted(t.params["lam"] for t in trials)
    assert lambdas == pytest.approx(sorted(log_uniform_draws(0, 4, 1e-5, 1e-1)), rel=1e-12)


@pytest.mark.slow
def test_a_new_store_is_created_under_the_lock_beside_it(tmp_path, monkeypatch):
    path = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{path}")
    checked = threading.Event()
    with open(f"{path}.lock", "a") as held:  # another process creating the store holds this lock
        fcntl.flock(held, fcntl.LOCK_EX)
        checker = threading.Thread(target=lambda: (store.check_store(), checked.set()))
        checker.start()
        assert not checked.wait(1.0)
        assert not path.exists()
        fcntl.flock(held, fcntl.LOCK_UN)
    checker.join(timeout=60)
    assert checked.is_set() and path.exists()


def test_a_store_file_that_is_no_database_is_one_line_about_the_file(tmp_path, monkeypatch):
    path = tmp_path / "mlflow.db"
    path.write_bytes(b"not a database, " * 400)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{path}")
    with pytest.raises(UsageError) as raised:
        store.check_store()
    assert_one_line_naming(raised, f"sqlite:///{path}", "file is not a database", f"{path} {FILE_FIX}")
    assert "running server" not in str(raised.value)


def test_a_folder_in_place_of_the_store_is_refused_at_once(tmp_path, monkeypatch):
    path = tmp_path / "mlflow.db"
    path.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{path}")
    with pytest.raises(UsageError) as raised:
        store.check_store()
    assert_one_line_naming(raised, f"{path} is a folder", FILE_FIX)


def test_a_store_whose_folder_is_a_file_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "plain").write_text("a file")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'plain' / 'mlflow.db'}")
    with pytest.raises(UsageError) as raised:
        store.check_store()
    assert_one_line_naming(raised, f"{tmp_path / 'plain'} is a file, not a folder", FILE_FIX)


@pytest.mark.slow
def test_a_command_in_a_fresh_process_ends_normally_and_leaves_each_store_one_file(tmp_path):
    data = write_tiny_cifar(tmp_path / "data")
    # The module run as ``python -m clrsearch.coarse`` runs it, with an exit handler that only a normal end runs.
    script = ("import atexit, runpy; atexit.register(print, 'exit handlers ran'); "
              "runpy.run_module('clrsearch.coarse', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", script, *TINY, "--study-name", "alone", "--n-trials", "2",
                           "--n-seeds", "1"], cwd=tmp_path, env=command_env(tmp_path, data), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("exit handlers ran\n")
    stores = [tmp_path / "mlflow.db", tmp_path / "studies" / "clrsearch.db"]
    for path in stores:
        beside = sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name))
        assert beside == [path.name, f"{path.name}.lock"]  # no -wal, -shm or -journal left
        with contextlib.closing(sqlite3.connect(path)) as connection:
            assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    trials = optuna.load_study(study_name="alone", storage=f"sqlite:///{stores[1]}").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2


@pytest.mark.slow
def test_the_coarse_command_on_a_broken_store_file_exits_2_with_one_line(tmp_path):
    data = write_tiny_cifar(tmp_path / "data")
    (tmp_path / "mlflow.db").write_bytes(b"not a database, " * 400)
    done = subprocess.run([sys.executable, "-m", "clrsearch.coarse", *TINY, *STUDY], cwd=tmp_path,
                          env=command_env(tmp_path, data), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: cannot use the MLflow tracking store sqlite:///{tmp_path}/mlflow.db "
                                  f"((sqlite3.DatabaseError) file is not a database); check that "
                                  f"{tmp_path}/mlflow.db {FILE_FIX}")


def test_a_store_lock_that_cannot_be_created_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "mlflow.db"
    (tmp_path / "mlflow.db.lock").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{path}")
    with pytest.raises(UsageError) as raised:
        store.check_store()
    assert_one_line_naming(raised, f"cannot create {path}.lock", FILE_FIX)


def test_a_study_storage_lock_that_cannot_be_created_is_one_line(tmp_path):
    url = f"sqlite:///{tmp_path}/studies.db"
    (tmp_path / "studies.db.lock").mkdir()
    with pytest.raises(UsageError) as raised, queue.study_lock(url):
        pass
    assert_one_line_naming(raised, f"cannot create the lock file {tmp_path}/studies.db.lock", url)


# A child that checks the MLflow store of argv[1] and dies (as a SIGKILL would: no exit handler, no rollback)
# right after MLflow's migration has made its first scratch table ``_alembic_tmp_<table>``: the moment a
# kill left a new store that no later command could open.
CRASH_MID_MIGRATION = textwrap.dedent("""
    import os, sys
    import sqlalchemy
    from clrsearch.tracking import store

    @sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "after_cursor_execute")
    def die(connection, cursor, statement, *rest):
        if "_alembic_tmp_" in statement:
            os._exit(9)

    os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///" + sys.argv[1]
    store.check_store()
""")


@pytest.mark.slow
def test_a_store_creation_killed_mid_migration_leaves_no_store_and_the_next_check_creates_it(tmp_path, monkeypatch):
    path = tmp_path / "mlflow.db"
    crashed = subprocess.run([sys.executable, "-c", CRASH_MID_MIGRATION, str(path)], capture_output=True, text=True,
                             timeout=120)
    assert crashed.returncode == 9, crashed.stderr
    assert not path.exists()  # no store rather than half of one
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{path}")
    store.check_store()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "mlflow.db.lock"]  # the leftover removed
    with contextlib.closing(sqlite3.connect(path)) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "runs" in tables and not any(name.startswith("_alembic_tmp_") for name in tables)
    client = MlflowClient(tracking_uri=f"sqlite:///{path}")
    run = client.create_run(client.create_experiment("after"))
    client.set_terminated(run.info.run_id)
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_a_new_store_is_built_beside_it_and_renamed_into_place(tmp_path, monkeypatch, mlflow_template):
    path = tmp_path / "mlflow.db"
    (tmp_path / "mlflow.db.creating").write_bytes(b"half a store left by a killed creation")
    (tmp_path / "mlflow.db.creating-journal").write_bytes(b"its journal")
    built = []

    def migrated(uri, temporary):  # MLflow's migration, as a copy of the migrated template
        built.append((temporary, path.exists()))
        shutil.copyfile(mlflow_template, temporary)

    monkeypatch.setattr(store, "_migrated", migrated)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{path}")
    store.check_store()
    assert built == [(tmp_path / "mlflow.db.creating", False)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "mlflow.db.lock"]
    assert path.read_bytes() == mlflow_template.read_bytes()
    store.check_store()  # an existing store is not built again
    assert len(built) == 1


# A child that opens the new study storage argv[1] as a study does and dies (as under SIGKILL) right after the
# first statement that starts with argv[2].
CRASH_IN_OPTUNA_CREATION = textwrap.dedent("""
    import os, sys
    import sqlalchemy
    from clrsearch.search import queue

    @sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "after_cursor_execute")
    def die(connection, cursor, statement, *rest):
        if " ".join(statement.split()).startswith(sys.argv[2]):
            os._exit(9)

    url = "sqlite:///" + sys.argv[1]
    with queue.study_lock(url):
        queue.open_storage(url)
""")


@pytest.mark.slow
@pytest.mark.parametrize("statement", ["CREATE TABLE studies", "CREATE TABLE trial_values", "INSERT INTO version_info",
                                       "CREATE TABLE alembic_version"])
def test_a_study_storage_whose_creation_was_killed_is_not_there_and_the_next_command_makes_it(tmp_path, statement):
    path = tmp_path / "studies.db"
    crashed = subprocess.run([sys.executable, "-c", CRASH_IN_OPTUNA_CREATION, str(path), statement],
                             capture_output=True, text=True, timeout=120)
    assert crashed.returncode == 9, crashed.stderr  # Optuna creates its tables statement by statement
    assert not path.exists()  # no storage rather than part of one
    url = f"sqlite:///{path}"
    with queue.study_lock(url):
        created = optuna.create_study(study_name="after", storage=queue.open_storage(url))
    created.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    assert [t.state for t in optuna.load_study(study_name="after", storage=url).get_trials()] == [
        TrialState.COMPLETE] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["studies.db", "studies.db.lock"]  # the leftover removed


def test_a_study_storage_whose_creation_failed_is_not_there_and_the_next_open_makes_it(tmp_path, monkeypatch):
    path = tmp_path / "studies.db"
    url = f"sqlite:///{path}?timeout=30"
    built = []

    def fails_halfway(url, temporary):  # one of Optuna's tables, then an error
        built.append(temporary)
        with contextlib.closing(sqlite3.connect(temporary)) as connection:
            connection.execute("CREATE TABLE studies (study_id INTEGER PRIMARY KEY)")
        raise RuntimeError("disk I/O error")

    with monkeypatch.context() as patched:
        patched.setattr(queue, "_built", fails_halfway)
        with queue.study_lock(url), pytest.raises(UsageError, match="cannot open the storage .*: disk I/O error"):
            queue.open_storage(url)
    assert built == [tmp_path / "studies.db.creating"] and built[0].exists() and not path.exists()
    with queue.study_lock(url):
        study = optuna.create_study(study_name="after", storage=queue.open_storage(url))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    assert [t.state for t in optuna.load_study(study_name="after", storage=url).get_trials()] == [TrialState.COMPLETE]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["studies.db", "studies.db.lock"]
    with contextlib.closing(sqlite3.connect(path)) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"studies", "trials", "version_info", "alembic_version"} <= tables
