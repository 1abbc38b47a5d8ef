"""The training loop against plain gradient descent written out step by step,
on tiny synthetic problems in float64."""

from types import SimpleNamespace

import numpy as np
import pytest

from clrsearch.config import TrainConfig
from clrsearch.errors import UsageError
from clrsearch.nn import network
from clrsearch.nn.schedule import cyclic_lr
from clrsearch.nn.step import Population
from clrsearch.nn.threads import MemberThreads
from clrsearch.nn.trainer import TrainingData, train
from helpers import GAUSS_C as C
from helpers import GAUSS_D as D
from helpers import gaussian_dataset, relative_difference

HIDDEN = 8

TRAIN, VAL = gaussian_dataset(60, seed=0), gaussian_dataset(30, seed=1)
DATA = TrainingData(TRAIN, VAL)


def config(**fields):
    base = dict(n_batch=10, cycles=1, n_s=6, eta_min=1e-3, eta_max=5e-2, hidden=HIDDEN, dtype="float64")
    return TrainConfig(**{**base, **fields})


def gradient_descent(params, batches, etas, lam):
    """W <- W - eta_t dJ(batch_t)/dW for every parameter: SPEC's update, one network."""
    params = {k: v.copy() for k, v in params.items()}
    for (Xb, Yb), eta in zip(batches, etas):
        grads = network.gradients(params, Xb, Yb, lam)
        params = {k: params[k] - eta * grads[k] for k in params}
    return params


def population_of(start, lams):
    """A Population of copies of the networks ``start``, all rows on stream 0."""
    return Population({k: v.copy() for k, v in start.items()}, np.asarray(lams, dtype=float), np.zeros(len(lams), int))


@pytest.mark.parametrize("eta, lams", [(0.05, (0.0, 0.01, 0.2)), (0.4, (0.0, 1.0, 2.0))])
def test_population_steps_are_plain_gradient_descent(eta, lams):
    # With eta * lam = 0.4 and 0.8 the first-layer scale kept by the population
    # falls below its folding threshold within a few steps, and turns negative.
    lams = np.array(lams)
    seeds = (3, 4, 5)
    start = network.init_population(D, HIDDEN, C, seeds)
    population = population_of(start, lams)
    batches = [(TRAIN.X[:, i:i + 10], TRAIN.Y[:, i:i + 10]) for i in range(0, 60, 10)]
    for Xb, Yb in batches:
        population.step({0: (Xb, Yb)}, [eta] * 3, MemberThreads())
    got = population.params()
    for k, lam in enumerate(lams):
        expected = gradient_descent(network.member(start, k), batches, [eta] * len(batches), lam)
        for name in network.PARAM_NAMES:
            assert relative_difference(got[name][k], expected[name]) < 1e-10, f"member {k} {name}"


def test_reading_the_parameters_changes_nothing_and_folding_the_scale_keeps_w1():
    lams = np.array([0.0, 0.5])
    population = population_of(network.init_population(D, HIDDEN, C, (3, 4)), lams)
    population.step({0: (TRAIN.X[:, :10], TRAIN.Y[:, :10])}, [0.1, 0.1], MemberThreads())
    V1, scale = population.V1.copy(), population.scale.copy()
    first = {k: v.copy() for k, v in population.params().items()}
    np.testing.assert_array_equal(population.V1, V1)
    np.testing.assert_array_equal(population.scale, scale)
    assert scale[1] == pytest.approx(1 - 2 * 0.1 * 0.5)  # the weight decay of member 1, kept as its scale
    population.fold_scale()
    np.testing.assert_array_equal(population.scale, [1.0, 1.0])
    for name in network.PARAM_NAMES:
        np.testing.assert_allclose(population.params()[name], first[name], rtol=1e-15, err_msg=name)


def test_one_step_equals_params_minus_eta_times_gradients():
    lam, eta = 0.05, 0.1
    start = network.init_population(D, HIDDEN, C, (0,))
    population = population_of(start, [lam])
    Xb, Yb = TRAIN.X[:, :20], TRAIN.Y[:, :20]
    population.step({0: (Xb, Yb)}, [eta], MemberThreads())
    grads = network.gradients(start, Xb, Yb, lam)
    for name in network.PARAM_NAMES:
        np.testing.assert_allclose(population.params()[name], start[name] - eta * grads[name], rtol=1e-12,
                                   atol=1e-15, err_msg=name)


def test_train_follows_the_schedule_on_full_batches():
    # n_batch = N: every update sees the whole set, so the order of the columns
    # does not matter and the run is two steps of gradient descent at eta_0, eta_1.
    cfg = config(n_batch=60, n_s=1, cycles=1)
    result = train(DATA, cfg, [0.02], [9])
    etas = [cyclic_lr(t, cfg.eta_min, cfg.eta_max, cfg.n_s) for t in range(2)]
    start = network.init_params(D, HIDDEN, C, np.random.default_rng(9))
    expected = gradient_descent(start, [(TRAIN.X, TRAIN.Y)] * 2, etas, 0.02)
    for name in network.PARAM_NAMES:
        assert relative_difference(result.params[name][0], expected[name]) < 1e-10, name


def shuffled_batches(data, n_batch, shuffle_seed, steps):
    """The mini-batches of ``steps`` updates: a permutation of the images from ``shuffle_seed`` every epoch."""
    rng, batches = np.random.default_rng(shuffle_seed), []
    while len(batches) < steps:
        order = rng.permutation(data.X.shape[1])
        batches += [(data.X[:, order[i:i + n_batch]], data.Y[:, order[i:i + n_batch]])
                    for i in range(0, data.X.shape[1] - n_batch + 1, n_batch)]
    return batches[:steps]


def test_each_member_is_plain_gradient_descent_on_its_own_stream_and_schedule():
    configs = [config(n_s=7, cycles=2, shuffle_seed=1), config(n_s=4, cycles=1, shuffle_seed=2, clr_mode="triangular2"),
               config(n_s=7, cycles=2, shuffle_seed=2, eta_max=0.1)]
    lams, seeds = (0.0, 0.01, 0.3), (5, 6, 7)
    result = train(DATA, configs, lams, seeds)
    for k, (cfg, lam, seed) in enumerate(zip(configs, lams, seeds)):
        etas = cyclic_lr(np.arange(cfg.total_steps), cfg.eta_min, cfg.eta_max, cfg.n_s, cfg.clr_mode)
        start = network.init_params(D, HIDDEN, C, np.random.default_rng(seed))
        expected = gradient_descent(start, shuffled_batches(TRAIN, 10, cfg.shuffle_seed, cfg.total_steps), etas, lam)
        np.testing.assert_array_equal(result.history.eta_of(k), etas)
        for name in network.PARAM_NAMES:
            assert relative_difference(result.params[name][k], expected[name]) < 1e-10, f"member {k} {name}"
    assert result.status == ["finished"] * 3 and result.stopped_at == [28, 8, 28]


def test_a_tiny_training_set_is_overfitted():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((30, 20))  # (D, N): 20 images, 30 inputs, random labels
    y = np.arange(20) % C
    tiny = SimpleNamespace(X=X, Y=np.eye(C)[:, y], y=y)
    result = train(TrainingData(tiny), config(n_batch=5, n_s=100, cycles=2, eta_max=0.1, hidden=50), [0.0], [0])
    assert network.accuracy(network.member(result.params, 0), X, y) == 1.0
    assert result.history.final("train_accuracy")[0] == 1.0
    assert result.history.final("train_loss")[0] < 0.05


def test_same_seeds_give_bit_identical_runs():
    cfg = config(n_s=9, cycles=2)
    runs = [train(DATA, cfg, [0.0, 0.01], [1, 2]) for _ in range(2)]
    for name in network.PARAM_NAMES:
        np.testing.assert_array_equal(runs[0].params[name], runs[1].params[name], err_msg=name)
    for name, values in runs[0].history.metrics.items():
        np.testing.assert_array_equal(values, runs[1].history.metrics[name], err_msg=name)
    np.testing.assert_array_equal(runs[0].history.eta, runs[1].history.eta)
    np.testing.assert_array_equal(runs[0].history.steps, runs[1].history.steps)
    other = train(DATA, config(n_s=9, cycles=2, shuffle_seed=1), [0.0, 0.01], [1, 2])
    assert not np.array_equal(other.params["W1"], runs[0].params["W1"]), "the batch order must follow shuffle_seed"


def test_a_population_trains_each_member_as_if_alone():
    cfg = config(n_s=9, cycles=2)
    lams, seeds = (0.0, 0.01, 0.1), (11, 12, 13)
    together = train(DATA, cfg, lams, seeds)
    for k, (lam, seed) in enumerate(zip(lams, seeds)):
        alone = train(DATA, cfg, [lam], [seed])
        for name in network.PARAM_NAMES:
            diff = relative_difference(together.params[name][k], alone.params[name][0])
            assert diff < 1e-6, f"member {k} {name}: relative difference {diff:.1e}"
        for name, values in together.history.metrics.items():
            np.testing.assert_allclose(values[:, k], alone.history.metrics[name][:, 0], rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("mode, gamma", [("triangular", 1.0), ("triangular2", 1.0), ("exp_range", 0.99)])
def test_run_has_two_n_s_cycles_updates_with_the_schedule_eta(mode, gamma):
    cfg = config(n_s=7, cycles=3, clr_mode=mode, gamma=gamma)
    counter = SimpleNamespace(n=0)
    counter.update = lambda n: setattr(counter, "n", counter.n + n)
    result = train(DATA, cfg, [0.0], [0], progress=counter)
    assert counter.n == 2 * 7 * 3
    assert result.history.eta.shape == (2 * 7 * 3, 1)
    for t, eta in enumerate(result.history.eta_of(0)):
        assert eta == pytest.approx(cyclic_lr(t, cfg.eta_min, cfg.eta_max, 7, mode, gamma), rel=1e-12), f"t = {t}"
    assert result.status == ["finished"] and result.stopped_at == [2 * 7 * 3]


def collect_points(cfg):
    points = []
    result = train(DATA, cfg, [0.0, 0.1], [0, 1], on_eval=lambda p: points.append(p))
    return result, points


def test_evaluation_points_are_the_epochs_and_the_cycle_ends():
    # 60 images, batches of 10: an epoch is 6 steps; cycles of 2 x 7 steps end at 14 and 28.
    result, points = collect_points(config(n_s=7, cycles=2))
    expected = [0, 6, 12, 14, 18, 24, 28]
    np.testing.assert_array_equal(result.history.steps, expected)
    np.testing.assert_allclose(result.history.epochs, np.array(expected) / 6)
    assert [p.step for p in points] == expected
    assert [p.step for p in points if p.cycle_end] == [14, 28]
    assert result.history.batches_per_epoch == 6
    for name, values in result.history.metrics.items():
        assert values.shape == (len(expected), 2), name


def test_evals_per_cycle_spreads_the_points_over_each_cycle():
    result, _ = collect_points(config(n_s=8, cycles=2, evals_per_cycle=4))
    np.testing.assert_array_equal(result.history.steps, [0, 4, 8, 12, 16, 20, 24, 28, 32])


def test_recorded_metrics_are_those_of_the_final_networks():
    lams = np.array([0.0, 0.1])
    result, _ = collect_points(config(n_s=7, cycles=2))
    for k, lam in enumerate(lams):
        net = network.member(result.params, k)
        for prefix, data in (("train", TRAIN), ("val", VAL)):
            m = result.history.metrics
            assert m[f"{prefix}_loss"][-1, k] == pytest.approx(network.loss(net, data.X, data.Y), rel=1e-10)
            assert m[f"{prefix}_cost"][-1, k] == pytest.approx(network.cost(net, data.X, data.Y, lam), rel=1e-10)
            assert m[f"{prefix}_accuracy"][-1, k] == pytest.approx(network.accuracy(net, data.X, data.y))


def test_the_first_point_is_the_initial_network():
    result, _ = collect_points(config())
    start = network.init_params(D, HIDDEN, C, np.random.default_rng(1))
    assert result.history.metrics["val_cost"][0, 1] == pytest.approx(network.cost(start, VAL.X, VAL.Y, 0.1), rel=1e-10)


def test_a_diverging_member_is_reported_while_the_others_finish():
    # lambda = 1e12 makes the weight decay factor 1 - 2 eta lam about -1e9 per step.
    cfg = config(n_s=20, cycles=1)
    result = train(DATA, cfg, [0.0, 1e12, 0.01], [0, 1, 2])
    assert result.status == ["finished", "diverged", "finished"]
    assert 0 < result.stopped_at[1] < cfg.total_steps
    assert result.stopped_at[0] == result.stopped_at[2] == cfg.total_steps
    for k in (0, 2):
        assert all(np.isfinite(result.params[name][k]).all() for name in network.PARAM_NAMES), f"member {k}"
        assert np.isfinite(result.history.metrics["val_cost"][:, k]).all()
    assert np.isnan(result.history.metrics["val_cost"][-1, 1])
    # The members that finish are untouched by the one that diverged.
    for k, (lam, seed) in ((0, (0.0, 0)), (2, (0.01, 2))):
        alone = train(DATA, cfg, [lam], [seed])
        assert relative_difference(result.params["W1"][k], alone.params["W1"][0]) < 1e-6, f"member {k}"


def test_a_huge_eta_max_diverges():
    result = train(DATA, config(n_s=20, eta_max=1e8), [0.01], [0])
    assert result.status == ["diverged"]
    assert result.stopped_at[0] < 40


def test_on_eval_can_stop_a_member():
    stop_at = 12

    def prune(point):
        return [1] if point.step == stop_at else []

    cfg = config(n_s=7, cycles=2)
    result = train(DATA, cfg, [0.0, 0.1, 0.01], [0, 1, 2], on_eval=prune)
    assert result.status == ["finished", "stopped", "finished"]
    assert result.stopped_at == [28, stop_at, 28]
    m, steps = result.history.metrics, result.history.steps
    row = int(np.flatnonzero(steps == stop_at)[0])
    assert np.isnan(m["val_cost"][row + 1:, 1]).all() and np.isfinite(m["val_cost"][:row + 1, 1]).all()
    # The stopped member comes back as it was when it stopped.
    stopped = network.member(result.params, 1)
    assert m["train_cost"][row, 1] == pytest.approx(network.cost(stopped, TRAIN.X, TRAIN.Y, 0.1), rel=1e-10)
    assert np.isfinite(m["val_cost"][-1, [0, 2]]).all()


def test_stopping_before_any_update_returns_the_initial_network():
    result = train(DATA, config(), [0.0], [4], on_eval=lambda point: [0])
    assert result.status == ["stopped"] and result.stopped_at == [0]
    start = network.init_params(D, HIDDEN, C, np.random.default_rng(4))
    for name in network.PARAM_NAMES:
        np.testing.assert_array_equal(result.params[name][0], start[name], err_msg=name)


def test_snapshots_hold_the_networks_at_every_cycle_end():
    lams, seeds = [0.0, 0.05], [0, 1]
    result = train(DATA, config(n_s=9, cycles=3, snapshots=True), lams, seeds)
    assert [len(s) for s in result.snapshots] == [3, 3]
    # The first cycle of a 3-cycle run is a whole 1-cycle run: same schedule, same batches.
    one_cycle = train(DATA, config(n_s=9, cycles=1), lams, seeds)
    for k in range(2):
        for name in network.PARAM_NAMES:
            np.testing.assert_array_equal(result.snapshots[k][-1][name], result.params[name][k], err_msg=name)
            np.testing.assert_allclose(result.snapshots[k][0][name], one_cycle.params[name][k], rtol=1e-12,
                                       atol=1e-15)
        assert not np.allclose(result.snapshots[k][1]["W1"], result.snapshots[k][0]["W1"])
    assert train(DATA, config(), [0.0, 0.05], [0, 1]).snapshots == [[], []]


def test_float32_training_keeps_float32_weights():
    result = train(DATA, config(dtype="float32"), [0.01], [0])
    assert all(result.params[name].dtype == np.float32 for name in network.PARAM_NAMES)
    assert result.status == ["finished"]


def test_n_batch_larger_than_the_training_set_raises():
    with pytest.raises(UsageError, match="n_batch"):
        train(DATA, config(n_batch=61), [0.0], [0])


def test_negative_lambda_raises():
    with pytest.raises(UsageError, match="lambda"):
        train(DATA, config(), [0.01, -0.01], [0, 1])


def test_one_lambda_per_seed_is_required():
    with pytest.raises(UsageError, match="one lambda per seed"):
        train(DATA, config(), [0.01, 0.02], [0])
