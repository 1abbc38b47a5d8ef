"""Shared fixtures: a tiny CIFAR-10 copy in the official on-disk format, no network, MLflow
stores and Optuna storages copied from templates made once, a throwaway PostgreSQL server, a tiny
coarse and fine study run once for the tests that browse their results.

The references the fixtures and tests build on are in :mod:`helpers`. The developer
tools of ``tools/`` are imported by the tests as top-level modules (``import bench``).
"""
import sys
import urllib.error
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import helpers  # noqa: E402  (after the path: helpers lives beside this file)


@pytest.fixture
def tiny_cifar(tmp_path) -> Path:
    """A ``cifar-10-batches-py`` folder of 5 x 200 training and 200 test images."""
    return helpers.write_tiny_cifar(tmp_path)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """One tiny CIFAR-10 folder of the default size, shared by the tests that only read it."""
    return helpers.write_tiny_cifar(tmp_path_factory.mktemp("data"))


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No download reaches the network (file: URLs still open) and the user's cache and
    ``$CLRSEARCH_DATA`` are out of reach: the cache is a folder of ``tmp_path``."""
    from clrsearch.data import download

    def refuse(url, timeout):
        if not url.startswith("file:"):
            raise urllib.error.URLError("network disabled in tests")
        return download.urllib.request.urlopen(url, timeout=timeout)

    monkeypatch.setattr(download, "_open_url", refuse)
    monkeypatch.delenv("CLRSEARCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


# ----------------------------------------------------------------------------- stores


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, created once: copying it saves each test MLflow's ~4 s of migrations."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="session")
def optuna_template(tmp_path_factory) -> Path:
    """An Optuna SQLite storage with its tables and no study, created once: a copy opens in a tenth of the time."""
    from optuna.storages import RDBStorage

    path = tmp_path_factory.mktemp("optuna-template") / "studies.db"
    RDBStorage(f"sqlite:///{path}").engine.dispose()
    return path


@pytest.fixture
def study_url(tmp_path, optuna_template) -> str:
    """URL of a new, empty Optuna SQLite storage in ``tmp_path`` (a copy of the template)."""
    return helpers.copy_storage(optuna_template, tmp_path / "studies.db")


@pytest.fixture(scope="module")
def store(tmp_path_factory, mlflow_template):
    """A fresh tracking store per test module (a copy of the template), set as the
    tracking URI and working folder while the module's tests run."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow")
    uri = helpers.copy_store(mlflow_template, folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.chdir(folder)
        yield MlflowClient()


@pytest.fixture(scope="session")
def postgres_server():
    """URL of a PostgreSQL server's ``postgres`` database, for tests that share a study between workers.

    ``$CLRSEARCH_TEST_POSTGRES`` when set (``.ci/run`` sets it); otherwise a
    throwaway cluster started here and stopped after the session. Skips the
    tests when neither is possible.
    """
    import os
    import tempfile

    import pgcluster

    url = os.environ.get("CLRSEARCH_TEST_POSTGRES")
    if url:
        yield url
        return
    if pgcluster.bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql, or set CLRSEARCH_TEST_POSTGRES)")
    try:
        import sqlalchemy

        sqlalchemy.engine.make_url("postgresql://").get_dialect().import_dbapi()
    except ImportError:
        pytest.skip("no PostgreSQL driver for SQLAlchemy (pip install -e '.[test]')")
    folder = tempfile.mkdtemp(prefix="clrsearch-postgres-")  # not under pytest's tmp: the server user must reach it
    try:
        yield pgcluster.start(folder)
    finally:
        pgcluster.stop(folder)


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """URL of a new, empty database on the test server."""
    import uuid

    import pgcluster

    return pgcluster.create_database(postgres_server, f"clrsearch_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def tracked_tiny_cifar(tmp_path, monkeypatch, mlflow_template) -> Path:
    """``tmp_path`` as the working directory, with an MLflow store of its own; returns a tiny CIFAR-10 folder in it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", helpers.copy_store(mlflow_template, tmp_path))
    return helpers.write_tiny_cifar(tmp_path / "data")


@pytest.fixture(scope="session")
def tiny_studies(tmp_path_factory, mlflow_template, optuna_template):
    """A tiny coarse study of 3 trials, then a fine one of 2 (lambda 0 and 0.01) with its final model registered,
    run once in a folder of their own: ``folder``, the MLflow tracking URI ``store``, the Optuna ``storage``
    (the default ``studies/clrsearch.db`` of the folder) and ``coarse_trials``."""
    from clrsearch import coarse, fine

    folder = tmp_path_factory.mktemp("tiny-studies")
    studies = SimpleNamespace(folder=folder, store=helpers.copy_store(mlflow_template, folder),
                              storage=helpers.copy_storage(optuna_template, folder / "studies" / "clrsearch.db"),
                              coarse_trials=3)
    args = ["--data-dir", str(helpers.write_tiny_cifar(folder / "data")), "--storage", studies.storage,
            *helpers.TINY_STUDY]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("MLFLOW_TRACKING_URI", studies.store)
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        assert coarse.main(args + ["--n-trials", str(studies.coarse_trials)]) == 0
        assert fine.main(args + ["--grid", "0,0.01", *helpers.TINY_FINE]) == 0
    return studies


@pytest.fixture(scope="session")
def tiny_ensemble(tmp_path_factory):
    """Two tiny networks trained together on a tiny CIFAR-10 copy (100 images per batch, 60 test images), as a
    final model is made of: the ``data`` config, its ``splits``, the training ``result``, the networks ``nets``
    and the raw test ``rows`` (N, D) uint8 with their ``labels`` (N,). Shared: read it, never change it."""
    from clrsearch.config import DataConfig, TrainConfig
    from clrsearch.data import load_batch, load_splits
    from clrsearch.nn import network
    from clrsearch.nn.trainer import train

    folder = helpers.write_tiny_cifar(tmp_path_factory.mktemp("ensemble-data"), n_per_batch=100, n_test=60)
    data = DataConfig("batch1", data_dir=str(folder))
    splits = load_splits(data)
    result = train(splits, TrainConfig(n_batch=20, cycles=1, n_s=10, hidden=8), [0.01, 0.01],
                   [1, 2])
    rows, labels = load_batch(folder / "test_batch")
    return SimpleNamespace(data=data, splits=splits, result=result, rows=rows, labels=labels,
                           nets=[network.member(result.params, k) for k in range(2)])
