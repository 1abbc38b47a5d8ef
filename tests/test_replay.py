"""tools/replay.py: the race replayed on synthetic tables whose truth is known, and its CSV."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from clrsearch.config import StudyConfig

SPEC = importlib.util.spec_from_file_location("replay", Path(__file__).parents[1] / "tools" / "replay.py")
replay = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(replay)

CFG = StudyConfig(kind="fine", name="replay", sampler="grid", grid=(0.0,), delta=0.003, n_seeds=3, race_seeds=3,
                  max_seeds=12)


def synthetic(true_means, noise, blocks=12, seed=1):
    """A Table: block effects shared by every point (sd 0.5 points) plus independent noise (``noise``)."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(0.0, 0.005, blocks)  # (B,)
    accuracies = {p: {b: float(m + shared[b] + rng.normal(0.0, noise)) for b in range(blocks)}
                  for p, m in enumerate(true_means)}
    return replay.Table({p: {"lam": 0.001 * p} for p in accuracies}, accuracies, {p: 100 * (1 + p % 2)
                                                                                   for p in accuracies})


def test_one_point_clearly_better_is_chosen_by_every_rule():
    table = synthetic([0.52, 0.51, 0.505, 0.50], noise=0.0005)  # the best is 1 point (> delta) ahead
    report = replay.replay(table, CFG, replays=40, seed=0)
    for rule in replay.RULES:
        assert report[rule]["pcs"] == 1.0
    assert report["kn"]["coverage"] == 1.0 and report["holm"]["coverage"] is None
    assert report["fixed"]["compute"] == 1.0  # every point at the budget
    assert report["kn"]["compute"] < 1.0 and report["holm"]["compute"] < 1.0  # the races stopped early


def test_all_points_equal_every_choice_is_correct():
    table = synthetic([0.5, 0.5, 0.5], noise=0.002)
    report = replay.replay(table, CFG, replays=40, seed=0)
    for rule in replay.RULES:
        assert report[rule]["pcs"] == 1.0  # all table means within delta of the best
    assert 0.0 <= report["kn"]["coverage"] <= 1.0  # of the (arbitrary) best of the table, reported
    text = replay.markdown(report, table, CFG, 40, 0)
    assert "| KN screening + MCB stop (`--race-rule kn`) | 1.000 |" in text


def test_the_winner_of_the_fixed_rule_is_the_largest_mean_and_its_optimism_is_measured():
    table = synthetic([0.52, 0.50], noise=0.0005)
    data = {p: {j: a[j] for j in range(12)} for p, a in table.accuracies.items()}  # the table's own order
    outcome = replay.run_rule("fixed", data, table.steps, CFG, best=0)
    assert outcome.winner == 0 and outcome.updates == 12 * 100 + 12 * 200
    assert outcome.race_mean == pytest.approx(table.means[0])  # all 12 blocks once: no optimism


def test_the_table_csv_round_trips(tmp_path):
    rows = [{"point": p, "params": {"lam": 0.001 * p, "n_s_epochs": 2}, "replicate": r, "val_accuracy": 0.5 + p / 100,
             "update_steps": 3600} for p in range(2) for r in range(3)]
    replay.write_table(tmp_path / "t.csv", rows)
    table = replay.read_table(tmp_path / "t.csv")
    assert table.blocks == [0, 1, 2] and table.steps == {0: 3600, 1: 3600}
    assert table.params[1] == {"lam": 0.001, "n_s_epochs": 2} and table.means[1] == pytest.approx(0.51)


def test_replay_mode_writes_its_section(tmp_path):
    table = synthetic([0.52, 0.51], noise=0.0005)
    rows = [{"point": p, "params": table.params[p], "replicate": b, "val_accuracy": a, "update_steps": table.steps[p]}
            for p, acc in table.accuracies.items() for b, a in acc.items()]
    replay.write_table(tmp_path / "t.csv", rows)
    out = tmp_path / "replay.md"
    assert replay.main(["replay", "--table", str(tmp_path / "t.csv"), "--out", str(out), "--replays", "5"]) == 0
    assert out.read_text().startswith("## Replaying the race")
