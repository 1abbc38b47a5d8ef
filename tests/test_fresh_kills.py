"""tools/faults.py --fresh-kills at a tiny scale: the first command on new stores is killed while it creates
them, resumed, and its study counted slot by slot; the counts are checked against the study read back here."""

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import faults

pytestmark = pytest.mark.slow  # whole commands, killed and resumed

# The tiny protocol of tests/test_reliability.py: a few update steps per trial on the tiny CIFAR copy.
TINY_TOML = """\
[study]
n_trials = 3
n_seeds = 1
trials_per_population = 2
[data]
val_size = 200
[train]
n_batch = 20
n_s = 10
hidden = 8
evals_per_cycle = 1
eval_train_size = 100
"""


def test_fresh_kills_kill_the_first_command_resume_it_and_find_nothing_lost(tmp_path, tiny_data):
    # Kill moments within the first 4 s: while the command starts, creates the stores and its study.
    fresh = faults.FreshKillSettings(toml=TINY_TOML, window_seconds=4.0, resume_timeout=300.0)
    said = []
    figures, errors = faults.fresh_kills(tiny_data, tmp_path, 2, 0, said.append, fresh)
    assert errors == [] and figures["commands that cannot resume"] == 0
    assert figures["kills"] == 2 == sum("SIGKILL after" in line for line in said)
    assert figures["starts"] == 2 + figures["starts that ended before their kill"]
    assert all(figures[key] == 0 for key in faults.FRESH_PROBLEMS), figures
    assert figures["slots"] == 3 * figures["starts"]
    folders = sorted(tmp_path.iterdir())
    assert len(folders) == figures["starts"]
    for folder in folders:  # read back independently: three complete trials, one per slot
        study = optuna.load_study(study_name=faults.FRESH_NAME, storage=f"sqlite:///{folder}/studies.db")
        complete = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
        assert sorted(t.user_attrs["slot"] for t in complete) == [0, 1, 2]
        assert not list(folder.glob("*.creating*"))


def test_a_command_that_cannot_resume_is_counted_with_its_error(tmp_path, tiny_data):
    # A study definition the command refuses: every resume fails, with its one-line error.
    fresh = faults.FreshKillSettings(toml=TINY_TOML + "hidden_units = 3\n", window_seconds=30.0)
    figures, errors = faults.fresh_kills(tiny_data, tmp_path, 0, 0, lambda *a: None, fresh)
    assert figures["starts"] == 0  # no kill asked, no start
    folder = tmp_path / "by-hand"
    folder.mkdir()
    starts = faults.Starts("coarse", fresh.toml, folder, tiny_data, None, lambda *a: None)
    error = faults.resume_fresh(starts, 120)
    assert error.startswith("exit status 2: error: ") and "hidden_units" in error


def test_the_flag_is_refused_with_the_other_studies(tmp_path):
    done = subprocess.run([sys.executable, str(Path(faults.__file__)), "--fresh-kills", "2", "--race"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--fresh-kills kills coarse commands on fresh SQLite stores" in done.stderr
