"""The network against independent computations: centred differences of the
cost, the initialisation's statistics, and a 2-class, 3-image example worked by hand."""

import numpy as np
import pytest

from clrsearch.nn import network
from helpers import centred_differences, random_network, tiny_problem

D, M, C, N = 6, 5, 3, 4  # tiny sizes: inputs, hidden units, classes, images
H_STEP = 1e-6  # step of the centred differences


def numeric_gradients(params, X, Y, lam, k=None):
    """Centred differences of J = network.cost (of member k of a population)."""
    return centred_differences(lambda p: network.cost(p, X, Y, lam), params, H_STEP, k)


def assert_gradients_agree(analytic, numeric, where=""):
    for name in network.PARAM_NAMES:
        ga, gn = analytic[name], numeric[name]
        assert ga.shape == gn.shape, f"{where}{name}: shape {ga.shape} != {gn.shape}"
        scale = np.abs(ga) + np.abs(gn)
        meaningful = scale > 1e-7
        rel = np.abs(ga - gn)[meaningful] / scale[meaningful]
        assert rel.size and rel.max() < 1e-6, f"{where}{name}: largest relative error {rel.max():.2e}"
        assert np.abs(ga - gn)[~meaningful].max(initial=0) < 1e-8, f"{where}{name}: tiny entries disagree"


@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_gradients_of_one_network_match_centred_differences(lam):
    rng = np.random.default_rng(1)
    X, Y = tiny_problem(rng, D, N, C)
    params = random_network(rng, D, M, C)
    analytic = network.gradients(params, X, Y, lam)
    assert_gradients_agree(analytic, numeric_gradients(params, X, Y, lam), f"lam={lam}: ")


def test_gradients_of_a_population_match_centred_differences_member_by_member():
    rng = np.random.default_rng(2)
    X, Y = tiny_problem(rng, D, N, C)
    lams = np.array([0.0, 0.05, 0.7])  # (K,), one lambda per member
    params = random_network(rng, D, M, C, lead=(lams.size,))  # W1 (K, M, D)
    analytic = network.gradients(params, X, Y, lams)
    for k in range(lams.size):
        member = {name: g[k] for name, g in analytic.items()}
        assert_gradients_agree(member, numeric_gradients(params, X, Y, lams, k), f"member {k}: ")


def test_population_cost_is_each_members_cost_with_its_own_lambda():
    rng = np.random.default_rng(3)
    X, Y = tiny_problem(rng, D, N, C)
    lams = np.array([0.0, 0.2])
    params = random_network(rng, D, M, C, lead=(2,))
    costs = network.cost(params, X, Y, lams)
    assert costs.shape == (2,)
    for k, lam in enumerate(lams):
        one = {name: v[k] for name, v in params.items()}
        norm = np.sum(one["W1"] ** 2) + np.sum(one["W2"] ** 2)
        assert costs[k] == pytest.approx(network.loss(one, X, Y) + lam * norm, rel=1e-12)


def test_init_has_the_spec_scales_and_zero_biases():
    d, m, c = 3000, 400, 10
    params = network.init_params(d, m, c, np.random.default_rng(0))
    assert params["W1"].shape == (m, d) and params["W2"].shape == (c, m)
    assert params["b1"].shape == (m, 1) and params["b2"].shape == (c, 1)
    assert not params["b1"].any() and not params["b2"].any()
    # 1.2 million and 4,000 draws: the sample std is within 0.5% and 5% of the target.
    assert params["W1"].std() == pytest.approx(1 / np.sqrt(d), rel=0.005)
    assert params["W2"].std() == pytest.approx(1 / np.sqrt(m), rel=0.05)
    assert abs(params["W1"].mean()) < 5 / np.sqrt(d * d * m)
    assert abs(params["W2"].mean()) < 5 / np.sqrt(m * c * m)


def test_init_honours_the_dtype():
    params = network.init_params(D, M, C, np.random.default_rng(0), np.float32)
    assert all(v.dtype == np.float32 for v in params.values())


def test_population_member_k_is_the_network_initialised_from_seed_k():
    seeds = (7, 0, 42)
    population = network.init_population(D, M, C, seeds)
    assert population["W1"].shape == (3, M, D) and population["b2"].shape == (3, C, 1)
    for k, seed in enumerate(seeds):
        alone = network.init_params(D, M, C, rng=np.random.default_rng(seed))
        for name in network.PARAM_NAMES:
            np.testing.assert_array_equal(population[name][k], alone[name], err_msg=f"member {k} {name}")


def test_softmax_is_stable_for_huge_scores():
    # Columns (1000, 1000 + ln 3), (-1000, -1000), (1e5, 0): softmax (1/4, 3/4), (1/2, 1/2), (1, 0).
    S = np.array([[1000.0, -1000.0, 1e5], [1000.0 + np.log(3), -1000.0, 0.0]])  # (2, 3)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # exp(-1e5) may underflow to 0
        P = network.softmax(S)
    expected = np.array([[0.25, 0.5, 1.0], [0.75, 0.5, 0.0]])
    np.testing.assert_allclose(P, expected, rtol=1e-12, atol=1e-300)
    stacked = network.softmax(np.stack([S, -S]))  # (K, C, N): classes on axis -2
    np.testing.assert_allclose(stacked[0], expected, rtol=1e-12)
    np.testing.assert_allclose(stacked.sum(axis=-2), 1.0, rtol=1e-12)


def hand_worked():
    """A 2-class, 3-image example whose scores are worked out by hand.

    W1 = diag(1, 2), b1 = 0, W2 = I, b2 = 0, and the images
    x1 = (ln 3, 0), x2 = (0, ln3 / 2), x3 = (-1, ln3 / 2): the hidden layer is
    (ln 3, 0), (0, ln 3), (0, ln 3) (the -1 is cut by the ReLU), so
    p1 = (3/4, 1/4), p2 = p3 = (1/4, 3/4). Labels (0, 0, 1): images 1 and 3
    are right with p = 3/4, image 2 is wrong with p_true = 1/4.
    """
    ln3 = np.log(3)
    params = {"W1": np.diag([1.0, 2.0]), "b1": np.zeros((2, 1)), "W2": np.eye(2), "b2": np.zeros((2, 1))}
    X = np.array([[ln3, 0.0, -1.0], [0.0, ln3 / 2, ln3 / 2]])  # (D=2, N=3)
    y = np.array([0, 0, 1])
    Y = np.eye(2)[:, y]  # (C=2, N=3)
    return params, X, Y, y


def test_loss_cost_accuracy_and_predictions_on_a_hand_worked_example():
    params, X, Y, y = hand_worked()
    expected_loss = -(np.log(3 / 4) + np.log(1 / 4) + np.log(3 / 4)) / 3
    np.testing.assert_allclose(network.forward(params, X), [[0.75, 0.25, 0.25], [0.25, 0.75, 0.75]], rtol=1e-12)
    assert network.loss(params, X, Y) == pytest.approx(expected_loss, rel=1e-12)
    # |W1|² = 1 + 4, |W2|² = 2
    assert network.cost(params, X, Y, 0.1) == pytest.approx(expected_loss + 0.1 * 7, rel=1e-12)
    assert network.cost(params, X, Y, 0.0) == pytest.approx(expected_loss, rel=1e-12)
    np.testing.assert_array_equal(network.predict(params, X), [0, 1, 1])
    assert network.accuracy(params, X, y) == pytest.approx(2 / 3)


def test_predict_and_scalars_have_one_entry_per_member_in_a_population():
    params, X, Y, y = hand_worked()
    flipped = dict(params, W2=params["W2"][::-1].copy())  # swaps the two scores: predictions 1, 0, 0
    population = network.stack([params, flipped])
    assert network.predict(params, X).shape == (3,)
    predictions = network.predict(population, X)
    assert predictions.shape == (2, 3)
    np.testing.assert_array_equal(predictions, [[0, 1, 1], [1, 0, 0]])
    np.testing.assert_allclose(network.accuracy(population, X, y), [2 / 3, 1 / 3])
    costs = network.cost(population, X, Y, np.array([0.0, 0.1]))
    assert costs.shape == (2,)
    assert costs[1] == pytest.approx(-(np.log(1 / 4) + np.log(3 / 4) + np.log(1 / 4)) / 3 + 0.7, rel=1e-12)


def test_ensemble_predict_averages_probabilities_rather_than_counting_votes():
    # On hand_worked's images the hidden layer is (ln 3, 0), (0, ln 3), (0, ln 3). A confident network
    # (W2 = 3 I) gives its class p = 27/28; two mild ones (W2 = I/2, rows swapped) give the other class
    # p = sqrt 3 / (1 + sqrt 3) ~ 0.634. Mean probability of the confident network's class:
    # (27/28 + 2 / (1 + sqrt 3)) / 3 ~ 0.565 > 1/2, so the ensemble follows it although two of three vote against.
    params, X, _, _ = hand_worked()
    confident = dict(params, W2=3 * np.eye(2))
    mild = dict(params, W2=0.5 * np.eye(2)[::-1].copy())
    labels = network.ensemble_predict([confident, mild, mild], X)
    assert labels.dtype == np.int64 and labels.shape == (3,)
    np.testing.assert_array_equal(labels, [0, 1, 1])
    np.testing.assert_array_equal(network.ensemble_predict([mild], X), [1, 0, 0])
    np.testing.assert_array_equal(network.ensemble_predict([mild, mild], X), [1, 0, 0])
