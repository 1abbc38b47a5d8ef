"""SQLite stores in write-ahead-log mode (clrsearch.sqlite): the mode the file keeps, the opt-out, a
commit that survives its process being killed, and a store that is one file again once its command ends."""
import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from clrsearch import sqlite
from clrsearch.errors import UsageError

WRITER = textwrap.dedent("""
    import os, signal, sys
    from clrsearch import sqlite
    sqlite.use_write_ahead_log()
    from mlflow.tracking import MlflowClient
    client = MlflowClient(sys.argv[1])
    run = client.create_run(client.create_experiment("killed"))
    client.log_metric(run.info.run_id, "val_accuracy", 0.5, step=3)
    print(run.info.run_id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint
""")


ENDING = textwrap.dedent("""
    import sys
    from clrsearch import sqlite
    sqlite.use_write_ahead_log()
    from mlflow.tracking import MlflowClient
    client = MlflowClient(sys.argv[1])
    run = client.create_run(client.create_experiment("ended"))
    client.log_metric(run.info.run_id, "val_accuracy", 0.5, step=3)
    from clrsearch.cli.args import exit_now
    exit_now(0)  # as a study command ends: os._exit, after closing the stores
""")


def journal_mode(path):
    with sqlite3.connect(path) as connection:
        return connection.execute("PRAGMA journal_mode").fetchone()[0]


def test_a_store_opened_through_sqlalchemy_keeps_the_write_ahead_log_and_a_killed_writer_loses_nothing(tmp_path):
    db = tmp_path / "mlflow.db"
    writer = subprocess.run([sys.executable, "-c", WRITER, f"sqlite:///{db}"], capture_output=True, text=True,
                            timeout=300)
    assert writer.returncode == -9, writer.stderr
    run_id = writer.stdout.split()[0]
    assert (tmp_path / "mlflow.db-wal").exists()  # the commits are in the log, not yet in the file
    assert journal_mode(db) == "wal"
    from mlflow.tracking import MlflowClient
    history = MlflowClient(f"sqlite:///{db}").get_metric_history(run_id, "val_accuracy")
    assert [(m.step, m.value) for m in history] == [(3, 0.5)]


def test_a_command_that_ends_leaves_each_store_one_file_holding_everything(tmp_path):
    db = tmp_path / "mlflow.db"
    subprocess.run([sys.executable, "-c", ENDING, f"sqlite:///{db}"], check=True, timeout=300, capture_output=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mlflow.db"]  # no -wal, no -shm left
    alone = tmp_path / "copy" / "mlflow.db"
    alone.parent.mkdir()
    alone.write_bytes(db.read_bytes())  # the file on its own, as a user copies it
    with sqlite3.connect(alone) as connection:
        assert connection.execute("select key, value, step from metrics").fetchall() == [("val_accuracy", 0.5, 3)]


def test_the_default_journal_is_kept_on_request(tmp_path, monkeypatch):
    monkeypatch.setenv(sqlite.JOURNAL_VARIABLE, "default")
    assert sqlite.use_write_ahead_log() is False
    script = ("import sys; from clrsearch import sqlite; assert not sqlite.use_write_ahead_log();"
              "import sqlalchemy; sqlalchemy.create_engine(sys.argv[1]).connect().close()")
    db = tmp_path / "plain.db"
    subprocess.run([sys.executable, "-c", script, f"sqlite:///{db}"], check=True, timeout=120,
                   env={**os.environ, sqlite.JOURNAL_VARIABLE: "default"})
    sqlite3.connect(db).execute("create table t (x)").connection.commit()
    assert journal_mode(db) == "delete"


def test_an_unknown_journal_choice_is_a_usage_error(monkeypatch):
    monkeypatch.setenv(sqlite.JOURNAL_VARIABLE, "fast")
    with pytest.raises(UsageError, match="must be wal or default"):
        sqlite.use_write_ahead_log()
