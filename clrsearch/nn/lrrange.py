"""LR range test (Smith 2015, section 3.3; fastai's ``lr_find``): pick eta_min and eta_max.

eta rises linearly from ``eta_low`` to ``eta_high`` over a few epochs while
the validation accuracy is measured at regular points (several seeds train
as one population and their mean is used). Following Smith, eta_min is where
the accuracy starts to rise and eta_max where it stops rising (its peak, or
where it becomes ragged and falls). ``python -m clrsearch.lrrange`` runs it
and logs the plot and the suggestion to MLflow; studies use the suggestion
with ``--eta-min auto --eta-max auto``.
"""

from dataclasses import dataclass, replace

import numpy as np

from ..config import RangeTest, TrainConfig
from .trainer import train


@dataclass
class RangeResult:
    etas: np.ndarray  # (P,) eta at each evaluation point
    accuracy: np.ndarray  # (P,) mean validation accuracy of the seeds
    loss: np.ndarray  # (P,) mean validation loss
    eta_min: float
    eta_max: float


def run_range_test(splits, train_config: TrainConfig, test: RangeTest = RangeTest(), progress=None):
    """Ramp eta once over ``test.epochs`` epochs and suggest (eta_min, eta_max)."""
    steps = max(test.points, test.epochs * (splits.train.n // train_config.n_batch))
    ramp = replace(train_config, eta_min=test.eta_low, eta_max=test.eta_high, n_s=steps, cycles=1,
                   clr_mode="triangular", max_steps=steps, evals_per_cycle=2 * test.points, snapshots=False)
    result = train(splits, ramp, [test.lam] * test.n_seeds, range(test.n_seeds),
                   progress=progress)
    history = result.history
    etas = test.eta_low + (test.eta_high - test.eta_low) * history.steps / steps
    accuracy = np.nanmean(history.metrics["val_accuracy"], axis=1)
    loss = np.nanmean(history.metrics["val_loss"], axis=1)
    eta_min, eta_max = suggest(etas, accuracy, test.rise, test.smooth)
    return RangeResult(etas, accuracy, loss, eta_min, eta_max)


def suggest(etas, accuracy, rise=0.1, smooth=5):
    """(eta_min, eta_max) from an accuracy curve along a rising eta.

    eta_max: the peak of the moving-average accuracy (past it the accuracy is
    ragged or falling; a diverged point counts as a fall). eta_min: the first
    eta whose smoothed accuracy exceeds start + ``rise`` of the way to the peak.
    """
    acc = np.where(np.isfinite(accuracy), accuracy, 0.0)
    width = max(1, min(smooth, len(acc)))
    padded = np.pad(acc, (width // 2, width - 1 - width // 2), mode="edge")
    smoothed = np.convolve(padded, np.ones(width) / width, mode="valid")  # (P,)
    peak = int(np.argmax(smoothed))
    threshold = smoothed[0] + rise * (smoothed[peak] - smoothed[0])
    start = int(np.argmax(smoothed[:peak + 1] >= threshold))
    eta_min, eta_max = float(etas[start]), float(etas[peak])
    if eta_min >= eta_max:
        eta_min = eta_max / 10
    return eta_min, eta_max
