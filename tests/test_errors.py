"""The one exception users see as a message (clrsearch.errors), and how messages show URLs and errors."""

import json
import os
import subprocess
import sys

import optuna
import pytest
import sqlalchemy

from clrsearch.errors import UsageError, first_line, redact
from helpers import TINY_STUDY, copy_store


@pytest.mark.parametrize("url, shown", [
    ("postgresql://someone:secret@db.example:5432/studies", "postgresql://someone@db.example:5432/studies"),
    ("postgresql+psycopg://someone:p@ss:w0rd@host/db", "postgresql+psycopg://someone@host/db"),
    ("http://user:token@127.0.0.1:5000", "http://user@127.0.0.1:5000"),
    ("postgresql://someone@host/db", "postgresql://someone@host/db"),
    ("sqlite:///studies/clrsearch.db", "sqlite:///studies/clrsearch.db"),
    ("not a url @ all", "not a url @ all"),
    ("http://host:5000/path@x", "http://host:5000/path@x"),
    ("no answer from postgresql://u:pw@h/db or http://v:t@k:1 (refused)",
     "no answer from postgresql://u@h/db or http://v@k:1 (refused)"),
    ("postgres://u:pw@h/db", "postgres://u@h/db"),
    ("postgresql://u@h/db?password=pw&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require"),
    ("postgresql://h/db?sslmode=require&PASSWORD=pw", "postgresql://h/db?sslmode=require&PASSWORD=***"),
    ("python -m clrsearch.coarse --storage postgresql://u:pw@h/db --n-trials 4",
     "python -m clrsearch.coarse --storage postgresql://u@h/db --n-trials 4"),
])
def test_redact_drops_the_password_and_nothing_else(url, shown):
    assert redact(url) == shown


def test_first_line_of_an_error_or_its_type_when_it_says_nothing():
    assert first_line(ValueError("bad value\nmore detail\n")) == "bad value"
    assert first_line(ValueError("\n  indented first line\nsecond")) == "indented first line"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(UsageError("   ")) == "UsageError"


PASSWORD = "s3cret-Pw-7f3a"


@pytest.mark.slow
@pytest.mark.postgres
def test_a_study_on_a_url_with_a_password_writes_it_nowhere(tmp_path, tiny_data, postgres_url, mlflow_template):
    """A small coarse study on PostgreSQL, the password in the URL (the test server trusts loopback, so any
    password is accepted), then a command that cannot reach the server: the password is in no file of the
    MLflow store or its artifacts, in no Optuna attribute, and in no line either command printed."""
    url = sqlalchemy.engine.make_url(postgres_url).set(password=PASSWORD).render_as_string(hide_password=False)
    unreachable = sqlalchemy.engine.make_url(url).set(port=1).render_as_string(hide_password=False)
    env = {**os.environ, "MLFLOW_TRACKING_URI": copy_store(mlflow_template, tmp_path)}
    outputs = []
    for storage, status in ((url, 0), (unreachable, 2)):
        done = subprocess.run([sys.executable, "-m", "clrsearch.coarse", "--data-dir", str(tiny_data), *TINY_STUDY,
                               "--n-trials", "2", "--storage", storage], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == status, done.stderr
        outputs += [done.stdout, done.stderr]
    assert "cannot reach the storage" in outputs[-1]
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.name == "mlflow.db" for path in files) and any(path.suffix == ".png" for path in files)
    assert [str(path) for path in files if PASSWORD.encode() in path.read_bytes()] == []
    storage = optuna.storages.RDBStorage(url)
    study = optuna.load_study(study_name="coarse", storage=storage)
    attrs = [study.user_attrs, storage.get_study_system_attrs(storage.get_study_id_from_name("coarse"))]
    attrs += [[t.params, t.user_attrs, t.system_attrs] for t in study.trials]
    assert len(study.trials) == 2 and PASSWORD not in json.dumps(attrs, default=str)
    assert [text for text in outputs if PASSWORD in text] == []
