"""tools/faults.py --namespaces: two workers of one hostname, each pid 1 of a PID namespace of its own, share a
study; one is killed, namespace and all, and nothing may be lost, trained twice, or taken from the live one.

The whole mode runs at a tiny scale (slow, and skipped where this process may not make namespaces); which
failed trials count as live ones taken over is checked on hand-made trials.
"""

import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

import faults
from clrsearch.search import queue

# The tiny protocol of tests/test_fresh_kills.py, one lambda per population and 200 steps a trial: each worker
# trains a few trials one after the other, long enough to be caught running.
TINY_TOML = """\
[study]
n_trials = 4
n_seeds = 1
trials_per_population = 1
[data]
val_size = 200
[train]
n_batch = 20
n_s = 200
hidden = 8
evals_per_cycle = 1
eval_train_size = 100
"""
KILLED_AT = datetime(2026, 1, 1, 12, 0, 0)
VICTIM, SURVIVOR = "boot.111", "boot.222"


def trial(number, table, state=TrialState.FAIL, reason=None, seconds_after_kill=1.0, **user_attrs):
    """A trial of a worker of process table ``table`` (None: unnamed), ended ``seconds_after_kill`` after the kill."""
    worker = {} if table is None else {queue.WORKER_ATTR: f"same:1:100:{table}"}
    return SimpleNamespace(number=number, state=state, system_attrs=worker,
                           user_attrs={**user_attrs, **({} if reason is None else {"reason": reason})},
                           datetime_complete=KILLED_AT + timedelta(seconds=seconds_after_kill))


def test_live_trials_taken_over_are_those_failed_while_their_worker_ran():
    trials = [
        trial(0, VICTIM),  # failed as stale after the kill: the killed worker's, no takeover
        trial(1, VICTIM, reason="worker same:1 died"),  # the same, found dead in its own process table
        trial(2, None),  # claimed by the killed worker before it named itself
        trial(3, VICTIM, seconds_after_kill=-0.5),  # failed half a second before its worker was killed
        trial(4, SURVIVOR),  # the survivor's, failed as stale while it ran
        trial(5, SURVIVOR, reason="worker same:1 died"),  # the survivor's, taken for dead (same host and pid)
        trial(6, SURVIVOR, reason=queue.INTERRUPTED),  # given back: no takeover
        trial(7, SURVIVOR, reason="infrastructure: disk full"),
        trial(8, SURVIVOR, final_failure=True),  # diverged: its own failure
        trial(9, SURVIVOR, state=TrialState.COMPLETE, spared=[10]),  # a copy that says 10 ran until taken over
        trial(10, SURVIVOR, state=TrialState.COMPLETE),
    ]
    killed_at = KILLED_AT.timestamp()
    assert faults.taken_over(trials, VICTIM, killed_at) == {3, 4, 5, 10}
    # Without a kill, every trial failed as lost was taken from a live worker.
    assert faults.taken_over(trials, VICTIM, None) == {0, 1, 2, 3, 4, 5, 10}


def test_a_command_in_namespaces_is_pid_1_of_its_hostname():
    argv = faults.in_namespace(["sh", "-c", "echo $$ $(hostname)"], "some-host")
    assert argv[:len(faults.UNSHARE)] == list(faults.UNSHARE)
    if faults.namespaces_refused("some-host") is not None:
        pytest.skip("this process may not make namespaces")
    assert subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout.split() == ["1", "some-host"]


def test_the_mode_is_skipped_with_one_line_where_namespaces_cannot_be_made(monkeypatch, tiny_data, capsys):
    monkeypatch.setattr(faults, "UNSHARE", (sys.executable, "-c", "import sys; sys.exit('unshare: not permitted')"))
    assert faults.main(["--data-dir", str(tiny_data), "--namespaces", "1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["namespaces: skipped, this process cannot start a command in namespaces of its own "
                   "(unshare: not permitted)"]


@pytest.mark.slow
def test_the_flag_is_refused_with_the_other_studies():
    done = subprocess.run([sys.executable, str(Path(faults.__file__)), "--namespaces", "1", "--race"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--namespaces runs a coarse study of its own" in done.stderr


@pytest.mark.slow  # three whole commands a round
@pytest.mark.skipif(faults.namespaces_refused("probe") is not None, reason="namespaces cannot be made here")
def test_a_worker_killed_namespace_and_all_loses_nothing_and_takes_nothing_from_the_other(tmp_path, tiny_data):
    settings = faults.NamespaceSettings(toml=TINY_TOML, kill_delay=0.5, timeout=300.0)
    said = []
    figures = faults.namespaces(tiny_data, tmp_path, 2, 0, said.append, settings)
    assert all(figures[key] == 0 for key in faults.NAMESPACE_PROBLEMS), (figures, said)
    assert figures["rounds"] == 2 and figures["slots"] == 8
    assert figures["kills"] == sum(line.startswith(f"namespaces-{k}: killed namespace") for k in (1, 2)
                                   for line in said) >= 1
    failed = 0
    for k in (1, 2):  # read back independently: one complete trial a slot
        study = optuna.load_study(study_name=f"namespaces-{k}", storage=f"sqlite:///{tmp_path}/studies.db")
        trials = study.get_trials()
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        assert sorted(t.user_attrs["slot"] for t in complete) == [0, 1, 2, 3]
        failed += sum(t.state == TrialState.FAIL for t in trials)
        # The workers were what the mode is about: one hostname, pid 1, process tables apart.
        names = {t.system_attrs[queue.WORKER_ATTR] for t in trials if queue.WORKER_ATTR in t.system_attrs}
        assert {name.split(":")[0] + ":" + name.split(":")[1] for name in names} == {"clrsearch-same-host:1"}
        assert len({name.split(":", 3)[3] for name in names}) >= 2
    assert figures["trials lost with their worker and trained again"] == failed
