"""Claimed trials trained together and told to the study (clrsearch.search.population): every
replicate as a network trained alone would be, told as TrialResults, and a trial another worker took
over left as that worker recorded it."""

from dataclasses import replace

import numpy as np
import pytest
from optuna.trial import TrialState

from clrsearch.config import DataConfig, SearchConfig, StudyConfig, TrainConfig
from clrsearch.data import load_splits
from clrsearch.nn import network
from clrsearch.nn.trainer import train
from clrsearch.search import population, queue, study
from clrsearch.search.population import TrialResult
from helpers import write_tiny_cifar

GRID = (0.0, 0.02)


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    folder = write_tiny_cifar(tmp_path_factory.mktemp("data"), n_per_batch=100, n_test=20)
    return load_splits(DataConfig("batch1", data_dir=str(folder)), dtype=np.float64)


def search_config(replicates="paired", n_seeds=2):
    return SearchConfig(
        StudyConfig(kind="fine", name="pop", sampler="grid", grid=GRID, n_seeds=n_seeds, first_seed=3,
                    replicates=replicates, race=False, trials_per_population=2),
        DataConfig("batch1"),
        TrainConfig(n_batch=20, cycles=1, n_s=5, hidden=8, dtype="float64", shuffle_seed=10, evals_per_cycle=1))


def claimed_study(url, config):
    """A new fine study of GRID in the storage ``url``, and its trials claimed by this process."""
    with queue.study_lock(url):
        storage = queue.open_storage(url)
        config = study.resolve_grid(config, storage)
        shared = queue.TrialQueue(study.create_or_load(config, storage), storage, url)
    return config, shared, shared.claim(config)


def alone(splits, config, lam, replicate, shuffle_seed):
    """Validation accuracy of one network trained by itself: init seed first_seed + replicate."""
    result = train(splits, replace(config.train, shuffle_seed=shuffle_seed), [lam],
                   [config.study.first_seed + replicate])
    return float(np.mean(network.predict(network.member(result.params, 0), splits.val.X) == splits.val.y))


@pytest.mark.parametrize("replicates", ["paired", "init"])
def test_each_replicate_is_the_network_trained_alone_and_tell_records_the_means(study_url, splits, replicates):
    config, shared, trials = claimed_study(study_url, search_config(replicates))
    assert len(trials) == 2
    outcome = population.train_population(shared, trials, config, splits)
    # paired: replicate r trains on the mini-batch order of shuffle seed 10 + r; init: all on shuffle seed 10.
    expected = {lam: [alone(splits, config, lam, r, 10 + r if replicates == "paired" else 10) for r in (0, 1)]
                for lam in GRID}
    assert len(outcome.blocks) == 1
    for result in outcome.results:
        assert isinstance(result, TrialResult)
        assert result.state == "COMPLETE" and result.reason == "" and result.round == 1
        assert result.replicates == [0, 1]
        assert result.accuracies == pytest.approx(expected[result.lam], abs=1e-12)

    told = population.tell(shared, outcome)
    assert [r.number for r in told] == [t.number for t in trials]
    assert all(isinstance(r, TrialResult) and r.recorded and r.prior == {} for r in told)
    for result in told:
        frozen = shared.study.trials[result.number]
        assert frozen.state == TrialState.COMPLETE
        assert frozen.value == pytest.approx(np.mean(expected[result.lam]), abs=1e-12)
        assert frozen.user_attrs["replicates"] == [0, 1]
        assert frozen.user_attrs["val_accuracies"] == pytest.approx(expected[result.lam], abs=1e-12)
        assert frozen.user_attrs["val_accuracy_std"] == pytest.approx(np.std(expected[result.lam]), abs=1e-12)
        assert result.mean == frozen.value and result.std == frozen.user_attrs["val_accuracy_std"]


def test_the_claimed_trials_train_as_one_block_under_either_protocol(study_url, splits):
    config, _, trials = claimed_study(study_url, search_config(n_seeds=3))
    claimed = population._claimed(trials, config, splits.train.n)
    assert population.plan_blocks(claimed, config) == [[(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]]
    init = replace(config, study=replace(config.study, replicates="init"))
    assert population.plan_blocks(claimed, init) == [[(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]]
    # 100 images / 20 per batch, one cycle of 2 x 5 steps: 10 steps per block.
    assert population.total_steps(trials, config, splits.train.n) == 10
    assert population.total_steps(trials, init, splits.train.n) == 10


def test_a_trial_taken_over_by_another_worker_is_not_recorded_again(study_url, splits):
    config, shared, trials = claimed_study(study_url, search_config(n_seeds=1))
    outcome = population.train_population(shared, trials, config, splits)
    lost = trials[0]
    shared.storage.set_trial_state_values(shared.trial_id(lost.number), TrialState.FAIL)  # another worker failed it
    told = population.tell(shared, outcome)
    assert [r.recorded for r in told] == [False, True]
    assert shared.study.trials[lost.number].state == TrialState.FAIL
    assert "val_accuracies" in shared.study.trials[trials[1].number].user_attrs
    assert shared.study.trials[trials[1].number].state == TrialState.COMPLETE


def test_a_diverging_trial_fails_with_the_step_and_replicate_in_its_reason(study_url, splits):
    config = search_config(n_seeds=1)
    config = replace(config, study=replace(config.study, grid=(0.0, 1e12)))
    config, shared, trials = claimed_study(study_url, config)
    outcome = population.train_population(shared, trials, config, splits)
    by_lam = {r.lam: r for r in outcome.results}
    assert by_lam[0.0].state == "COMPLETE"
    failed = by_lam[1e12]
    assert failed.state == "FAIL"
    assert failed.reason.startswith("diverged: NaN or inf in the cost at update step ")
    assert "(replicate 0, eta_max 0.1)" in failed.reason
    population.tell(shared, outcome)
    frozen = shared.study.trials[failed.number]
    assert frozen.state == TrialState.FAIL and frozen.user_attrs["final_failure"] is True
    assert frozen.user_attrs["reason"] == failed.reason
