"""Left-right flips of the training images (``TrainConfig.augment = "flip"``): the
mirrored rows against images mirrored by hand, and the mini-batch order against
training without flips, on the tiny CIFAR-10 copy."""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from clrsearch.config import DataConfig, TrainConfig
from clrsearch.data import load_splits
from clrsearch.errors import UsageError
from clrsearch.nn import network
from clrsearch.nn.trainer import TrainingData, _mini_batches, flip_rows, train

D = 3 * 32 * 32
CONFIG = TrainConfig(n_batch=20, cycles=1, n_s=10, hidden=8, dtype="float64", eta_min=1e-3, eta_max=5e-2,
                     shuffle_seed=7, augment="flip")  # 20 steps: two epochs of the 200 images


@pytest.fixture
def cifar(tiny_cifar):
    return load_splits(DataConfig(split="batch1", data_dir=str(tiny_cifar)), dtype=np.float64, download=False)


def mirrored(row):
    """One CIFAR-10 row (D,) mirrored left-right: channel c, image row r, column j -> 31 - j."""
    out = np.empty_like(row)
    for c in range(3):
        for r in range(32):
            for j in range(32):
                out[c * 1024 + r * 32 + j] = row[c * 1024 + r * 32 + 31 - j]
    return out


def symmetric(dataset):
    """The same images with their right half replaced by the mirrored left half (X (D, N))."""
    images = np.array(dataset.X.T).reshape(-1, 3, 32, 32)  # (N, 3, 32, 32)
    images[..., 16:] = images[..., 15::-1]
    return SimpleNamespace(X=np.asfortranarray(images.reshape(-1, D).T), Y=dataset.Y, y=dataset.y)


def test_flip_rows_mirrors_the_selected_images_and_leaves_the_others():
    rows = np.random.default_rng(0).standard_normal((5, D))  # (B, D)
    mask = np.array([True, False, True, True, False])
    flipped = rows.copy()
    flip_rows(flipped, mask)
    for i in range(5):
        expected = mirrored(rows[i]) if mask[i] else rows[i]
        np.testing.assert_array_equal(flipped[i], expected, err_msg=f"row {i}")
        reshaped = rows[i].reshape(3, 32, 32)[:, :, ::-1].flatten() if mask[i] else rows[i]
        np.testing.assert_array_equal(flipped[i], reshaped, err_msg=f"row {i}")


def test_flip_rows_refuses_a_copy_it_could_not_write_back():
    with pytest.raises(ValueError):
        flip_rows(np.zeros((D, 4)).T, np.ones(4, bool))


def test_flipped_batches_hold_the_same_images_in_the_same_order_half_of_them_mirrored(cifar):
    X, Y = np.asfortranarray(cifar.train.X), cifar.train.Y
    plain = _mini_batches(X, Y, CONFIG.n_batch, CONFIG.shuffle_seed, "none")
    flipping = _mini_batches(X, Y, CONFIG.n_batch, CONFIG.shuffle_seed, CONFIG.augment)
    # The flips come from a generator of their own, seeded by the shuffle seed alone: one fair coin per image.
    coins = np.random.default_rng([CONFIG.shuffle_seed, 1])
    flips = []
    for _ in range(50):  # five epochs of 10 batches
        (Xp, Yp), (Xf, Yf) = next(plain), next(flipping)
        np.testing.assert_array_equal(Yf, Yp)
        for j, flip in enumerate(coins.random(CONFIG.n_batch) < 0.5):
            np.testing.assert_array_equal(Xf[:, j], mirrored(Xp[:, j]) if flip else Xp[:, j], err_msg=str(j))
            flips.append(flip)
    # 1000 independent fair coins: 500 +- 16 flips; 4.5 standard deviations either way.
    assert 430 < sum(flips) < 570, sum(flips)


def test_a_flipped_run_is_deterministic_and_differs_from_none(cifar):
    runs = [train(cifar, CONFIG, [0.01, 0.001], [1, 2]) for _ in range(2)]
    plain = train(cifar, replace(CONFIG, augment="none"), [0.01, 0.001], [1, 2])
    for name in network.PARAM_NAMES:
        np.testing.assert_array_equal(runs[0].params[name], runs[1].params[name], err_msg=name)
    assert not np.array_equal(runs[0].params["W1"], plain.params["W1"])
    other_seed = train(cifar, replace(CONFIG, shuffle_seed=8), [0.01, 0.001], [1, 2])
    assert not np.array_equal(runs[0].params["W1"], other_seed.params["W1"])


def test_flips_of_symmetric_images_give_exactly_the_run_without_flips(cifar):
    # Mirroring a symmetric image is a no-op: only a changed mini-batch order could tell the runs apart.
    train_set = symmetric(cifar.train)
    flipped = train(TrainingData(train_set, cifar.val), CONFIG, [0.01, 0.001], [1, 2])
    plain = train(TrainingData(train_set, cifar.val), replace(CONFIG, augment="none"), [0.01, 0.001], [1, 2])
    for name in network.PARAM_NAMES:
        np.testing.assert_array_equal(flipped.params[name], plain.params[name], err_msg=name)
    for name, values in plain.history.metrics.items():
        np.testing.assert_array_equal(flipped.history.metrics[name], values, err_msg=name)


def test_the_training_set_itself_is_not_flipped(cifar):
    before = np.array(cifar.train.X)
    train(TrainingData(cifar.train), CONFIG, [0.01], [1])
    np.testing.assert_array_equal(cifar.train.X, before)


def test_augment_must_be_a_known_value():
    with pytest.raises(UsageError, match="augment"):
        TrainConfig(augment="rotate")


def test_flips_need_cifar_rows():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 40)
    small = SimpleNamespace(X=rng.standard_normal((12, 40)), Y=np.eye(3)[:, y], y=y)
    with pytest.raises(UsageError, match="flip"):
        train(TrainingData(small), CONFIG, [0.0], [0])
