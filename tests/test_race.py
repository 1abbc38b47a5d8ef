"""Paired replicates, blocks over validation folds, and the race of the fine study, end to end on tiny data.

The independent reference: replicate r of a trial is a network trained alone
with init seed r and mini-batch order shuffle_seed + r, which must give
exactly the accuracy the study recorded.
"""
from dataclasses import replace

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from clrsearch import coarse, fine
from clrsearch.config import DataConfig, TrainConfig
from clrsearch.data import Dataset, load_folds, load_splits
from clrsearch.nn import network
from clrsearch.nn.trainer import TrainingData, train
from clrsearch.config import StudyConfig
from clrsearch.search import race
from clrsearch.search.compare import compare_to_best
from helpers import experiment_runs

pytestmark = pytest.mark.slow  # whole studies, one after the other

TINY = ["--n-s", "10", "--n-batch", "20", "--hidden", "8", "--eval-train-size", "100", "--val-size", "200",
        "--evals-per-cycle", "2", "--cycles", "1", "--dtype", "float64", "--quiet", "--replicates", "paired"]
TINY_TRAIN = TrainConfig(n_batch=20, cycles=1, n_s=10, hidden=8, dtype="float64", evals_per_cycle=2,
                         eval_train_size=100)


def trials_of(name):
    study = optuna.load_study(study_name=name, storage="sqlite:///studies/clrsearch.db")
    return study, [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]


def alone(splits, lam, replicate, train_config=TINY_TRAIN):
    """Validation accuracy of replicate ``replicate`` at ``lam`` trained as a population of one."""
    config = replace(train_config, shuffle_seed=train_config.shuffle_seed + replicate)
    result = train(splits, config, [lam], [replicate])
    return float(np.mean(network.predict(network.member(result.params, 0), splits.val.X) == splits.val.y))


def test_each_replicate_is_the_network_trained_alone(tracked_tiny_cifar):
    assert coarse.main(["--data-dir", str(tracked_tiny_cifar), *TINY, "--n-trials", "2", "--n-seeds", "2"]) == 0
    study, trials = trials_of("coarse")
    splits = load_splits(DataConfig("full", val_size=200, data_dir=str(tracked_tiny_cifar)), dtype=np.float64)
    assert len(trials) == 2
    for t in trials:
        assert t.user_attrs["replicates"] == [0, 1]
        expected = [alone(splits, t.params["lam"], r) for r in (0, 1)]
        assert t.user_attrs["val_accuracies"] == expected
        assert t.value == pytest.approx(np.mean(expected), abs=1e-15)
        assert t.user_attrs["verdict"] in ("best", "tied", "worse")
    assert study.user_attrs["paired_test"].startswith("paired t-test")
    assert study.user_attrs["alpha"] == 0.05
    # replicates 0 and 1 saw different mini-batch orders: the same lambda gives different networks
    assert alone(splits, 0.0, 0) != alone(splits, 0.0, 1)


def test_the_default_blocks_replicate_r_trains_and_validates_on_block_r(tracked_tiny_cifar):
    # 1,000 images in folds of 200: 5 folds, replicate 5 validates on fold 0 again with another order
    assert coarse.main(["--data-dir", str(tracked_tiny_cifar), *TINY, "--replicates", "blocks", "--n-trials", "1",
                        "--n-seeds", "6"]) == 0
    _, [trial] = trials_of("coarse")
    folds = load_folds(DataConfig("full", val_size=200, data_dir=str(tracked_tiny_cifar)), dtype=np.float64)
    expected = []
    for r in range(6):
        block = folds.block(r)
        train_set, val = (Dataset(np.asfortranarray(s.source.X[:, s.index]), s.source.Y[:, s.index], s.y)
                          for s in (block.train, block.val))
        result = train(TrainingData(train_set, val), replace(TINY_TRAIN, shuffle_seed=r), [trial.params["lam"]], [r])
        expected.append(float(np.mean(network.predict(network.member(result.params, 0), val.X) == val.y)))
    assert trial.user_attrs["val_accuracies"] == expected


def test_the_init_protocol_shares_one_order(tracked_tiny_cifar):
    assert coarse.main(["--data-dir", str(tracked_tiny_cifar), *TINY, "--n-trials", "1", "--n-seeds", "2",
                        "--replicates", "init"]) == 0
    _, [trial] = trials_of("coarse")
    splits = load_splits(DataConfig("full", val_size=200, data_dir=str(tracked_tiny_cifar)), dtype=np.float64)
    shared = [float(np.mean(network.predict(network.member(
        train(splits, TINY_TRAIN, [trial.params["lam"]], [r]).params, 0), splits.val.X)
        == splits.val.y)) for r in (0, 1)]
    assert trial.user_attrs["val_accuracies"] == shared


def test_race_gives_tied_points_more_replicates_and_drops_the_worse(tracked_tiny_cifar):
    # lambda 3 collapses the network to near chance: worse after the first round; 0 and 1e-4 stay close.
    args = ["--data-dir", str(tracked_tiny_cifar), *TINY, "--grid", "0,0.0001,3", "--n-seeds", "3", "--race-seeds", "2",
            "--max-seeds", "7", "--no-final", "--race-rule", "holm"]
    assert fine.main(args) == 0
    study, trials = trials_of("fine")
    points = {}
    for t in trials:
        points.setdefault(t.user_attrs["point"], []).append(t)
    left = {int(p): r for p, r in study.user_attrs.get("race_left", {}).items()}
    assert left.get(2) == 1  # lambda 3 left after round 1
    assert [t.user_attrs["round"] for t in points[2]] == [1]
    for point, ts in points.items():
        ts.sort(key=lambda t: t.user_attrs["round"])
        assert [t.user_attrs["round"] for t in ts] == list(range(1, len(ts) + 1))
        trained = [r for t in ts for r in t.user_attrs["new_replicates"]]
        assert trained == list(range(len(trained)))  # no replicate twice, none skipped
        last = ts[-1]
        assert last.user_attrs["replicates"] == trained
        assert last.value == pytest.approx(np.mean(last.user_attrs["val_accuracies"]), abs=1e-15)
    # every round after the first holds exactly the points tied with the best after the round before
    rounds = max(t.user_attrs["round"] for t in trials)
    for k in range(1, rounds):
        standing = {p: dict(zip(ts[k - 1].user_attrs["replicates"], ts[k - 1].user_attrs["val_accuracies"]))
                    for p, ts in points.items() if len(ts) >= k}
        verdicts = compare_to_best(standing, 0.05)
        assert {p for p, ts in points.items() if len(ts) > k} == {p for p, c in verdicts.items()
                                                                  if c.verdict != "worse"}
    final_counts = {len(ts[-1].user_attrs["replicates"]) for p, ts in points.items() if p not in left}
    assert final_counts <= {3, 5, 7}
    # a replicate of a race round is the network trained alone as well (the fine study flips its images)
    splits = load_splits(DataConfig("full", val_size=200, data_dir=str(tracked_tiny_cifar)), dtype=np.float64)
    longest = max(points.values(), key=len)[-1]
    r = longest.user_attrs["replicates"][-1]
    flipped = replace(TINY_TRAIN, augment="flip")
    assert longest.user_attrs["val_accuracies"][-1] == alone(splits, longest.params["lam"], r, flipped)


def test_the_kn_race_follows_its_decision_round_by_round_and_records_its_end(tracked_tiny_cifar):
    args = ["--data-dir", str(tracked_tiny_cifar), *TINY, "--grid", "0,0.0001,0.0002,3", "--n-seeds", "3",
            "--race-seeds", "2", "--max-seeds", "7", "--no-final", "--delta", "50"]
    assert fine.main(args) == 0
    study, trials = trials_of("fine")
    # delta 0.5: every W is 0 (h2 S2 / delta^2 < 3), so KN keeps the largest means only: the three small lambdas,
    # whose networks are the same on this tiny data, and the race stops at once with all three within delta
    cfg = StudyConfig(kind="fine", name="fine", sampler="grid", grid=(0.0,), n_seeds=3, race_seeds=2, max_seeds=7,
                      delta=0.5)
    points = {}
    for t in trials:
        points.setdefault(t.user_attrs["point"], []).append(t)
    for ts in points.values():
        ts.sort(key=lambda t: t.user_attrs["round"])
    rounds = max(t.user_attrs["round"] for t in trials)
    for k in range(1, rounds + 1):  # what each look decided, worked out again from the data the study holds
        seen = {p: dict(zip(ts[min(k, len(ts)) - 1].user_attrs["replicates"],
                            ts[min(k, len(ts)) - 1].user_attrs["val_accuracies"])) for p, ts in points.items()}
        in_race = {p for p, ts in points.items() if len(ts) >= k}
        step = race.next_step(seen, in_race, max(len(seen[p]) for p in in_race), cfg)
        if k < rounds:
            assert step.end == "" and set(step.going_on) == {p for p, ts in points.items() if len(ts) > k}
        else:
            end = study.user_attrs["race_end"]
            assert step.end == end["reason"] and list(step.going_on) == end["points"]
            assert end["rule"] == "kn" and end["round"] == rounds and end["delta"] == 0.5
    assert study.user_attrs["race_left"] == {"3": 1}  # lambda 3 is screened out after round 1
    verdicts = study.user_attrs["verdicts"]
    assert sum(v["p_best"] for v in verdicts.values()) == pytest.approx(1.0)
    assert any(v["best_set"] for v in verdicts.values())


def test_augment_as_a_grid_dimension_trains_each_setting_in_its_own_population(tracked_tiny_cifar):
    args = ["--data-dir", str(tracked_tiny_cifar), *TINY, "--grid", "lam=0.0001", "--grid", "augment=none,flip",
            "--n-seeds", "2", "--no-race", "--no-final"]
    assert fine.main(args) == 0
    _, trials = trials_of("fine")
    splits = load_splits(DataConfig("full", val_size=200, data_dir=str(tracked_tiny_cifar)), dtype=np.float64)
    assert sorted(t.params["augment"] for t in trials) == ["flip", "none"]
    for t in trials:
        config = replace(TINY_TRAIN, augment=t.params["augment"])
        assert t.user_attrs["val_accuracies"] == [alone(splits, 0.0001, r, config) for r in (0, 1)]


def test_a_trial_run_logs_its_points_own_schedule_and_is_named_by_all_its_dimensions(tracked_tiny_cifar):
    args = ["--data-dir", str(tracked_tiny_cifar), *TINY, "--n-batch", "100", "--grid", "lam=0.0001",
            "--grid", "n_s_epochs=1,2", "--n-seeds", "1", "--no-race", "--no-final"]
    assert fine.main(args) == 0
    trial_runs = [r for r in experiment_runs(MlflowClient(), "clrsearch") if r.data.tags.get("level") == "trial"]
    n_train = load_splits(DataConfig("full", val_size=200, data_dir=str(tracked_tiny_cifar))).train.n
    logged = sorted((r.data.params["n_s_epochs"], r.data.params["n_s"], r.info.run_name) for r in trial_runs)
    epoch = n_train // 100
    assert [(e, int(n_s)) for e, n_s, _ in logged] == [("1", epoch), ("2", 2 * epoch)]
    assert [name.split(" ", 1)[1] for *_, name in logged] == ["lam=0.0001 n_s_epochs=1", "lam=0.0001 n_s_epochs=2"]
