"""The final model of a fine study: trained at the best lambda, tested, logged and registered.

It trains ``final_cycles`` cycles on the study's data with the first seed,
keeps the network at every cycle end (a snapshot ensemble), and registers the
last network, or with ``--ensemble`` the snapshot ensemble, as
``clrsearch-cifar10@champion``.
"""

from dataclasses import dataclass, replace

import numpy as np

from .. import plots, tracking
from ..config import Experiment, SearchConfig
from ..data import load_batch
from ..data.cifar10 import TEST_FILE
from ..errors import UsageError
from ..nn import network
from ..nn.experiment import ExperimentResult, run_experiment


def final_experiment(config: SearchConfig, lam):
    """The final model of a fine study: best lambda, ``final_cycles`` cycles, curves per epoch."""
    final_train = replace(config.train, cycles=config.study.final_cycles, evals_per_cycle=None,
                          eval_train_size=None, snapshots=True)
    return Experiment(config.data, final_train, lam=float(lam), seed=config.study.first_seed)


@dataclass(frozen=True)
class FinalResult:
    """The trained final model and what it scored; accuracies are fractions 0..1."""

    outcome: ExperimentResult
    snapshots: list  # one network per cycle end
    ensemble_pred: np.ndarray  # (N_test,) labels of the snapshot ensemble
    ensemble_accuracy: float  # test accuracy of the snapshot ensemble
    use_ensemble: bool  # register the snapshot ensemble instead of the last network

    @property
    def networks(self):
        return self.snapshots if self.use_ensemble else [network.member(self.outcome.result.params, 0)]

    @property
    def test_pred(self):
        return self.ensemble_pred if self.use_ensemble else self.outcome.test_predictions

    @property
    def test_accuracy(self):
        """Test accuracy of the registered model."""
        return self.ensemble_accuracy if self.use_ensemble else self.outcome.test_accuracy


def train_final(config: SearchConfig, lam, splits, progress=None) -> FinalResult:
    """Train the final model at ``lam`` and test it and its snapshot ensemble."""
    outcome = run_experiment(final_experiment(config, lam), splits, progress=progress)
    snapshots = [network.member(p, 0) for p in outcome.result.snapshots]
    ensemble_pred = network.ensemble_predict(snapshots, splits.test.X)
    ensemble_accuracy = float(np.mean(ensemble_pred == splits.test.y))
    return FinalResult(outcome, snapshots, ensemble_pred, ensemble_accuracy, config.study.ensemble)


def log_final(final: FinalResult, config: SearchConfig, splits, parent_run_id):
    """Log the final model's run under the study run and register the model; returns (run_id, version)."""
    outcome = final.outcome
    experiment = outcome.experiment
    lam, train = experiment.lam, experiment.train
    raw_test, _ = load_batch(splits.data_dir / TEST_FILE)
    record = tracking.FinalModel(
        run_name=f"final:{config.study.name}",
        params={"lam": lam, "cycles": train.cycles, "n_s": train.n_s, "n_batch": train.n_batch,
                "eta_min": train.eta_min, "eta_max": train.eta_max, "clr_mode": train.clr_mode,
                "seed": experiment.seed, "split": experiment.data.split, "val_size": experiment.data.val_size,
                "ensemble": final.use_ensemble, "dtype": train.dtype},
        history=outcome.result.history, member=0, val_accuracy=outcome.val_accuracy,
        test_accuracy=final.test_accuracy, test_true=splits.test.y, test_pred=final.test_pred,
        class_names=splits.label_names, networks=final.networks, normaliser=splits.normaliser,
        dtype=train.dtype, input_example=raw_test[:5],
        extra_metrics={"train_accuracy": outcome.train_accuracy, "final_network_test_accuracy": outcome.test_accuracy,
                       "snapshot_ensemble_test_accuracy": final.ensemble_accuracy},
        figures={"learning_curves": plots.learning_curves(outcome.result.history, x="step",
                                                          title=f"final model, lambda = {lam:.4g}"),
                 "eta": plots.eta_curve(outcome.result.history.eta)})
    return tracking.log_final_model(record, config.study.experiment, parent_run_id=parent_run_id)


def check_best(best):
    """Raise UsageError when a fine study has no completed trial to take lambda from."""
    if best is None:
        raise UsageError("the fine study has no completed trial to pick lambda from")
