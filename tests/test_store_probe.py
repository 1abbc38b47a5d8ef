"""A tracking server that is down is reported at once (clrsearch.tracking.store.check_store): a refused
connection, a server that never answers and one that answers only errors each end in one line naming the
server within 10 s, MLflow's retry settings come back after the check, and the coarse command exits 2.
A server that wants a login, refuses one or refuses the host name says so in one line with its fix; a study
logs through a real ``mlflow server --app-name basic-auth`` with MLflow's credential variables."""

import http.server
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from clrsearch.errors import UsageError
from clrsearch.tracking import store
from helpers import copy_store, write_tiny_cifar

FIX = ("; point MLFLOW_TRACKING_URI at a running server (http://HOST:5000) or a database, "
       "or unset it for sqlite:///mlflow.db")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_server():
    """A port that accepts connections (the kernel's backlog) but never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def failing_server():
    """An HTTP server answering every request with 503, which MLflow's client retries by default."""
    class Failing(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def checked(monkeypatch, uri):
    """check_store against ``uri``: (message, seconds)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    started = time.monotonic()
    with pytest.raises(UsageError) as error:
        store.check_store("probe")
    return str(error.value), time.monotonic() - started


def test_a_refused_connection_is_one_line_naming_the_server_without_its_password(monkeypatch):
    port = free_port()
    message, seconds = checked(monkeypatch, f"http://me:secret@127.0.0.1:{port}")
    assert message == (f"cannot use the MLflow tracking store http://me@127.0.0.1:{port} "
                       f"(connection refused by 127.0.0.1:{port})" + FIX)
    assert seconds < 2


@pytest.mark.slow
def test_a_server_that_never_answers_is_reported_after_the_probe_timeout(monkeypatch, silent_server):
    message, seconds = checked(monkeypatch, silent_server)
    host = silent_server.removeprefix("http://")
    assert message == (f"cannot use the MLflow tracking store {silent_server} "
                       f"(no answer from {host} within {store.PROBE_SECONDS:g} s)" + FIX)
    assert store.PROBE_SECONDS - 0.5 < seconds < 10


def test_a_server_answering_only_errors_is_asked_once_without_retries(monkeypatch, failing_server):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)  # MLflow's default: 7, with back-off
    message, seconds = checked(monkeypatch, failing_server)
    assert message.startswith(f"cannot use the MLflow tracking store {failing_server} (") and "\n" not in message
    assert seconds < 10
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the study keeps MLflow's retries


def test_the_check_leaves_mlflows_retry_settings_alone(monkeypatch, failing_server):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")  # with back-off: about 10 s against this server
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "90")
    message, seconds = checked(monkeypatch, failing_server)
    assert "the server answered HTTP 503" in message and seconds < 5
    assert (os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"], os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"]) == ("3", "90")


def test_a_database_store_is_not_probed(monkeypatch, tmp_path, mlflow_template):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", copy_store(mlflow_template, tmp_path))
    monkeypatch.setattr(store, "probe_server", lambda uri: pytest.fail("probed a database"))
    store.check_store("probe")


@pytest.mark.slow
def test_the_coarse_command_against_a_closed_port_exits_2_with_one_line_within_10_s(tmp_path):
    folder = write_tiny_cifar(tmp_path / "data")
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}", "CLRSEARCH_DATA": str(folder)}
    env.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "clrsearch.coarse"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    seconds = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stdout == ""
    assert done.stderr.startswith(f"error: cannot use the MLflow tracking store http://127.0.0.1:{port} "
                                  f"(connection refused by 127.0.0.1:{port})")
    assert seconds < 10


@pytest.fixture
def login_server():
    """An HTTP server that wants the basic-auth login alice / pw-7f3a (401 otherwise) and answers 404 (no such
    experiment) to her, or 403 with MLflow's own words to any request whose Host header is not 127.0.0.1."""
    import base64

    good = "Basic " + base64.b64encode(b"alice:pw-7f3a").decode()

    class Login(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if not self.headers["Host"].startswith("127.0.0.1"):
                status, body = 403, b"Invalid Host header - possible DNS rebinding attack detected"
            elif self.headers.get("Authorization") != good:
                status, body = 401, b"You are not authenticated."
            else:
                status, body = 404, b'{"error_code": "RESOURCE_DOES_NOT_EXIST"}'
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Login)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("user, password, expected", [
    (None, None, "requires a login (HTTP 401); set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
    ("alice", "wrong-pw", "refuses the login of user alice (HTTP 401); check MLFLOW_TRACKING_USERNAME"),
    ("alice", "pw-7f3a", None),
])
def test_a_login_refused_or_missing_is_told_apart_from_a_server_that_is_down(monkeypatch, login_server, user,
                                                                              password, expected):
    for name, value in (("MLFLOW_TRACKING_USERNAME", user), ("MLFLOW_TRACKING_PASSWORD", password)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    uri = f"http://127.0.0.1:{login_server}"
    if expected is None:
        store.ask_server_once(uri, "probe")  # 404: no such experiment yet, left to MLflow's client
        return
    message, _ = checked(monkeypatch, uri)
    assert message == f"the MLflow tracking server {uri} {expected}" + message.split(expected)[1]
    assert "\n" not in message and "running server" not in message and "pw-7f3a" not in message
    assert (password or "pw-7f3a") not in message


def test_a_host_name_the_server_does_not_allow_names_the_flag_that_allows_it(monkeypatch, login_server):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw-7f3a")
    uri = f"http://localhost:{login_server}"  # the server allows 127.0.0.1 alone
    message, _ = checked(monkeypatch, uri)
    assert message.startswith(f"the MLflow tracking server {uri} refuses the host name localhost (HTTP 403: "
                              "Invalid Host header")
    assert "start it with --allowed-hosts naming localhost" in message and "pw-7f3a" not in message


ADMIN_PASSWORD = "admin-pw-0123456"  # MLflow wants 12 characters or more


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """``mlflow server --app-name basic-auth`` on a loopback port, its admin's password set; its URL."""
    folder = tmp_path_factory.mktemp("auth-server")
    port = free_port()
    env = {**os.environ, "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-csrf-key",
           "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(folder / "server.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
                               "--backend-store-uri", f"sqlite:///{folder}/mlflow.db", "--artifacts-destination",
                               str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port)],
                              cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert server.poll() is None, (folder / "server.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "the MLflow server did not start within 180 s"
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_a_study_logs_through_a_server_that_requires_a_login_and_a_client_without_one_learns_why(
        tmp_path, auth_server):
    data = write_tiny_cifar(tmp_path / "data")
    command = [sys.executable, "-m", "clrsearch.coarse", "--data-dir", str(data), "--n-trials", "2", "--n-s", "10",
               "--n-batch", "20", "--hidden", "8", "--eval-train-size", "100", "--val-size", "200",
               "--evals-per-cycle", "2", "--quiet", "--storage", f"sqlite:///{tmp_path}/studies.db"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": auth_server}
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        env.pop(name, None)
    refused = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (f"error: the MLflow tracking server {auth_server} requires a login (HTTP 401); "
                                      "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    logged_in = {**env, "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}
    done = subprocess.run(command, cwd=tmp_path, env=logged_in, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ADMIN_PASSWORD not in done.stdout + done.stderr + refused.stdout + refused.stderr
    from mlflow.tracking import MlflowClient

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        patch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
        client = MlflowClient(tracking_uri=auth_server)
        experiment = client.get_experiment_by_name("clrsearch")
        runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags.get("level") for r in runs).count("seed") == 6  # 2 trials x 3 seeds
    assert all(r.info.status == "FINISHED" for r in runs)
