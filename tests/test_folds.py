"""Replicates as blocks over validation folds: the folds of ``load_folds``, streams with images of their own in
the trainer, a ``blocks`` population against each replicate trained alone on copied arrays, ``paired`` as it was,
and each block's datasets in MLflow."""

from dataclasses import replace

import numpy as np
import pytest

from clrsearch import tracking
from clrsearch.config import DEFAULT_SEARCH, DataConfig, SearchConfig, StudyConfig, TrainConfig
from clrsearch.data import Dataset, Normaliser, load_batch, load_folds, load_splits
from clrsearch.data.cifar10 import TRAIN_FILES
from clrsearch.errors import UsageError
from clrsearch.nn import network
from clrsearch.nn.trainer import TrainingData, train
from clrsearch.search import population, queue, study
from clrsearch.tracking import datasets
from helpers import write_tiny_cifar

# 5 x 100 training images, folds of 150: F = 3 folds, 50 images in none.
N_ALL, VAL_SIZE, F = 500, 150, 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_cifar(tmp_path_factory.mktemp("data"), n_per_batch=100, n_test=20)


@pytest.fixture(scope="module")
def folds(folder):
    return load_folds(DataConfig("full", val_size=VAL_SIZE, split_seed=4, data_dir=str(folder)), dtype=np.float64)


def copied(subset):
    """The Dataset a Subset names, its columns copied: what a block's images are without the shared array."""
    return Dataset(X=np.asfortranarray(subset.source.X[:, subset.index]), Y=subset.source.Y[:, subset.index],
                   y=subset.source.y[subset.index])


def test_the_folds_are_disjoint_blocks_cover_the_images_and_block_r_validates_on_fold_r_mod_f(folds):
    assert len(folds.folds) == F and folds.pool.n == N_ALL
    every = np.concatenate(folds.folds)
    assert all(f.shape == (VAL_SIZE,) and np.all(np.diff(f) > 0) for f in folds.folds)
    assert np.unique(every).size == F * VAL_SIZE  # disjoint
    left_over = np.setdiff1d(np.arange(N_ALL), every)  # (50,) validate nowhere
    for r in range(7):
        block = folds.block(r)
        assert block.fold == r % F
        np.testing.assert_array_equal(block.val.index, folds.folds[r % F])
        assert np.intersect1d(block.train.index, block.val.index).size == 0
        np.testing.assert_array_equal(np.union1d(block.train.index, block.val.index), np.arange(N_ALL))
        assert np.isin(left_over, block.train.index).all()
        assert block.train.n == folds.n_train == N_ALL - VAL_SIZE


def test_fold_0_holds_the_validation_images_of_the_fixed_split(folder, folds):
    fixed = load_splits(DataConfig("full", val_size=VAL_SIZE, split_seed=4, data_dir=str(folder)), dtype=np.float64)
    raw = np.concatenate([load_batch(folder / name)[0] for name in TRAIN_FILES])  # (N_ALL, D) uint8
    fixed_raw = np.rint((fixed.val.X * fixed.normaliser.std + fixed.normaliser.mean) * 255).T  # (150, D)
    np.testing.assert_array_equal(fixed_raw, raw[folds.folds[0]])
    np.testing.assert_array_equal(fixed.val.y, folds.block(0).val.y)


def test_every_image_and_the_test_set_are_normalised_with_all_training_images(folder, folds):
    raw = np.concatenate([load_batch(folder / name)[0] for name in TRAIN_FILES])
    expected = Normaliser.fit(raw)
    np.testing.assert_array_equal(folds.normaliser.mean, expected.mean)
    np.testing.assert_array_equal(folds.pool.X, expected.apply(raw.T, np.float64))
    test_raw, test_y = load_batch(folder / "test_batch")
    np.testing.assert_array_equal(folds.test.X, expected.apply(test_raw.T, np.float64))
    np.testing.assert_array_equal(folds.test.y, test_y)


def test_n_train_keeps_the_first_training_images_of_each_block_and_sizes_are_checked(folder, folds):
    kept = load_folds(DataConfig("full", val_size=VAL_SIZE, split_seed=4, n_train=120, data_dir=str(folder)))
    for r in range(F):
        np.testing.assert_array_equal(kept.block(r).train.index, folds.block(r).train.index[:120])
    assert kept.n_train == 120
    with pytest.raises(UsageError, match="n_train 400 exceeds the 350"):
        load_folds(DataConfig("full", val_size=VAL_SIZE, n_train=400, data_dir=str(folder)))
    with pytest.raises(UsageError, match="leaves no training images"):
        load_folds(DataConfig("full", val_size=N_ALL, data_dir=str(folder)))
    with pytest.raises(UsageError, match="split 'full'"):
        load_folds(DataConfig("batch1", data_dir=str(folder)))


BASE = TrainConfig(n_batch=25, hidden=8, dtype="float64", eta_min=1e-3, eta_max=5e-2, n_s=7, cycles=2,
                   evals_per_cycle=2, eval_train_size=100, augment="flip")


def test_streams_with_blocks_of_their_own_train_bit_for_bit_as_alone_on_copied_arrays(folds):
    blocks = {10: folds.block(0), 11: folds.block(1), 12: folds.block(3)}  # blocks 0 and 3 share fold 0
    shuffles, lams, seeds = (10, 11, 10, 12, 11), (0.01, 0.0, 0.001, 0.02, 0.005), (3, 4, 3, 6, 4)
    together = train(blocks, [replace(BASE, shuffle_seed=s) for s in shuffles], lams, seeds)
    assert together.status == ["finished"] * 5
    for shuffle, block in blocks.items():
        members = [k for k, s in enumerate(shuffles) if s == shuffle]
        alone = train(TrainingData(copied(block.train), copied(block.val)), replace(BASE, shuffle_seed=shuffle),
                      [lams[k] for k in members], [seeds[k] for k in members])
        for j, k in enumerate(members):
            for name in network.PARAM_NAMES:
                np.testing.assert_array_equal(together.params[name][k], alone.params[name][j])
            for name in ("train_accuracy", "val_accuracy"):  # losses sum over chunks sized by K
                np.testing.assert_array_equal(together.history.metrics[name][:, k],
                                              alone.history.metrics[name][:, j], err_msg=name)


def test_streams_must_have_their_images_and_train_on_equally_many(folder, folds):
    with pytest.raises(UsageError, match="no images for the stream of shuffle seed 2"):
        train({1: folds.block(0)}, [replace(BASE, shuffle_seed=s) for s in (1, 2)], [0.0, 0.0], [0, 1])
    small = load_folds(DataConfig("full", val_size=VAL_SIZE, n_train=100, data_dir=str(folder)), dtype=np.float64)
    with pytest.raises(UsageError, match="equally many images"):
        train({1: folds.block(0), 2: small.block(1)}, [replace(BASE, shuffle_seed=s) for s in (1, 2)],
              [0.0, 0.0], [0, 1])


GRID = (0.0, 0.02)


def claimed(url, replicates, data):
    config = SearchConfig(
        StudyConfig(kind="fine", name="folds", sampler="grid", grid=GRID, n_seeds=4, first_seed=3,
                    replicates=replicates, race=False, trials_per_population=2),
        data, replace(BASE, augment="none", shuffle_seed=10, evals_per_cycle=1, cycles=1))
    with queue.study_lock(url):
        storage = queue.open_storage(url)
        config = study.resolve_grid(config, storage)
        shared = queue.TrialQueue(study.create_or_load(config, storage), storage, url)
    return config, shared, shared.claim(config)


def test_replicate_r_of_every_point_is_block_r_trained_alone_and_scored_on_fold_r_mod_f(study_url, folder, folds):
    data = DataConfig("full", val_size=VAL_SIZE, split_seed=4, data_dir=str(folder))
    config, shared, trials = claimed(study_url, "blocks", data)
    outcome = population.train_population(shared, trials, config, folds)
    assert len(outcome.blocks) == 1  # one population for both points and their four blocks
    for result in outcome.results:
        assert result.replicates == [0, 1, 2, 3]
        for run in result.runs:
            block = folds.block(run.replicate)
            images = TrainingData(copied(block.train), copied(block.val))
            alone = train(images, replace(config.train, shuffle_seed=10 + run.replicate), [result.lam],
                          [3 + run.replicate])
            pred = network.predict(network.member(alone.params, 0), images.val.X)
            assert run.val_accuracy == np.mean(pred == block.val.y)
            np.testing.assert_array_equal(outcome.blocks[0].val_true[run.member], block.val.y)
    # paired across points: replicate r of both points validated on the same fold
    first, second = outcome.results
    assert [outcome.blocks[0].val_true[run.member].tolist() for run in first.runs] == \
        [outcome.blocks[0].val_true[run.member].tolist() for run in second.runs]


def test_paired_is_the_fixed_split_untouched(study_url, folder):
    data = DataConfig("full", val_size=VAL_SIZE, split_seed=4, data_dir=str(folder))
    splits = load_splits(data, dtype=np.float64)
    config, shared, trials = claimed(study_url, "paired", data)
    outcome = population.train_population(shared, trials, config, splits)
    block = outcome.blocks[0]
    # the old data path: one population on the fixed split, one stream per replicate, predicted all at once
    configs = [replace(config.train, shuffle_seed=10 + r) for _, r in block.members]
    lams = [trials[i].params["lam"] for i, _ in block.members]
    reference = train(splits, configs, lams, [3 + r for _, r in block.members])
    for name in network.PARAM_NAMES:
        np.testing.assert_array_equal(block.training.params[name], reference.params[name])
    for name, values in reference.history.metrics.items():
        np.testing.assert_array_equal(block.training.history.metrics[name], values, err_msg=name)
    np.testing.assert_array_equal(block.val_pred, network.predict(reference.params, splits.val.X))
    assert all(np.array_equal(labels, splits.val.y) for labels in block.val_true)


def test_each_block_names_its_own_sets_and_two_replicates_show_different_validation_digests(folder, folds):
    data = DataConfig("full", val_size=VAL_SIZE, split_seed=4, data_dir=str(folder))
    zero, one, three = (datasets.describe_block(folds, data, r) for r in (0, 1, 3))
    assert (zero.training.name, zero.validation.name) == ("cifar10-full-fold0-train-350", "cifar10-full-fold0-val-150")
    assert one.validation.name == "cifar10-full-fold1-val-150"
    assert zero.validation.digest != one.validation.digest and zero.training.digest != one.training.digest
    assert three == zero  # block 3 validates on fold 0 again: the same images, the same datasets
    assert zero.testing == tracking.describe_splits(load_splits(data), data).testing
    study_inputs = tracking.describe_splits(folds, data)
    assert study_inputs.training.name == "cifar10-full-folds-train-500" and study_inputs.validation is None
    other = datasets.describe_block(folds, replace(data, split_seed=5), 0)
    assert other.validation.digest != zero.validation.digest


def test_seed_runs_of_two_replicates_hold_their_blocks_and_the_trial_run_both(store, folder, folds):
    data = DataConfig("full", val_size=VAL_SIZE, split_seed=4, data_dir=str(folder))
    result = train(folds.block(0), replace(BASE, cycles=1), [0.01], [1])
    inputs = {r: datasets.describe_block(folds, data, r) for r in (0, 1)}
    seeds = [tracking.SeedRecord(seed=r, val_accuracy=0.3, history=result.history, member=0,
                                 val_true=folds.block(r).val.y, val_pred=folds.block(r).val.y,
                                 class_names=folds.label_names, status="finished", inputs=inputs[r]) for r in (0, 1)]
    trial = tracking.TrialRecord(number=0, lam=0.01, state="COMPLETE", mean=0.3, std=0.0, seeds=seeds)
    with tracking.StudyRun("folds", "coarse:folds", {}, {"study_name": "folds"},
                           inputs=tracking.describe_splits(folds, data)) as run:
        trial_id = run.log_trials([trial])[0]

    def logged(run_id):
        return {(i.dataset.name, i.dataset.digest, i.tags[0].value) for i in store.get_run(run_id).inputs.dataset_inputs}

    def sets(one):
        return {(s.name, s.digest, s.context) for s in one.of("training", "validation")}

    seed_runs = store.search_runs([run.experiment_id], f"tags.`mlflow.parentRunId` = '{trial_id}'")
    by_seed = {int(r.data.tags["seed"]): logged(r.info.run_id) for r in seed_runs}
    assert by_seed == {0: sets(inputs[0]), 1: sets(inputs[1])}
    validation = {r: [d for d in by_seed[r] if d[2] == "validation"][0][1] for r in (0, 1)}
    assert validation[0] != validation[1]
    assert logged(trial_id) == sets(inputs[0]) | sets(inputs[1])
    assert {d[0] for d in logged(run.run_id)} == {"cifar10-full-folds-train-500"}


def test_blocks_is_the_default_of_both_studies():
    assert StudyConfig().replicates == "blocks"
    assert {kind: c.study.replicates for kind, c in DEFAULT_SEARCH.items()} == {"coarse": "blocks", "fine": "blocks"}
