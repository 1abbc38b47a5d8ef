"""The ``train`` command: one network trained as in a SPEC experiment.

    python -m clrsearch.train --preset sanity|fig3|fig4|best [--lam 0.005] [--seed 1] [--json] [--out DIR]

Prints the final training, validation and test accuracy (one JSON object with
``--json``) and writes the SPEC plots as PNG files into the output folder
(default ``out/<preset>``): learning curves, eta per step, the test confusion
matrix and the class distribution of the splits. The run, its curves and
plots are logged to MLflow (:mod:`clrsearch.tracking.single`) unless
``--no-mlflow``.
"""

import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from .. import plots, tracking
from ..config import PRESETS
from ..data import load_splits
from ..nn.experiment import ExperimentResult, run_experiment
from ..tracking.single import CLASS_COUNTS_JSON, CONFUSION_TEST_JSON
from . import args as cli
from . import environment
from .progress import progress_bar


def figures(outcome: ExperimentResult):
    """The SPEC plots of one run, by file stem."""
    splits, history = outcome.splits, outcome.result.history
    accuracy = f"test accuracy {100 * outcome.test_accuracy:.2f}%"
    return {
        "learning_curves": plots.learning_curves(history, x="step", title=f"lambda = {outcome.experiment.lam:g}"),
        "eta": plots.eta_curve(history.eta_of(0)),
        "confusion_test": plots.confusion_matrix(splits.test.y, outcome.test_predictions, splits.label_names,
                                                 title=f"test set ({accuracy})"),
        "class_distribution": plots.class_distribution(
            {"training": splits.train.y, "validation": splits.val.y, "test": splits.test.y}, splits.label_names),
    }


def run_record(preset, outcome: ExperimentResult, pictures, training) -> tracking.ExperimentRun:
    """What the run of ``outcome`` logs: its settings, curves, accuracies, ``pictures`` (PNG paths), the test
    confusion matrix and the class counts of each split; ``training`` is (start, end), s since the epoch."""
    splits, experiment = outcome.splits, outcome.experiment
    params = {"lam": experiment.lam, "seed": experiment.seed,
              **{f"{section}.{name}": value for section in ("data", "train")
                 for name, value in asdict(getattr(experiment, section)).items()}}
    names = list(splits.label_names)
    counts = {"class_names": names, **{split: np.bincount(np.asarray(labels), minlength=len(names)).tolist()
                                       for split, labels in (("training", splits.train.y),
                                                             ("validation", splits.val.y), ("test", splits.test.y))}}
    summary = outcome.summary()
    return tracking.ExperimentRun(
        preset, params, outcome.result.history,
        {name: summary[name] for name in ("train_accuracy", "val_accuracy", "test_accuracy")},
        status=summary["status"], pictures=list(pictures),
        documents={CONFUSION_TEST_JSON: tracking.confusion_report(splits.test.y, outcome.test_predictions, names),
                   CLASS_COUNTS_JSON: counts},
        inputs=tracking.describe_splits(splits, experiment.data), started=training[0], ended=training[1])


def save_figures(figs, folder):
    """Write each figure as ``<stem>.png`` into ``folder``; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, fig in figs.items():
        path = folder / f"{stem}.png"
        fig.savefig(path, dpi=110)
        paths.append(path)
    return paths


def parse_experiment(argv=None):
    """Parse the command line into (Experiment, options)."""
    parser = cli.ArgumentParser(prog="python -m clrsearch.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="fig3", help="SPEC experiment (default fig3)")
    parser.add_argument("--lam", type=cli.non_negative_float, help="L2 strength lambda")
    parser.add_argument("--n-batch", type=cli.positive_int, help="images per update step")
    parser.add_argument("--cycles", type=cli.positive_int, help="number of cycles")
    parser.add_argument("--n-s", type=cli.positive_int, help="half a cycle, in update steps")
    parser.add_argument("--eta-min", type=cli.non_negative_float, help="smallest learning rate")
    parser.add_argument("--eta-max", type=cli.positive_float, help="largest learning rate")
    parser.add_argument("--clr-mode", choices=("triangular", "triangular2", "exp_range"), help="schedule shape")
    parser.add_argument("--gamma", type=cli.positive_float, help="exp_range amplitude decay per step")
    parser.add_argument("--hidden", type=cli.positive_int, help="hidden units M")
    parser.add_argument("--seed", type=cli.non_negative_int, help="seed of the initial weights and batch order")
    parser.add_argument("--dtype", choices=("float32", "float64"), help="training precision")
    parser.add_argument("--val-size", type=cli.positive_int, help="validation images held out (full split)")
    parser.add_argument("--data-dir", help="folder of cifar-10-batches-py (default $CLRSEARCH_DATA or the cache)")
    parser.add_argument("--out", help="folder for the PNG plots (default out/<preset>)")
    parser.add_argument("--experiment", default=tracking.EXPERIMENT, help="MLflow experiment")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    base = PRESETS[args.preset]
    train_overrides = {name: getattr(args, name) for name in
                       ("n_batch", "cycles", "n_s", "eta_min", "eta_max", "clr_mode", "gamma", "hidden", "dtype")
                       if getattr(args, name) is not None}
    if args.seed is not None:
        train_overrides["shuffle_seed"] = args.seed
    data_overrides = {"data_dir": environment.data_dir(args.data_dir)}
    if args.val_size is not None:
        data_overrides["val_size"] = args.val_size
    experiment = replace(
        base,
        data=replace(base.data, **data_overrides),
        train=replace(base.train, **train_overrides),
        lam=base.lam if args.lam is None else args.lam,
        seed=base.seed if args.seed is None else args.seed,
    )
    return experiment, args


@cli.entry_point
def main(argv=None):
    experiment, args = parse_experiment(argv)
    splits = load_splits(experiment.data, dtype=np.dtype(experiment.train.dtype))
    if not args.no_mlflow:
        tracking.check_store(args.experiment)
    started = time.time()
    with progress_bar(experiment.train.total_steps, "updates", quiet=args.quiet or args.json) as bar:
        outcome = run_experiment(experiment, splits, progress=bar)
    training = (started, time.time())
    out = Path(args.out or Path("out") / args.preset)
    paths = save_figures(figures(outcome), out)
    summary = outcome.summary()
    if not args.no_mlflow:
        summary["mlflow_run_id"] = tracking.log_experiment_run(
            run_record(args.preset, outcome, paths, training), args.experiment)
    if args.json:
        summary["preset"] = args.preset
        summary["config"] = asdict(experiment)
        summary["plots"] = [str(p) for p in paths]
        print(json.dumps(summary))
    else:
        print(f"{args.preset}: lambda {experiment.lam:g}, {experiment.train.cycles} cycle(s) of 2 x {experiment.train.n_s} "
              f"steps, n_batch {experiment.train.n_batch}, seed {experiment.seed}")
        for split in ("train", "val", "test"):
            print(f"  {split:5s} accuracy {100 * summary[f'{split}_accuracy']:6.2f}%")
        if summary["status"] != "finished":
            print(f"  training {summary['status']} at step {outcome.result.stopped_at[0]}", file=sys.stderr)
        print(f"  plots in {out}/" + (f", MLflow run {summary['mlflow_run_id']}" if "mlflow_run_id" in summary else ""))
    return 0 if summary["status"] == "finished" else 1

