"""The package reaches Optuna and MLflow through their public API only: no private attribute of a study, a
trial, a storage or a client, and no Trial built by hand."""

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "clrsearch"
PRIVATE = re.compile(r"(?<!\bself)\._(storage|trial_id|backend|study_id|cached_frozen_trial|tracking_client"
                     r"|get_stale_trial_ids|pop_waiting_trial_id|thread_local)\b|\bTrial\(study\b"
                     r"|\boptuna\.\w+(\.\w+)*\._\w+|\bmlflow\.\w+(\.\w+)*\._\w+|from (optuna|mlflow)[\w.]*\._"
                     r"|import (optuna|mlflow)[\w.]*\._")


def private_uses(text):
    return [line.strip() for line in text.splitlines() if PRIVATE.search(line)]


def test_the_pattern_finds_what_it_looks_for():
    assert private_uses("s = study._storage\nid = trial._trial_id\nt = optuna.trial.Trial(study, 3)\n"
                        "from optuna.storages._heartbeat import x\nb = cached._backend.url\n"
                        "mlflow.tracking._tracking_service.utils\n") != []
    assert len(private_uses("s = study._storage\nt = optuna.trial.Trial(study, 3)\n")) == 2
    assert private_uses("self._storage = storage\nstudy.ask()\noptuna.storages.fail_stale_trials(study)\n") == []


def test_no_private_optuna_or_mlflow_attribute_in_the_package():
    found = {str(path.relative_to(PACKAGE)): uses for path in sorted(PACKAGE.rglob("*.py"))
             if (uses := private_uses(path.read_text()))}
    assert found == {}


ANY_PRIVATE = re.compile(r"(?<![\w.])(?!self\b|cls\b)\w+(\(\))?\._[a-z]\w*")  # obj._name, obj()._name; not self


def code_uses_private(line):
    """Whether ``line``, its string literals left out, reads a private attribute of an object other than self."""
    return ANY_PRIVATE.search(re.sub(r"\"[^\"]*\"|'[^']*'", "", line)) is not None


def test_no_private_attribute_of_any_object_but_its_own():
    assert ANY_PRIVATE.search("source_type=source._get_source_type()")
    assert code_uses_private('x = f()._resolve()') and not code_uses_private('names = ("numpy._core.x", "y")')
    assert not ANY_PRIVATE.search("self._drawer.submit(x)") and not ANY_PRIVATE.search("cls._cache")
    found = [f"{path.relative_to(PACKAGE.parent)}: {line.strip()}" for path in sorted(PACKAGE.rglob("*.py"))
             for line in path.read_text().splitlines() if code_uses_private(line)]
    assert found == []
