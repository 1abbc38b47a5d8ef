"""The final model of a fine study: the assignment's final run, tested, logged and registered.

It trains on every training image but ``final_val_size`` (1,000 by default,
split ``full``; one fixed split, whatever the study's ``replicates``: the
validation folds of ``blocks`` serve the search only), at the winning point's settings plus ``final_extra_cycles``
cycles, as one population of ``final_seeds`` networks (replicates 0, 1, ...:
init seeds ``first_seed + r``, one shared mini-batch order). The registered
model is their ensemble, which averages the members' class probabilities
(one network with ``final_seeds = 1``). The run also reports every member's
test accuracy, their mean and spread, and the snapshot ensemble of all
members' cycle ends.
"""

import time
from dataclasses import dataclass, field, replace

import numpy as np

from .. import plots, tracking
from ..config import DataConfig, SearchConfig, TrainConfig
from ..data import Splits, load_batch, load_splits
from ..data.cifar10 import TEST_FILE
from ..errors import UsageError
from ..nn import network
from ..nn.trainer import TrainResult, train
from .study import LAM, point_train_config


def final_data(config: SearchConfig) -> DataConfig:
    """The data of the final run: ``final_val_size`` images held out of split ``full``; batch1 as it is."""
    if config.data.split != "full":
        return config.data
    return replace(config.data, val_size=config.study.final_val_size)


def final_train_config(config: SearchConfig, params, n_train) -> TrainConfig:
    """The winning point's protocol on ``n_train`` images, ``final_extra_cycles`` cycles longer, curves per epoch."""
    point = point_train_config(config.train, params, n_train)
    return replace(point, cycles=point.cycles + config.study.final_extra_cycles, evals_per_cycle=None,
                   eval_train_size=None, snapshots=True)


@dataclass(frozen=True)
class FinalResult:
    """The trained final population and what it scored; accuracies are fractions 0..1."""

    params: dict  # the winning point
    train_config: TrainConfig
    training: TrainResult
    networks: list  # one dict per member
    test_pred: np.ndarray  # (N_test,) labels of the registered model (the members' ensemble)
    test_accuracy: float  # of the registered model
    val_accuracy: float
    train_accuracy: float
    member_test_accuracies: list  # per member
    snapshot_accuracy: float  # ensemble of every member's cycle-end snapshots
    started: float | None = None  # wall-clock time (s since the epoch) when training began
    ended: float | None = None  # ... and when it was done
    eval_times: tuple = field(default_factory=tuple)  # wall-clock time of each evaluation point of its history


def train_final(config: SearchConfig, params, splits, progress=None, threads=1) -> FinalResult:
    """Train the final population at the point ``params`` on ``splits`` and test it."""
    train_config = final_train_config(config, params, splits.train.n)
    seeds = [config.study.first_seed + r for r in range(config.study.final_seeds)]
    eval_times = []

    def on_eval(point):  # the wall-clock time of each point, for the run's curves; nothing stops
        eval_times.append(time.time())
        return ()

    started = time.time()
    training = train(splits, train_config, [params[LAM]] * len(seeds), seeds, on_eval=on_eval,
                     progress=progress, threads=threads)
    ended = time.time()
    networks = [network.member(training.params, k) for k in range(len(seeds))]
    snapshots = [net for cycle in zip(*training.snapshots) for net in cycle]  # cycle by cycle, member by member

    def accuracy(nets, dataset):
        return float(np.mean(network.ensemble_predict(nets, dataset.X) == dataset.y))

    test_pred = network.ensemble_predict(networks, splits.test.X)
    return FinalResult(
        params=dict(params), train_config=train_config, training=training, networks=networks, test_pred=test_pred,
        test_accuracy=float(np.mean(test_pred == splits.test.y)), val_accuracy=accuracy(networks, splits.val),
        train_accuracy=accuracy(networks, splits.train),
        member_test_accuracies=[accuracy([n], splits.test) for n in networks],
        snapshot_accuracy=accuracy(snapshots, splits.test) if snapshots else float("nan"),
        started=started, ended=ended, eval_times=tuple(eval_times))


def log_final(final: FinalResult, config: SearchConfig, splits, parent_run_id):
    """Log the final run under the study run and register the model; returns (run_id, version).

    The version becomes champion, or challenger when it classifies fewer test images right than the champion
    (``config.study.promote`` forces champion): :mod:`clrsearch.tracking.challenge`."""
    train_config, data = final.train_config, final_data(config)
    members = np.array(final.member_test_accuracies)
    raw_test, _ = load_batch(splits.data_dir / TEST_FILE)
    record = tracking.FinalModel(
        run_name=f"final:{config.study.name}",
        params={**final.params, "cycles": train_config.cycles, "n_s": train_config.n_s,
                "n_batch": train_config.n_batch, "eta_min": train_config.eta_min, "eta_max": train_config.eta_max,
                "clr_mode": train_config.clr_mode, "augment": train_config.augment,
                "first_seed": config.study.first_seed, "members": len(final.networks), "split": data.split,
                "val_size": data.val_size, "n_train": splits.train.n, "dtype": train_config.dtype},
        history=final.training.history, member=0, val_accuracy=final.val_accuracy,
        test_accuracy=final.test_accuracy, test_true=splits.test.y, test_pred=final.test_pred,
        class_names=splits.label_names, networks=final.networks, normaliser=splits.normaliser,
        dtype=train_config.dtype, input_example=raw_test[:5],
        extra_metrics={"train_accuracy": final.train_accuracy, "members_mean_test_accuracy": float(members.mean()),
                       "members_std_test_accuracy": float(members.std()),
                       "snapshot_ensemble_test_accuracy": final.snapshot_accuracy,
                       **{f"member_{r}_test_accuracy": a for r, a in enumerate(final.member_test_accuracies)}},
        figures={"learning_curves": plots.learning_curves(final.training.history, x="step",
                                                          title=f"final model, lambda = {final.params[LAM]:.4g}"),
                 "eta": plots.eta_curve(final.training.history.eta_of(0))},
        members=tuple(range(len(final.networks))), inputs=tracking.describe_splits(splits, data),
        started=final.started, ended=final.ended, eval_times=final.eval_times, study_name=config.study.name,
        test_rows=raw_test)
    return tracking.log_final_model(record, config.study.experiment, parent_run_id=parent_run_id,
                                    promote=config.study.promote)


def load_final_splits(config: SearchConfig, splits):
    """The splits of the final run: ``splits`` when they are the same, else loaded anew."""
    data = final_data(config)
    if data == config.data and isinstance(splits, Splits):  # not the validation folds of a blocks study
        return splits
    return load_splits(data, dtype=np.dtype(config.train.dtype), download=False)  # the study's folder: it exists


def check_best(best):
    """Raise UsageError when a fine study has no completed trial to take its settings from."""
    if best is None:
        raise UsageError("the fine study has no completed trial to pick lambda from")
