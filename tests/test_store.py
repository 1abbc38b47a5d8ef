"""The tracking store (clrsearch.tracking.store): the commit runs are tagged with, read against a
temporary git repository, and the checks made before a study creates anything."""

import subprocess

import pytest

from clrsearch.errors import UsageError
from clrsearch.tracking import store as store_module

GIT = ["git", "-c", "user.name=tests", "-c", "user.email=tests@example.invalid", "-c", "init.defaultBranch=main",
       "-c", "commit.gpgsign=false"]


def commit_file(repo, name, text):
    """Write ``repo/name`` and commit it; returns the full hash, read from the branch's ref file."""
    path = repo / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    subprocess.run([*GIT, "add", name], cwd=repo, check=True, capture_output=True)
    subprocess.run([*GIT, "commit", "-q", "-m", f"add {name}"], cwd=repo, check=True, capture_output=True)
    head = (repo / ".git" / "HEAD").read_text().strip()
    assert head == "ref: refs/heads/main"
    return (repo / ".git" / "refs" / "heads" / "main").read_text().strip()


@pytest.fixture
def package_in(monkeypatch):
    """Make git_commit look for the checkout around a copy of the package's module file in a given folder."""
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(name, raising=False)

    def place(folder):
        module = folder / "clrsearch" / "tracking" / "store.py"
        monkeypatch.setattr(store_module, "__file__", str(module))
        return module

    return place


def test_git_commit_is_the_short_hash_of_the_commit_checked_out(tmp_path, package_in):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run([*GIT, "init", "-q"], cwd=repo, check=True, capture_output=True)
    first = commit_file(repo, "clrsearch/tracking/store.py", "# one\n")
    package_in(repo)
    short = store_module.git_commit()
    assert len(first) == 40 and 7 <= len(short) < 40 and first.startswith(short)

    second = commit_file(repo, "README", "two\n")
    assert second != first
    short = store_module.git_commit()
    assert second.startswith(short) and not first.startswith(short)


def test_git_commit_is_unknown_outside_a_checkout_or_without_git(tmp_path, package_in, monkeypatch):
    (tmp_path / "clrsearch" / "tracking").mkdir(parents=True)
    package_in(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # no repository above tmp_path either
    assert store_module.git_commit() == "unknown"
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    assert store_module.git_commit() == "unknown"


def test_experiment_id_creates_the_experiment_once(store):
    first = store_module.experiment_id(store, "store-exp")
    assert store_module.experiment_id(store, "store-exp") == first
    assert store.get_experiment(first).name == "store-exp"


def test_a_deleted_experiment_is_refused_with_the_command_that_restores_it(store):
    deleted = store.create_experiment("store-deleted")
    store.delete_experiment(deleted)
    for check in (lambda: store_module.experiment_id(store, "store-deleted"),
                  lambda: store_module.check_store("store-deleted")):
        with pytest.raises(UsageError) as error:
            check()
        message = str(error.value)
        assert "\n" not in message and f"mlflow experiments restore --experiment-id {deleted}" in message


def test_check_store_creates_nothing(store):
    before = len(store.search_experiments())
    store_module.check_store("store-never-made")
    assert store.get_experiment_by_name("store-never-made") is None
    assert len(store.search_experiments()) == before


def unreachable_server(monkeypatch):
    """A tracking URI with a password, of a server that is not there, asked once (no retries)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://someone:secret@127.0.0.1:9")


def test_an_unusable_store_is_one_line_naming_it_without_its_password(monkeypatch):
    unreachable_server(monkeypatch)
    with pytest.raises(UsageError) as error:
        store_module.check_store()
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("cannot use the MLflow tracking store http://someone@127.0.0.1:9 (")
    assert message.endswith("; point MLFLOW_TRACKING_URI at a running server (http://HOST:5000) or a database, "
                            "or unset it for sqlite:///mlflow.db")


def test_the_reason_of_an_unusable_store_does_not_show_its_password(monkeypatch):
    unreachable_server(monkeypatch)
    with pytest.raises(UsageError) as error:
        store_module.check_store()
    assert "secret" not in str(error.value)
