"""A population cut into slices of members, one thread each (clrsearch.nn.threads): the same bits as one
slice, on the tiny CIFAR-10 copy, and a single-threaded BLAS inside the slices only."""

import threading
from dataclasses import replace

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from clrsearch.config import DataConfig, TrainConfig
from clrsearch.data import load_splits
from clrsearch.nn import network
from clrsearch.nn.threads import MemberThreads
from clrsearch.nn.trainer import train

# 200 training images in mini-batches of 40: 5 update steps per epoch. A member's first-layer products
# (16 x 3072 @ 3072 x 40) are above the size below which OpenBLAS switches to small-matrix kernels,
# whose sums run in another order: the network of SPEC (50 x 3072 @ 3072 x 100) is far above it.
BASE = TrainConfig(n_batch=40, hidden=16, dtype="float32", eta_min=1e-3, eta_max=5e-2, n_s=10, cycles=2,
                   evals_per_cycle=2, augment="flip")
SHORT = replace(BASE, n_s=5, cycles=1)
LAMS = (0.01, 0.0, 0.001, 0.05, 0.002, 0.02, 0.0)
SEEDS = (3, 3, 4, 4, 5, 5, 6)
CONFIGS = [replace(BASE, shuffle_seed=1), replace(SHORT, shuffle_seed=2), replace(BASE, shuffle_seed=2),
           replace(BASE, shuffle_seed=1), replace(SHORT, shuffle_seed=1), replace(BASE, shuffle_seed=3),
           replace(BASE, shuffle_seed=3)]


class Steps:
    """A progress object that counts the steps."""

    def __init__(self):
        self.steps = 0

    def update(self, n):
        self.steps += n


def blas_threads():
    return min(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")


@pytest.fixture
def cifar(tiny_cifar):
    return load_splits(DataConfig(split="batch1", data_dir=str(tiny_cifar)), dtype=np.float32, download=False)


@pytest.mark.parametrize("K, n, expected", [(10, 3, [(0, 3), (3, 6), (6, 10)]), (2, 4, [(0, 1), (1, 2)]),
                                            (5, 1, [(0, 5)])])
def test_slices_are_adjacent_runs_of_members_as_many_as_the_cores_and_at_most_K(K, n, expected):
    assert MemberThreads(lambda: n).slices(K) == expected
    assert MemberThreads().slices(K) == [(0, K)]


def test_slices_run_on_threads_of_their_own_with_a_single_threaded_blas(cifar):
    seen = {}
    before = blas_threads()
    together = threading.Barrier(3, timeout=30)  # the three slices must run at the same time to pass it

    def work(i, start, stop):
        seen[i] = (threading.get_ident(), blas_threads(), start, stop)
        together.wait()
        return i

    with MemberThreads(lambda: 3) as threads:
        assert threads.map(work, 7) == [0, 1, 2]
    assert sorted((start, stop) for _, _, start, stop in seen.values()) == [(0, 2), (2, 4), (4, 7)]
    assert len({ident for ident, _, _, _ in seen.values()}) == 3
    assert {blas for _, blas, _, _ in seen.values()} == {1}
    assert blas_threads() == before


@pytest.mark.parametrize("n", [2, 3, 7])
def test_any_number_of_slices_trains_the_same_networks_as_one(cifar, n):
    """Mixed schedules, three streams, shared init seeds and a member stopped mid-run; OpenBLAS rounds a
    product's row by its place in the rows it is given, so the slices agree to float32 rounding."""
    def stop_member_3(point):
        return [3] if point.step == 10 else ()

    one = train(cifar, CONFIGS, LAMS, SEEDS, on_eval=stop_member_3)
    bar = Steps()
    sliced = train(cifar, CONFIGS, LAMS, SEEDS, on_eval=stop_member_3, progress=bar,
                   threads=(lambda: n) if n == 3 else n)  # a count, or a callable that gives it
    assert sliced.status == one.status and sliced.stopped_at == one.stopped_at
    assert one.status[3] == "stopped" and bar.steps == 40
    for name in network.PARAM_NAMES:
        np.testing.assert_allclose(sliced.params[name], one.params[name], rtol=1e-4, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(sliced.history.steps, one.history.steps)
    for name, values in one.history.metrics.items():
        np.testing.assert_allclose(sliced.history.metrics[name], values, rtol=1e-4, atol=1e-6, err_msg=name)


def test_the_first_evaluation_is_that_of_each_member_evaluated_alone(cifar):
    """Members of one init seed share their first evaluation; each member's cost still holds its own lambda."""
    config = replace(BASE, max_steps=1, augment="none")
    result = train(cifar, config, LAMS, SEEDS)
    for k, (lam, seed) in enumerate(zip(LAMS, SEEDS)):
        start = network.init_params(cifar.train.X.shape[0], BASE.hidden, 10, np.random.default_rng(seed),
                                    np.float32)
        for name, data in (("train", cifar.train), ("val", cifar.val)):
            P = network.forward(start, np.asarray(data.X, np.float32))  # (C, n)
            loss = -np.mean(np.log(np.sum(P * data.Y, axis=0)))
            assert result.history.metrics[f"{name}_accuracy"][0, k] == np.mean(np.argmax(P, axis=0) == data.y)
            assert result.history.metrics[f"{name}_loss"][0, k] == pytest.approx(loss, rel=1e-5)
            assert result.history.metrics[f"{name}_cost"][0, k] == pytest.approx(
                loss + lam * network.weight_norm(start), rel=1e-5)
