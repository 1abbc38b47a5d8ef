"""Shared fixtures: a tiny CIFAR-10 copy in the official on-disk format, MLflow
stores copied from one migrated template, a throwaway PostgreSQL server.

In the tiny copy each class has its own random mean image; an image is its class mean plus
pixel noise, so a two-layer network learns it well above chance in a few
epochs, but not perfectly from 200 images.
"""
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

D, C = 3072, 10
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")
PATTERN_AMPLITUDE = 10.0  # pixel levels (0..255) of the class mean around grey
NOISE_STD = 50.0  # pixel levels of the per-image noise


def _images(rng, patterns, n):
    """Balanced labels (n,) and uint8 rows (n, D) drawn around the class patterns (C, D)."""
    labels = rng.permutation(np.arange(n) % C)  # (n,)
    noise = rng.standard_normal((n, D), dtype=np.float32)  # (n, D)
    rows = 128 + PATTERN_AMPLITUDE * patterns[labels] + NOISE_STD * noise  # (n, D)
    return np.clip(np.rint(rows), 0, 255).astype(np.uint8), labels


def _dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_tiny_cifar(dest, n_per_batch=200, n_test=200, seed=0) -> Path:
    """Write ``dest/cifar-10-batches-py`` as the official python files lay it out.

    Parameters
    ----------
    dest : path
        Parent folder, created if needed.
    n_per_batch : int
        Images in each of ``data_batch_1`` .. ``data_batch_5``.
    n_test : int
        Images in ``test_batch``.
    seed : int
        Seed of the class patterns, labels and noise.

    Returns
    -------
    Path
        The ``cifar-10-batches-py`` folder.
    """
    rng = np.random.default_rng(seed)
    folder = Path(dest) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    patterns = rng.standard_normal((C, D)).astype(np.float32)  # (C, D)
    batches = [(f"data_batch_{i}", f"training batch {i} of 5", n_per_batch) for i in range(1, 6)]
    batches.append(("test_batch", "testing batch 1 of 1", n_test))
    for name, label, n in batches:
        rows, labels = _images(rng, patterns, n)
        _dump(folder / name, {
            b"batch_label": label.encode(),
            b"labels": [int(v) for v in labels],
            b"data": rows,
            b"filenames": [f"{name}_{k:05d}.png".encode() for k in range(n)],
        })
    _dump(folder / "batches.meta", {
        b"label_names": [n.encode() for n in CLASS_NAMES],
        b"num_cases_per_batch": n_per_batch,
        b"num_vis": D,
    })
    return folder


@pytest.fixture
def tiny_cifar(tmp_path) -> Path:
    """A ``cifar-10-batches-py`` folder of 5 x 200 training and 200 test images."""
    return write_tiny_cifar(tmp_path)


# ----------------------------------------------------------------------------- stores


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, created once: copying it saves each test MLflow's ~4 s of migrations."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory, mlflow_template):
    """A fresh tracking store per test module (a copy of the template), set as the
    tracking URI and working folder while the module's tests run."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow")
    shutil.copyfile(mlflow_template, folder / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder}/mlflow.db")
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
