"""Configs: every invalid field raises UsageError naming it; the presets are SPEC's table."""

import dataclasses

import pytest

from clrsearch.config import (DEFAULT_SEARCH, PRESETS, DataConfig, Experiment, SearchConfig, StudyConfig,
                              TrainConfig, flat_params)
from clrsearch.errors import UsageError

INVALID_TRAIN = [
    ({"eta_min": 0.1, "eta_max": 0.1}, "eta_min"),
    ({"eta_min": 0.2, "eta_max": 0.1}, "eta_min"),
    ({"eta_min": -1e-5}, "eta_min"),
    ({"eta_max": float("inf")}, "eta_max"),
    ({"eta_max": float("nan")}, "eta_max"),
    ({"eta_min": "1e-5"}, "eta_min"),
    ({"n_s": 0}, "n_s"),
    ({"n_s": -3}, "n_s"),
    ({"n_s": 2.5}, "n_s"),
    ({"cycles": 0}, "cycles"),
    ({"cycles": True}, "cycles"),
    ({"n_batch": 0}, "n_batch"),
    ({"n_batch": "100"}, "n_batch"),
    ({"hidden": 0}, "hidden"),
    ({"shuffle_seed": -1}, "shuffle_seed"),
    ({"dtype": "float16"}, "dtype"),
    ({"dtype": None}, "dtype"),
    ({"clr_mode": "cosine"}, "clr_mode"),
    ({"gamma": 0.0}, "gamma"),
    ({"gamma": 1.5}, "gamma"),
    ({"evals_per_cycle": 0}, "evals_per_cycle"),
    ({"eval_train_size": 0}, "eval_train_size"),
]


@pytest.mark.parametrize("fields, name", INVALID_TRAIN, ids=[f"{n}={f[n]!r}" for f, n in INVALID_TRAIN])
def test_invalid_train_field_raises_naming_it(fields, name):
    with pytest.raises(UsageError, match=name):
        TrainConfig(**fields)


INVALID_DATA = [
    ({"split": "half"}, "split"),
    ({"val_size": 0}, "val_size"),
    ({"split_seed": -1}, "split_seed"),
    ({"n_train": 0}, "n_train"),
    ({"n_train": 10.0}, "n_train"),
]


@pytest.mark.parametrize("fields, name", INVALID_DATA, ids=[f"{n}={f[n]!r}" for f, n in INVALID_DATA])
def test_invalid_data_field_raises_naming_it(fields, name):
    with pytest.raises(UsageError, match=name):
        DataConfig(**fields)


@pytest.mark.parametrize("lam", [-0.01, float("nan"), float("inf"), "0.01", None])
def test_invalid_lambda_raises_naming_it(lam):
    with pytest.raises(UsageError, match="lambda"):
        Experiment(lam=lam)


@pytest.mark.parametrize("seed", [-1, 1.0])
def test_invalid_seed_raises_naming_it(seed):
    with pytest.raises(UsageError, match="seed"):
        Experiment(seed=seed)


def test_replace_validates_the_variant():
    with pytest.raises(UsageError, match="n_s"):
        dataclasses.replace(TrainConfig(), n_s=0)


def test_defaults_are_spec_defaults():
    t = TrainConfig()
    assert (t.eta_min, t.eta_max, t.hidden, t.clr_mode) == (1e-5, 1e-1, 50, "triangular")
    assert TrainConfig(n_s=800, cycles=3).total_steps == 2 * 800 * 3


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().n_s = 1


@pytest.mark.parametrize("name, split, n_train, n_batch, cycles, n_s, lam", [
    ("sanity", "batch1", 100, 10, 2, 500, 0.0),
    ("fig3", "batch1", None, 100, 1, 500, 0.01),
    ("fig4", "batch1", None, 100, 3, 800, 0.01),
    ("best", "full", None, 100, 3, 900, 0.001),
])
def test_presets_follow_the_spec_table(name, split, n_train, n_batch, cycles, n_s, lam):
    e = PRESETS[name]
    assert (e.data.split, e.data.n_train) == (split, n_train)
    assert (e.train.n_batch, e.train.cycles, e.train.n_s, e.lam) == (n_batch, cycles, n_s, lam)
    assert (e.train.eta_min, e.train.eta_max) == (1e-5, 1e-1)


def test_check_fits_refuses_a_mini_batch_larger_than_the_training_set():
    TrainConfig(n_batch=100).check_fits(100)
    with pytest.raises(UsageError, match=r"n_batch \(101\) is larger than the training set \(100 images\)"):
        TrainConfig(n_batch=101).check_fits(100)


def test_total_trials_is_the_grid_size_of_a_fine_study_and_n_trials_of_a_coarse_one():
    assert StudyConfig(kind="coarse", n_trials=7).total_trials == 7
    assert StudyConfig(kind="fine", sampler="grid", n_trials=7, grid=(0.0, 0.001, 0.002)).total_trials == 3


def test_flat_params_cover_every_field():
    flat = flat_params(DEFAULT_SEARCH["fine"])
    sections = {"study": DEFAULT_SEARCH["fine"].study, "data": DEFAULT_SEARCH["fine"].data,
                "train": DEFAULT_SEARCH["fine"].train}
    expected = {f"{s}.{f.name}" for s, obj in sections.items() for f in dataclasses.fields(obj)}
    assert set(flat) == expected
    assert flat["study.n_trials"] == 10 and flat["train.n_s"] == 900 and flat["data.data_dir"] is None
    grid = SearchConfig(StudyConfig(kind="fine", sampler="grid", grid=(0.0, 0.0015)))
    assert flat_params(grid)["study.grid"] == "lam=0,0.0015"
