"""Populations whose members see different mini-batch orders (``shuffle_seed``), one stream per seed,
against the populations of each stream trained on their own, on the tiny CIFAR-10 copy."""

from dataclasses import replace

import numpy as np
import pytest

from clrsearch.config import DataConfig, TrainConfig
from clrsearch.data import load_splits
from clrsearch.nn import network
from clrsearch.nn.trainer import train

# 200 training images in mini-batches of 20: 10 update steps per epoch.
BASE = TrainConfig(n_batch=20, hidden=8, dtype="float64", eta_min=1e-3, eta_max=5e-2, n_s=10, cycles=2,
                   evals_per_cycle=2, augment="flip")
SHORT = replace(BASE, n_s=5, cycles=1)
LAMS = (0.01, 0.0, 0.001, 0.05, 0.002)
SEEDS = (3, 4, 5, 6, 7)


@pytest.fixture
def cifar(tiny_cifar):
    return load_splits(DataConfig(split="batch1", data_dir=str(tiny_cifar)), dtype=np.float64, download=False)


def alone(cifar, configs, members, on_eval=None):
    """The population of ``members`` (a list of indices) trained on its own."""
    return train(cifar, [configs[k] for k in members], [LAMS[k] for k in members],
                 [SEEDS[k] for k in members], on_eval=on_eval)


def assert_members_equal(together, k, single, j):
    for name in network.PARAM_NAMES:
        np.testing.assert_array_equal(together.params[name][k], single.params[name][j], err_msg=f"{k} {name}")
    at = np.isin(together.history.steps, single.history.steps)
    for name, values in single.history.metrics.items():
        if name.endswith("accuracy"):  # losses are sums over evaluation chunks, whose size follows K
            np.testing.assert_array_equal(together.history.metrics[name][at, k], values[:, j], err_msg=name)


@pytest.mark.parametrize("seeds", [(1, 2, 1, 2, 1), (7, 7, 9, 9, 9)])
def test_each_stream_trains_bit_for_bit_as_its_population_alone(cifar, seeds):
    configs = [replace(BASE, shuffle_seed=s) for s in seeds]
    together = train(cifar, configs, LAMS, SEEDS)
    for seed in set(seeds):
        members = [k for k, s in enumerate(seeds) if s == seed]
        single = alone(cifar, configs, members)
        for j, k in enumerate(members):
            assert_members_equal(together, k, single, j)
    assert together.status == ["finished"] * 5


def test_streams_with_mixed_schedules_and_a_stopped_member(cifar):
    configs = [replace(BASE, shuffle_seed=1), replace(SHORT, shuffle_seed=2), replace(BASE, shuffle_seed=2),
               replace(BASE, shuffle_seed=1), replace(SHORT, shuffle_seed=1)]
    together = train(cifar, configs, LAMS, SEEDS, on_eval=lambda point: [3] if point.step == 10 else ())
    assert together.status == ["finished", "finished", "finished", "stopped", "finished"]
    assert together.stopped_at == [40, 10, 40, 10, 10]
    # the same rows in the same order, and member 3 (row 1 of stream 1) stopped at the same step
    stream_1 = alone(cifar, configs, [0, 3, 4], on_eval=lambda point: [1] if point.step == 10 else ())
    stream_2 = alone(cifar, configs, [1, 2])
    for single, members in ((stream_1, [0, 3, 4]), (stream_2, [1, 2])):
        for j, k in enumerate(members):
            assert_members_equal(together, k, single, j)


def test_the_streams_differ_and_follow_their_seed(cifar):
    configs = [replace(BASE, shuffle_seed=s) for s in (1, 2)]
    result = train(cifar, configs, LAMS[:1] * 2, SEEDS[:1] * 2)
    assert not np.array_equal(result.params["W1"][0], result.params["W1"][1]), "each stream has its own order"
