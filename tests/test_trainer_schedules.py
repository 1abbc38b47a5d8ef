"""Populations whose members follow schedules of their own (one TrainConfig each),
against each member trained alone and against plain gradient descent, on the tiny
CIFAR-10 copy."""

from dataclasses import replace

import numpy as np
import pytest

from clrsearch.config import DataConfig, TrainConfig
from clrsearch.data import load_splits
from clrsearch.errors import UsageError
from clrsearch.nn import network
from clrsearch.nn.schedule import cyclic_lr
from clrsearch.nn.step import Population
from clrsearch.nn.threads import MemberThreads
from clrsearch.nn.trainer import train

# 200 training images in mini-batches of 20: 10 update steps per epoch.
BASE = TrainConfig(n_batch=20, hidden=8, dtype="float64", eta_min=1e-3, eta_max=5e-2, shuffle_seed=4)
LONG = replace(BASE, n_s=10, cycles=2)  # 40 steps
SHORT = replace(BASE, n_s=5, cycles=1, eta_max=0.1, clr_mode="triangular2")  # 10 steps
CUT = replace(BASE, n_s=5, cycles=3, clr_mode="exp_range", gamma=0.98, max_steps=20)  # 20 steps
PEAK = replace(LONG, eta_min=1e-4, eta_max=0.2, clr_mode="triangular2")  # 40 steps, another schedule
LAMS = (0.01, 0.0, 0.001, 0.05)
SEEDS = (3, 4, 5, 6)
# OpenBLAS rounds a row of the first-layer product (K·M, D) @ (D, B) differently for
# different row counts K·M (it already does so for one schedule, K = 3 against K = 1),
# so a member is equal to its run alone up to rounding, and bit for bit only to the
# same member of a population that keeps the same size.
ROUNDING = {"float64": 1e-12, "float32": 1e-5}  # relative to the largest entry


@pytest.fixture
def cifar(tiny_cifar):
    return load_splits(DataConfig(split="batch1", data_dir=str(tiny_cifar)), dtype=np.float64, download=False)


def run(cifar, config, lams=LAMS, seeds=SEEDS):
    """train() on the tiny set, with the EvalPoints it showed its callback."""
    points = []
    result = train(cifar, config, lams, seeds, on_eval=points.append)
    return result, points


def assert_close(actual, expected, tolerance, what):
    difference = np.abs(actual - expected).max() / np.abs(expected).max()
    assert difference < tolerance, f"{what}: relative difference {difference:.2e}"


@pytest.mark.parametrize("dtype", [pytest.param("float64", marks=pytest.mark.slow), "float32"])
def test_each_member_of_a_mixed_population_trains_as_if_alone(cifar, dtype):
    # Evaluation points differ between the members, so the union is a superset of each one's.
    evals = (4, None, 3, 2)
    configs = [replace(c, dtype=dtype, evals_per_cycle=e) for c, e in zip((LONG, SHORT, LONG, CUT), evals)]
    mixed, _ = run(cifar, configs)
    for k, config in enumerate(configs):
        alone, _ = run(cifar, config, [LAMS[k]], [SEEDS[k]])
        for name in network.PARAM_NAMES:
            assert_close(mixed.params[name][k], alone.params[name][0], ROUNDING[dtype], f"member {k} {name}")
        at = np.isin(mixed.history.steps, alone.history.steps)
        np.testing.assert_array_equal(mixed.history.steps[at], alone.history.steps)
        for name, values in alone.history.metrics.items():
            np.testing.assert_allclose(mixed.history.metrics[name][at, k], values[:, 0], rtol=ROUNDING[dtype],
                                       atol=ROUNDING[dtype], err_msg=f"member {k} {name}")


@pytest.mark.parametrize("dtype", ["float64", pytest.param("float32", marks=pytest.mark.slow)])
def test_mixed_schedules_equal_single_schedule_populations_of_the_same_size_bit_for_bit(cifar, dtype):
    configs = [replace(c, dtype=dtype) for c in (LONG, PEAK, PEAK, LONG)]
    mixed, _ = run(cifar, configs)
    for k, config in enumerate(configs):
        single, _ = run(cifar, config)
        for name in network.PARAM_NAMES:
            np.testing.assert_array_equal(mixed.params[name][k], single.params[name][k], err_msg=f"member {k} {name}")
        np.testing.assert_array_equal(mixed.history.steps, single.history.steps)
        for name, values in single.history.metrics.items():
            np.testing.assert_array_equal(mixed.history.metrics[name][:, k], values[:, k], err_msg=f"{k} {name}")


def test_a_shorter_member_stops_finished_at_its_own_last_step(cifar):
    configs = [LONG, SHORT, LONG, CUT]
    result, points = run(cifar, configs)
    assert result.status == ["finished"] * 4
    assert result.stopped_at == [40, 10, 40, 20]
    steps = result.history.steps
    assert steps.tolist() == [0, 10, 20, 30, 40]
    accuracy = result.history.metrics["val_accuracy"]  # (P, K)
    for k, total in enumerate(result.stopped_at):
        assert np.isfinite(accuracy[steps <= total, k]).all(), k
        assert np.isnan(accuracy[steps > total, k]).all(), k
    assert [p.active for p in points] == [(0, 1, 2, 3), (0, 1, 2, 3), (0, 2, 3), (0, 2), (0, 2)]


def test_each_members_eta_is_its_own_cyclic_schedule(cifar):
    configs = [LONG, SHORT, LONG, CUT]
    result, _ = run(cifar, configs)
    assert result.history.eta.shape == (40, 4)
    for k, c in enumerate(configs):
        expected = cyclic_lr(np.arange(c.total_steps), c.eta_min, c.eta_max, c.n_s, c.clr_mode, c.gamma)
        np.testing.assert_array_equal(result.history.eta_of(k), expected)
        assert np.isnan(result.history.eta[c.total_steps:, k]).all()
    single, _ = run(cifar, LONG)
    assert single.history.eta.shape == (40, 4)
    np.testing.assert_array_equal(single.history.eta_of(2), result.history.eta_of(0))


def test_a_step_with_one_eta_per_member_is_plain_gradient_descent(cifar):
    lams, etas = np.array(LAMS), np.array([0.05, 0.001, 0.2, 0.0])
    start = network.init_population(cifar.train.X.shape[0], 8, 10, SEEDS)
    population = Population({k: v.copy() for k, v in start.items()}, lams, np.zeros(4, int))
    Xb, Yb = np.asfortranarray(cifar.train.X[:, :20]), cifar.train.Y[:, :20]  # (D, B), (C, B)
    population.step({0: (Xb, Yb)}, etas, MemberThreads())
    got = population.params()
    for k in range(4):
        params = network.member(start, k)
        grads = network.gradients(params, Xb, Yb, lams[k])
        for name in network.PARAM_NAMES:
            expected = params[name] - etas[k] * grads[name]
            np.testing.assert_allclose(got[name][k], expected, rtol=1e-12, atol=1e-15, err_msg=f"member {k} {name}")


def test_cycle_end_members_name_the_active_members_whose_cycle_ends(cifar):
    configs = [LONG, SHORT, LONG, CUT]
    _, points = run(cifar, configs)
    for p in points:
        ending = tuple(k for k in p.active
                       if p.step > 0 and p.step % (2 * configs[k].n_s) == 0 and p.step <= configs[k].total_steps)
        assert p.cycle_end_members == ending, p.step
        assert p.cycle_end == bool(ending), p.step
    assert [p.step for p in points if p.cycle_end] == [10, 20, 40]


def test_a_single_schedule_marks_every_active_member_at_its_cycle_ends(cifar):
    _, points = run(cifar, LONG)
    assert [(p.step, p.cycle_end_members) for p in points if p.cycle_end] == [(20, (0, 1, 2, 3)), (40, (0, 1, 2, 3))]


def test_mixed_snapshots_hold_each_members_network_at_its_cycle_ends(cifar):
    configs = [replace(c, snapshots=True) for c in (LONG, SHORT, LONG, CUT)]
    result, _ = run(cifar, configs)
    assert [len(s) for s in result.snapshots] == [2, 1, 2, 2]
    for k in range(4):
        for name in network.PARAM_NAMES:  # every member's run ends at a cycle end
            np.testing.assert_array_equal(result.snapshots[k][-1][name], result.params[name][k], err_msg=name)
    first_cycle, _ = run(cifar, replace(configs[0], cycles=1), LAMS[:1], SEEDS[:1])
    for name in network.PARAM_NAMES:
        assert_close(result.snapshots[0][0][name], first_cycle.params[name][0], ROUNDING["float64"], name)


def test_a_member_stopped_by_the_callback_leaves_the_others_on_their_schedules(cifar):
    configs = [LONG, SHORT, LONG, CUT]
    result = train(cifar, configs, LAMS, SEEDS, on_eval=lambda p: [3] if p.step == 10 else ())
    assert result.status == ["finished", "finished", "finished", "stopped"]
    assert result.stopped_at == [40, 10, 40, 10]
    alone, _ = run(cifar, LONG, [LAMS[2]], [SEEDS[2]])
    for name in network.PARAM_NAMES:
        assert_close(result.params[name][2], alone.params[name][0], ROUNDING["float64"], name)


@pytest.mark.parametrize("field, value", [("n_batch", 10), ("hidden", 9), ("dtype", "float32"),
                                          ("eval_train_size", 50), ("snapshots", True), ("augment", "flip")])
def test_members_that_differ_outside_their_schedule_are_refused(cifar, field, value):
    with pytest.raises(UsageError) as error:
        train(cifar, [LONG, replace(SHORT, **{field: value})], LAMS[:2], SEEDS[:2])
    message = str(error.value)
    assert field in message and "\n" not in message, message


def test_one_config_per_member_is_required(cifar):
    with pytest.raises(UsageError, match="one TrainConfig per member"):
        train(cifar, [LONG, SHORT], LAMS, SEEDS)
    with pytest.raises(UsageError, match="TrainConfig"):
        train(cifar, [LONG, {"n_s": 5}], LAMS[:2], SEEDS[:2])
