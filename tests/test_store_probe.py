"""A tracking server that is down is reported at once (clrsearch.tracking.store.check_store): a refused
connection, a server that never answers and one that answers only errors each end in one line naming the
server within 10 s, MLflow's retry settings come back after the check, and the coarse command exits 2."""

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
from helpers import write_tiny_cifar

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


def test_a_database_store_is_not_probed(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setattr(store, "probe_server", lambda uri: pytest.fail("probed a database"))
    store.probe_tracking_server()


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
