"""Analytic gradients against centred differences, the batched differences
against the one-entry-at-a-time loop, the error table against hand-worked
numbers, and the command line on tiny data."""

import itertools
import json
from types import SimpleNamespace

import numpy as np
import pytest

from clrsearch import gradcheck as command
from clrsearch.cli import gradcheck as cli_gradcheck
from clrsearch.config import DataConfig
from clrsearch.errors import UsageError
from clrsearch.nn import gradcheck, network
from helpers import centred_differences, random_network, tiny_problem

D, M, C, N = 7, 5, 4, 6  # tiny sizes: inputs, hidden units, classes, images


def naive_gradients(params, X, Y, lam, h):
    """Perturb one entry, call network.cost twice: the definition, entry by entry."""
    return centred_differences(lambda p: network.cost(p, X, Y, lam), params, h)


def relative_errors(ga, gn, floor=1e-8):
    """|ga - gn| / (|ga| + |gn|) over the entries whose gradients are not ~0."""
    scale = np.abs(ga) + np.abs(gn)
    meaningful = scale > floor
    return np.abs(ga - gn)[meaningful] / scale[meaningful]


@pytest.mark.parametrize("lam", [0.0, 0.1])
def test_analytic_gradients_match_centred_differences(lam):
    rng = np.random.default_rng(0)
    X, Y = tiny_problem(rng, D, N, C)
    params = random_network(rng, D, M, C)
    analytic = network.gradients(params, X, Y, lam)
    numeric = gradcheck.numerical_gradients(params, X, Y, lam)
    for name in network.PARAM_NAMES:
        assert numeric[name].shape == params[name].shape
        assert np.abs(analytic[name] - numeric[name]).max() < 1e-8, name
        assert relative_errors(analytic[name], numeric[name]).max() < 1e-6, name


def test_population_gradients_match_each_member_alone():
    rng = np.random.default_rng(1)
    X, Y = tiny_problem(rng, D, N, C)
    population = network.init_population(D, M, C, seeds=[3, 4, 5])  # W1 (3, M, D)
    population["b1"] = 0.1 * rng.standard_normal(population["b1"].shape)
    lams = np.array([0.0, 0.01, 0.3])  # (K,)
    analytic = network.gradients(population, X, Y, lams)
    for k, lam in enumerate(lams):
        numeric = gradcheck.numerical_gradients(network.member(population, k), X, Y, lam)
        for name in network.PARAM_NAMES:
            assert np.abs(analytic[name][k] - numeric[name]).max() < 1e-8, (k, name)
            assert relative_errors(analytic[name][k], numeric[name]).max() < 1e-6, (k, name)


@pytest.mark.parametrize("lam", [0.0, 0.05])
def test_batched_differences_equal_the_one_entry_loop(lam):
    rng = np.random.default_rng(2)
    X, Y = tiny_problem(rng, D, N, C)
    params = random_network(rng, D, M, C)
    h = 1e-5
    fast = gradcheck.numerical_gradients(params, X, Y, lam, h)
    slow = naive_gradients(params, X, Y, lam, h)
    for name in network.PARAM_NAMES:
        np.testing.assert_allclose(fast[name], slow[name], rtol=0, atol=1e-10, err_msg=name)


def test_batched_differences_see_the_relu_kink_like_the_loop():
    """With a large step, perturbations cross ReLU kinks; both ways must still agree."""
    rng = np.random.default_rng(3)
    X, Y = tiny_problem(rng, D, N, C)
    params = random_network(rng, D, M, C)
    fast = gradcheck.numerical_gradients(params, X, Y, 0.02, h=0.3)
    slow = naive_gradients(params, X, Y, 0.02, h=0.3)
    for name in network.PARAM_NAMES:
        np.testing.assert_allclose(fast[name], slow[name], rtol=0, atol=1e-12, err_msg=name)


def test_blocks_smaller_than_a_row_give_the_same_numbers(monkeypatch):
    rng = np.random.default_rng(4)
    X, Y = tiny_problem(rng, D, N, C)
    params = network.init_params(D, M, C, rng)
    whole = gradcheck.numerical_gradients(params, X, Y, 0.1)
    monkeypatch.setattr(gradcheck, "_block_rows", lambda c, n: 2)
    blocked = gradcheck.numerical_gradients(params, X, Y, 0.1)
    for name in network.PARAM_NAMES:
        np.testing.assert_allclose(blocked[name], whole[name], rtol=1e-14, atol=0)


def test_entries_selects_parameters():
    rng = np.random.default_rng(5)
    X, Y = tiny_problem(rng, D, N, C)
    params = network.init_params(D, M, C, rng)
    assert set(gradcheck.numerical_gradients(params, X, Y, 0.0, entries=["W2"])) == {"W2"}
    with pytest.raises(ValueError, match="unknown"):
        gradcheck.numerical_gradients(params, X, Y, 0.0, entries=["W3"])


def test_compare_on_a_hand_worked_example():
    analytic = {"W1": np.array([[1.0, 0.0, 1e-3, -2.0, 1e-9]]), "b2": np.array([[0.0]])}
    numeric = {"W1": np.array([[1.0, 0.0, 1e-3 + 4e-6, -2.0 + 2e-7, 3e-9]]),
               "b2": np.array([[1e-13]])}
    # W1 absolute errors: 0, 0, 4e-6, 2e-7, 2e-9 -> 4 of 5 below 1e-6
    # W1 relative errors: 0, 0 (0 / eps), 4e-6 / 2.004e-3, 2e-7 / (4 - 2e-7), 2e-9 / 4e-9
    #                     -> 3 of 5 below 1e-6, largest 0.5
    # b2: |0 - 1e-13| / max(1e-12, 1e-13) = 0.1
    table = gradcheck.compare(analytic, numeric, eps=1e-12)
    assert list(table) == ["W1", "b2"]
    w1 = table["W1"]
    assert w1["pct_abs_below"] == pytest.approx(80.0)
    assert w1["max_abs"] == pytest.approx(4e-6, rel=1e-9)
    assert w1["pct_rel_below"] == pytest.approx(60.0)
    assert w1["max_rel"] == pytest.approx(0.5, rel=1e-6)
    b2 = table["b2"]
    assert (b2["pct_abs_below"], b2["pct_rel_below"]) == (100.0, 0.0)
    assert b2["max_abs"] == pytest.approx(1e-13)
    assert b2["max_rel"] == pytest.approx(0.1)
    assert not gradcheck.passed(table)
    assert gradcheck.passed({"b2": b2})


def test_scenario_inputs_slice_the_training_set():
    X = np.arange(30 * 8, dtype=np.float32).reshape(30, 8)  # (D, N)
    Y = np.eye(C)[:, np.arange(8) % C]  # (C, N)
    X1, Y1 = gradcheck.scenario_inputs(X, Y, 1)
    X2, Y2 = gradcheck.scenario_inputs(X, Y, 2)
    assert X1.shape == (20, 1) and Y1.shape == (C, 1) and X1.dtype == np.float64
    assert X2.shape == (30, 5) and Y2.shape == (C, 5)
    np.testing.assert_array_equal(X2, X[:, :5])
    with pytest.raises(UsageError, match="5 training images"):
        gradcheck.scenario_inputs(X[:, :3], Y[:, :3], 2)


@pytest.fixture
def tiny_splits(monkeypatch):
    """The command's ``load_splits`` serving 6 random images of 24 dimensions, 10 classes; records its calls."""
    rng = np.random.default_rng(6)
    X, Y = tiny_problem(rng, d=24, n=6, c=10)
    calls = []

    def load_splits(config, **options):
        calls.append((config, options))
        return SimpleNamespace(train=SimpleNamespace(X=X, Y=Y, y=Y.argmax(axis=0)))

    monkeypatch.setattr(cli_gradcheck, "load_splits", load_splits)
    return calls


def test_cli_prints_a_table_per_scenario(tiny_splits, capsys):
    assert command.main(["--data-dir", "somewhere", "--no-mlflow"]) == 0
    out = capsys.readouterr().out
    assert "scenario 1: D = 20, N = 1, M = 50" in out
    assert "scenario 2: D = 24, N = 5, M = 50" in out and "lam = 0.01" in out
    assert out.count("100.00%") >= 8
    assert tiny_splits == [(DataConfig("batch1", data_dir="somewhere"), {"dtype": np.float64})]


def test_cli_json(tiny_splits, monkeypatch, capsys):
    clock = itertools.count(100.0, 1.25)  # s; each reading 1.25 s after the one before
    monkeypatch.setattr(gradcheck, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    assert command.main(["--json", "--scenario", "2", "--lam", "0.1", "--seed", "3", "--no-mlflow"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is True and list(report["scenarios"]) == ["2"]
    scenario = report["scenarios"]["2"]
    assert (scenario["dims"], scenario["images"], scenario["hidden"], scenario["lam"]) == (24, 5, 50, 0.1)
    assert scenario["seconds"] == 1.25  # from the clock read before the gradients to the one read after
    assert set(scenario["table"]) == set(network.PARAM_NAMES)
    assert all(row["max_abs"] < 1e-6 for row in scenario["table"].values())


def test_cli_exits_1_when_an_error_is_too_large(tiny_splits, capsys):
    assert command.main(["--scenario", "1", "--h", "0.5", "--no-mlflow"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_cli_bad_input_is_one_line_and_exit_2(tiny_splits, monkeypatch, capsys):
    with pytest.raises(SystemExit) as bad_flag:
        command.main(["--scenario", "3"])
    assert bad_flag.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1

    def missing(*args, **kwargs):
        raise UsageError("no CIFAR-10 data at /nowhere")

    monkeypatch.setattr(cli_gradcheck, "load_splits", missing)
    with pytest.raises(SystemExit) as bad_data:
        command.main(["--data-dir", "/nowhere", "--no-mlflow"])
    assert bad_data.value.code == 2
    assert capsys.readouterr().err == "error: no CIFAR-10 data at /nowhere\n"
