"""LR range test (Smith 2015, section 3.3; fastai's ``lr_find``): pick eta_min and eta_max.

    python -m clrsearch.lrrange [--epochs 4] [--eta-low 1e-5] [--eta-high 0.3] [--lam 0.001]

eta rises linearly from ``eta_low`` to ``eta_high`` over a few epochs while
the validation accuracy is measured at regular points (several seeds train
as one population and their mean is used). Following Smith, eta_min is where
the accuracy starts to rise and eta_max where it stops rising (its peak, or
where it becomes ragged and falls). The plot and the suggestion are logged to
MLflow; studies use them with ``--eta-min auto --eta-max auto``.
"""

import json
from dataclasses import dataclass, replace

import numpy as np

from . import cli, plots
from .config import DataConfig, TrainConfig
from .train import train


@dataclass(frozen=True)
class RangeTest:
    """The settings of an LR range test."""

    eta_low: float = 1e-5  # eta at the first update
    eta_high: float = 0.3  # eta at the last update
    epochs: int = 4  # length of the ramp
    points: int = 40  # evaluation points along the ramp
    lam: float = 0.001
    n_seeds: int = 3
    rise: float = 0.1  # eta_min: first point above start + rise * (peak - start)
    smooth: int = 5  # points in the moving average of the accuracy


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
    result = train(splits.train, splits.val, ramp, [test.lam] * test.n_seeds, range(test.n_seeds),
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


def figure(result: RangeResult):
    return plots.lr_range(result.etas, result.accuracy, result.loss, suggestion=(result.eta_min, result.eta_max))


def parse(argv=None):
    parser = cli.ArgumentParser(prog="python -m clrsearch.lrrange", description=__doc__.split("\n\n")[0])
    defaults = RangeTest()
    parser.add_argument("--eta-low", type=cli.positive_float, default=defaults.eta_low, help="eta at the start")
    parser.add_argument("--eta-high", type=cli.positive_float, default=defaults.eta_high, help="eta at the end")
    parser.add_argument("--epochs", type=cli.positive_int, default=defaults.epochs, help="length of the ramp")
    parser.add_argument("--points", type=cli.positive_int, default=defaults.points, help="evaluation points")
    parser.add_argument("--lam", type=cli.non_negative_float, default=defaults.lam, help="L2 strength")
    parser.add_argument("--n-seeds", type=cli.positive_int, default=defaults.n_seeds, help="networks averaged")
    parser.add_argument("--split", choices=("batch1", "full"), default="full", help="data split")
    parser.add_argument("--val-size", type=cli.positive_int, default=5000, help="validation images (full)")
    parser.add_argument("--n-batch", type=cli.positive_int, default=100, help="images per update step")
    parser.add_argument("--hidden", type=cli.positive_int, default=50, help="hidden units")
    parser.add_argument("--data-dir", help="folder of cifar-10-batches-py")
    parser.add_argument("--experiment", default="clrsearch", help="MLflow experiment")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    parser.add_argument("--out", help="also save the plot as this PNG file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.eta_low >= args.eta_high:
        parser.error(f"--eta-low ({args.eta_low:g}) must be smaller than --eta-high ({args.eta_high:g})")
    test = RangeTest(args.eta_low, args.eta_high, args.epochs, args.points, args.lam, args.n_seeds)
    data = DataConfig(split=args.split, val_size=args.val_size, data_dir=args.data_dir)
    return test, data, TrainConfig(n_batch=args.n_batch, hidden=args.hidden), args


def log_to_mlflow(result, test, data, train_config, experiment):
    """One run holding the test's settings, suggestion, curve and plot; returns its id."""
    from . import tracking

    params = {**{f"range.{k}": v for k, v in test.__dict__.items()}, "data.split": data.split,
              "train.n_batch": train_config.n_batch, "train.hidden": train_config.hidden}
    rows = [{"eta": float(e), "val_accuracy": float(a), "val_loss": float(l)}
            for e, a, l in zip(result.etas, result.accuracy, result.loss)]
    with tracking.StudyRun(experiment, "lr-range-test", params, {"kind": "lr_range_test",
                                                                  "git_commit": tracking.git_commit()}) as run:
        run.log_metrics({"suggested_eta_min": result.eta_min, "suggested_eta_max": result.eta_max})
        run.log_summary(rows, {"lr_range": figure(result)})
        return run.run_id


@cli.entry_point
def main(argv=None):
    from .data import load_splits

    test, data, train_config, args = parse(argv)
    splits = load_splits(data.split, data.data_dir, val_size=data.val_size)
    steps = test.epochs * (splits.train.n // train_config.n_batch)
    with cli.progress_bar(steps, "step", args.quiet or args.json, "LR range test") as bar:
        result = run_range_test(splits, train_config, test, progress=bar)
    run_id = None if args.no_mlflow else log_to_mlflow(result, test, data, train_config, args.experiment)
    if args.out:
        figure(result).savefig(args.out, dpi=110)
    if args.json:
        print(json.dumps({"eta_min": result.eta_min, "eta_max": result.eta_max, "mlflow_run_id": run_id,
                          "etas": result.etas.tolist(), "val_accuracy": result.accuracy.tolist()}))
    else:
        best = int(np.nanargmax(result.accuracy))
        print(f"LR range test: eta {test.eta_low:g} -> {test.eta_high:g} over {test.epochs} epochs, "
              f"{test.n_seeds} seeds, lambda {test.lam:g}")
        print(f"  peak validation accuracy {100 * result.accuracy[best]:.2f}% at eta {result.etas[best]:.3g}")
        print(f"  suggested eta_min {result.eta_min:.3g}, eta_max {result.eta_max:.3g}")
        print(f"  use: python -m clrsearch.coarse --eta-min {result.eta_min:.3g} --eta-max {result.eta_max:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
