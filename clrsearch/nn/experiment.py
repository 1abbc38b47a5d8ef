"""One network trained as in a SPEC experiment, and its accuracy on every split."""

from dataclasses import dataclass

import numpy as np

from ..config import Experiment
from . import network
from .trainer import TrainResult, train


@dataclass
class ExperimentResult:
    """A trained network with its data and the accuracy on each split."""

    experiment: Experiment
    result: TrainResult
    splits: object  # clrsearch.data.Splits
    train_accuracy: float
    val_accuracy: float
    test_accuracy: float
    test_predictions: np.ndarray  # (N_test,)

    def summary(self):
        return {
            "train_accuracy": self.train_accuracy,
            "val_accuracy": self.val_accuracy,
            "test_accuracy": self.test_accuracy,
            "status": self.result.status[0],
            "lam": self.experiment.lam,
            "seed": self.experiment.seed,
        }


def run_experiment(experiment: Experiment, splits, progress=None):
    """Train the experiment's network on ``splits`` and measure it on every split."""
    result = train(splits, experiment.train, [experiment.lam], [experiment.seed],
                   progress=progress)
    params = network.member(result.params, 0)
    return ExperimentResult(
        experiment, result, splits,
        train_accuracy=network.accuracy(params, splits.train.X, splits.train.y),
        val_accuracy=network.accuracy(params, splits.val.X, splits.val.y),
        test_accuracy=network.accuracy(params, splits.test.X, splits.test.y),
        test_predictions=network.predict(params, splits.test.X),
    )
