"""The environment variables of the commands (clrsearch.cli.environment): read once, at the command, into the
values the library takes; a bad value exits 2 with one line, also in a fresh process."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clrsearch.cli import environment
from clrsearch.config import WORKER_TIMING
from clrsearch.errors import UsageError
from helpers import TINY_STUDY, write_tiny_cifar


# ----------------------------------------------------------------------------- the data folder

def test_the_data_folder_is_the_flag_else_the_variable_else_the_user_cache(tmp_path):
    environ = {"CLRSEARCH_DATA": "/data/cifar", "XDG_CACHE_HOME": "/cache"}
    assert environment.data_dir("/given", environ) == "/given"
    assert environment.data_dir(None, environ) == "/data/cifar"
    assert environment.data_dir("", {"CLRSEARCH_DATA": "", "XDG_CACHE_HOME": "/cache"}) == "/cache/clrsearch"
    assert environment.data_dir(None, {}) == str(Path.home() / ".cache" / "clrsearch")


# ----------------------------------------------------------------------------- heartbeat and grace period

def test_timing_comes_from_the_environment_or_the_defaults():
    assert environment.worker_timing({}) == WORKER_TIMING
    timing = environment.worker_timing({"CLRSEARCH_HEARTBEAT_SECONDS": "0.5", "CLRSEARCH_GRACE_SECONDS": "2"})
    assert (timing.heartbeat_seconds, timing.grace_seconds) == (0.5, 2.0)
    assert (timing.stop_seconds, timing.max_deaths) == (WORKER_TIMING.stop_seconds, WORKER_TIMING.max_deaths)


@pytest.mark.parametrize("heartbeat, grace, message", [
    ("0", "20", "CLRSEARCH_HEARTBEAT_SECONDS must be a number of seconds > 0, not '0'"),
    ("soon", "20", "CLRSEARCH_HEARTBEAT_SECONDS must be a number of seconds > 0, not 'soon'"),
    ("5", "inf", "CLRSEARCH_GRACE_SECONDS must be a number of seconds > 0, not 'inf'"),
    ("5", "5", "CLRSEARCH_GRACE_SECONDS (5) must be longer than the heartbeat interval (5 s)"),
])
def test_bad_timing_is_a_usage_error_naming_the_variable(heartbeat, grace, message):
    with pytest.raises(UsageError) as error:
        environment.worker_timing({"CLRSEARCH_HEARTBEAT_SECONDS": heartbeat, "CLRSEARCH_GRACE_SECONDS": grace})
    assert message in str(error.value)


# ----------------------------------------------------------------------------- sharing the cores

def test_the_blas_threads_and_the_slot_folder():
    assert environment.blas_threads({}) is None and environment.blas_threads({"CLRSEARCH_BLAS_THREADS": " "}) is None
    assert environment.blas_threads({"CLRSEARCH_BLAS_THREADS": "3"}) == 3
    for bad in ("two", "0", "1.5"):
        with pytest.raises(UsageError, match="CLRSEARCH_BLAS_THREADS must be a whole number of threads >= 1"):
            environment.blas_threads({"CLRSEARCH_BLAS_THREADS": bad})
    assert environment.core_slots({}) is None and environment.core_slots({"CLRSEARCH_CORE_SLOTS": "/s"}) == "/s"


# ----------------------------------------------------------------------------- commands in fresh processes

def command(module, argv, folder, **variables):
    """``python -m <module> argv`` in ``folder``, with its own MLflow store and ``variables`` set."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("MLFLOW_", "CLRSEARCH_"))}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{folder}/mlflow.db", MLFLOW_DISABLE_TELEMETRY="true",
               XDG_CACHE_HOME=str(folder / "cache"), **variables)
    return subprocess.run([sys.executable, "-m", module, *argv], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_data_command_finds_the_folder_of_the_variable(tmp_path):
    data = write_tiny_cifar(tmp_path / "data", n_per_batch=20, n_test=20)
    done = command("clrsearch.data", [], tmp_path, CLRSEARCH_DATA=str(data.parent))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == str(data)


@pytest.mark.parametrize("variables, message", [
    ({"CLRSEARCH_GRACE_SECONDS": "soon"},
     "error: $CLRSEARCH_GRACE_SECONDS must be a number of seconds > 0, not 'soon'; unset it for 20"),
    ({"CLRSEARCH_HEARTBEAT_SECONDS": "30"},
     "error: CLRSEARCH_GRACE_SECONDS (20) must be longer than the heartbeat interval (30 s)"),
    ({"CLRSEARCH_BLAS_THREADS": "many"},
     "error: $CLRSEARCH_BLAS_THREADS must be a whole number of threads >= 1, not 'many'; "
     "unset it to share the cores with other studies"),
])
def test_a_bad_variable_stops_a_study_with_one_line_and_status_2(tmp_path, variables, message):
    done = command("clrsearch.coarse", ["--data-dir", str(tmp_path / "nowhere"), "--quiet"], tmp_path, **variables)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [message]
    assert not (tmp_path / "studies").exists() and not (tmp_path / "mlflow.db").exists()  # refused before either


@pytest.mark.slow
def test_a_study_finds_the_data_of_the_variable_and_takes_the_timing_of_the_environment(tmp_path):
    data = write_tiny_cifar(tmp_path / "data")
    done = command("clrsearch.coarse", [*TINY_STUDY, "--n-trials", "2", "--n-seeds", "1", "--json"], tmp_path,
                   CLRSEARCH_DATA=str(data), CLRSEARCH_HEARTBEAT_SECONDS="0.5", CLRSEARCH_GRACE_SECONDS="2",
                   CLRSEARCH_CORE_SLOTS=str(tmp_path / "slots"))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert len(result["trials"]) == 2
    assert [p.name for p in (tmp_path / "slots").iterdir()] == ["slot-0.lock"]  # the slot of the study, let go
