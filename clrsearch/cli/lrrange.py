"""LR range test (Smith 2015, section 3.3; fastai's ``lr_find``): pick eta_min and eta_max.

    python -m clrsearch.lrrange [--epochs 4] [--eta-low 1e-5] [--eta-high 0.3] [--lam 0.001]

The plot and the suggestion are logged to MLflow; studies use them with
``--eta-min auto --eta-max auto``. The numerics are in :mod:`clrsearch.nn.lrrange`.
"""

import json

import numpy as np

from .. import plots, tracking
from ..config import RANGE_TEST_DATA, SPLITS, DataConfig, RangeTest, TrainConfig
from ..data import load_splits
from ..nn.lrrange import run_range_test
from . import args as cli
from . import environment
from .progress import progress_bar


def parse(argv=None):
    parser = cli.ArgumentParser(prog="python -m clrsearch.lrrange", description=__doc__.split("\n\n")[0])
    defaults = RangeTest()
    parser.add_argument("--eta-low", type=cli.positive_float, default=defaults.eta_low, help="eta at the start")
    parser.add_argument("--eta-high", type=cli.positive_float, default=defaults.eta_high, help="eta at the end")
    parser.add_argument("--epochs", type=cli.positive_int, default=defaults.epochs, help="length of the ramp")
    parser.add_argument("--points", type=cli.positive_int, default=defaults.points, help="evaluation points")
    parser.add_argument("--lam", type=cli.non_negative_float, default=defaults.lam, help="L2 strength")
    parser.add_argument("--n-seeds", type=cli.positive_int, default=defaults.n_seeds, help="networks averaged")
    parser.add_argument("--split", choices=SPLITS, default=RANGE_TEST_DATA.split, help="data split")
    parser.add_argument("--val-size", type=cli.positive_int, default=RANGE_TEST_DATA.val_size,
                        help="validation images (full)")
    parser.add_argument("--n-batch", type=cli.positive_int, default=TrainConfig.n_batch, help="images per update step")
    parser.add_argument("--hidden", type=cli.positive_int, default=TrainConfig.hidden, help="hidden units")
    parser.add_argument("--data-dir", help="folder of cifar-10-batches-py")
    parser.add_argument("--experiment", default=tracking.EXPERIMENT, help="MLflow experiment")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    parser.add_argument("--out", help="also save the plot as this PNG file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.eta_low >= args.eta_high:
        parser.error(f"--eta-low ({args.eta_low:g}) must be smaller than --eta-high ({args.eta_high:g})")
    test = RangeTest(args.eta_low, args.eta_high, args.epochs, args.points, args.lam, args.n_seeds)
    data = DataConfig(split=args.split, val_size=args.val_size, data_dir=environment.data_dir(args.data_dir))
    return test, data, TrainConfig(n_batch=args.n_batch, hidden=args.hidden), args


@cli.entry_point
def main(argv=None):
    test, data, train_config, args = parse(argv)
    splits = load_splits(data)
    steps = test.epochs * (splits.train.n // train_config.n_batch)
    with progress_bar(steps, "step", args.quiet or args.json, "LR range test") as bar:
        result = run_range_test(splits, train_config, test, progress=bar)
    run_id = None if args.no_mlflow else tracking.log_range_test(result, test, data, train_config,
                                                                   args.experiment,
                                                                   inputs=tracking.describe_splits(splits, data))
    if args.out:
        plots.lr_range_result(result).savefig(args.out, dpi=110)
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
