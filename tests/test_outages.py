"""Outages ridden out: retries on a fake clock, the errors told apart, a full disk in one line; and (slow) a
study that lives through a restart of its PostgreSQL server and of its MLflow tracking server."""

import errno
import sqlite3
import subprocess
import sys
import time

import optuna
import pytest
import requests
import sqlalchemy
from mlflow.exceptions import MlflowException

from clrsearch import outages
from clrsearch.errors import UsageError
from helpers import assert_one_line_naming


class FakeClock:
    """time.monotonic and time.sleep of a clock that moves only when slept on."""

    def __init__(self):
        self.now = 100.0
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def refused():
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))


def failing(n, error=refused):
    """A call that raises ``error()`` n times, then returns "done"; its calls are counted in ``calls``."""
    calls = []

    def call():
        calls.append(1)
        if len(calls) <= n:
            raise error()
        return "done"

    call.calls = calls
    return call


def test_a_call_failing_three_times_waits_half_a_second_doubling_and_is_said_to_be_back(capsys):
    clock, call = FakeClock(), failing(3)
    what = "the storage postgresql://me:secret@db/s"
    assert outages.ride_out(call, 60, what, clock=clock, sleep=clock.sleep) == "done"
    assert clock.slept == [0.5, 1.0, 2.0] and len(call.calls) == 4
    err = capsys.readouterr().err
    assert "the storage postgresql://me@db/s unreachable (" in err and "retrying for up to 60 s" in err
    assert "reachable again after 4 s" in err and "secret" not in err


def test_past_the_bound_one_line_names_the_server_without_its_password_and_the_fix():
    clock, call = FakeClock(), failing(10 ** 6)
    with pytest.raises(UsageError) as raised:
        outages.ride_out(call, 30, "the storage postgresql://me:secret@db/s", clock=clock, sleep=clock.sleep)
    # 0.5 + 1 + 2 + 4 + 5 + 5 + 5 + 5 = 27.5, then the last 2.5 s up to the bound: waits capped at 5 s
    assert clock.slept == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0, 2.5]
    assert_one_line_naming(raised, "cannot reach the storage postgresql://me@db/s for 30 s",
                           "run the same command again")
    assert "secret" not in str(raised.value)


@pytest.mark.parametrize("error", [lambda: ValueError("bad"), lambda: sqlalchemy.exc.OperationalError(
    "INSERT", {}, sqlite3.OperationalError("database or disk is full")),
    lambda: MlflowException("RESOURCE_DOES_NOT_EXIST: run 'x' not found"), lambda: UsageError("no")])
def test_an_error_that_is_not_an_outage_is_raised_at_once(error):
    clock, call = FakeClock(), failing(1, error)
    with pytest.raises(type(error())):
        outages.ride_out(call, 60, "the storage", clock=clock, sleep=clock.sleep)
    assert clock.slept == [] and len(call.calls) == 1


@pytest.mark.parametrize("error, outage", [
    (refused(), True),
    (sqlalchemy.exc.InterfaceError("SELECT 1", {}, Exception("connection already closed")), True),
    (sqlalchemy.exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError("database is locked")), False),
    (requests.exceptions.ConnectionError("Connection refused"), True),
    (MlflowException("API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/create failed with exception "
                     "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded"), True),
    (MlflowException("API request to endpoint /api/2.0/mlflow/runs/get failed with error code 404 != 200"), False),
    (OSError(errno.ENOSPC, "No space left on device"), False),
])
def test_outages_are_told_from_refusals(error, outage):
    assert outages.is_outage(error) is outage


def test_an_outage_raised_while_handling_another_error_counts():
    try:
        try:
            raise refused()
        except sqlalchemy.exc.OperationalError:
            raise RuntimeError("while giving back")
    except RuntimeError as error:
        assert outages.is_outage(error)


def test_once_patience_gave_up_the_next_call_is_tried_once_and_a_patient_client_sends_nothing():
    patience = outages.Patience(0)
    with pytest.raises(UsageError):
        patience.ride_out(failing(5), "the storage")
    assert patience.gave_up
    calls = []

    class Client:
        tracking_uri = "http://127.0.0.1:9"

        def set_tag(self, *args):
            calls.append(args)
            raise requests.exceptions.ConnectionError("refused")

    client = outages.PatientClient(Client(), 0)
    assert client.tracking_uri == "http://127.0.0.1:9"
    with pytest.raises(UsageError, match="cannot reach the tracking server http://127.0.0.1:9"):
        client.set_tag("run", "k", "v")
    with pytest.raises(MlflowException, match="not sent"):
        client.set_tag("run", "k", "v")
    assert len(calls) == 1


def test_a_full_disk_is_one_line_naming_the_folder_of_the_file_or_of_the_stores():
    with pytest.raises(UsageError) as raised, outages.disk_full_in_one_line(["/stores"]):
        raise OSError(errno.ENOSPC, "No space left on device", "/tmp/full/trial-3/confusion.png")
    assert_one_line_naming(raised, "no space left on the disk of /tmp/full/trial-3", "free space, then run the same "
                                                                                     "command again")
    with pytest.raises(UsageError, match="disk of /stores: free space"), outages.disk_full_in_one_line(["/stores"]):
        raise sqlalchemy.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
    with pytest.raises(OSError), outages.disk_full_in_one_line(["/stores"]):
        raise OSError(errno.EACCES, "Permission denied", "/x")


# ----------------------------------------------------------------------------- real servers


STUDY = ["--n-trials", "4", "--trials-per-population", "1", "--n-seeds", "1", "--n-s", "150", "--n-batch", "20",
         "--hidden", "32", "--eval-train-size", "100", "--val-size", "200", "--evals-per-cycle", "1", "--quiet",
         "--outage-seconds", "60"]


def wait_for(predicate, what, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def states(url):
    """Trial states of study "coarse" in ``url``, read as a bystander; [] while the server is down or before."""
    try:
        return [t.state.name for t in optuna.load_study(study_name="coarse", storage=url).get_trials()]
    except Exception:
        return []


def start_study(tmp_path, tiny_data, storage, tracking_uri):
    """The tiny study, started; MLflow itself does not retry a request (the study must ride the outage out)."""
    import os

    env = {"MLFLOW_TRACKING_URI": tracking_uri, "CLRSEARCH_HEARTBEAT_SECONDS": "1", "CLRSEARCH_GRACE_SECONDS": "3",
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}

    return subprocess.Popen([sys.executable, "-m", "clrsearch.coarse", "--data-dir", str(tiny_data), "--storage",
                             storage, *STUDY], cwd=tmp_path, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def assert_each_slot_trained_once(url):
    trials = optuna.load_study(study_name="coarse", storage=url).get_trials()
    assert sorted(t.state.name for t in trials) == ["COMPLETE"] * 4  # no trial failed, given back or trained again
    assert sorted(t.user_attrs["slot"] for t in trials) == [0, 1, 2, 3]


@pytest.mark.slow
@pytest.mark.postgres
def test_a_study_lives_through_a_restart_of_its_postgresql_server_training_nothing_twice(tmp_path, tiny_data):
    import tempfile

    import faults

    pytest.importorskip("psycopg2")
    # Not under pytest's tmp: the server's user must reach the folder.
    with faults.postgres_cluster(tempfile.mkdtemp(prefix="clrsearch-outage-")) as cluster:
        url = cluster.url
        process = start_study(tmp_path, tiny_data, url, f"sqlite:///{tmp_path}/mlflow.db")
        wait_for(lambda: "COMPLETE" in states(url) and "RUNNING" in states(url), "a trial done and one running")
        cluster.pause()
        time.sleep(6)  # the running population finishes meanwhile: it is told once the server is back
        cluster.resume()
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        assert "unreachable" in err and "reachable again" in err
        assert_each_slot_trained_once(url)


@pytest.mark.slow
def test_a_study_lives_through_a_restart_of_its_tracking_server(tmp_path, tiny_data):
    import faults

    storage = f"sqlite:///{tmp_path}/studies.db"
    with faults.tracking_server(tmp_path / "mlflow") as server:
        process = start_study(tmp_path, tiny_data, storage, server.url)
        wait_for(lambda: "COMPLETE" in states(storage) and "RUNNING" in states(storage), "a trial done, one running")
        server.kill()
        time.sleep(6)
        server.start()
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        assert "unreachable" in err and "reachable again" in err
        assert_each_slot_trained_once(storage)
        assert faults.server_runs(server) == {"RUNNING": 0, "trial runs": 4}
