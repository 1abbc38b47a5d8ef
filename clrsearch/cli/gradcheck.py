"""Check the analytic gradients of the network against centred finite differences.

    python -m clrsearch.gradcheck [--data-dir DIR] [--seed 0] [--lam 0.01]
                                  [--h 1e-5] [--scenario 1|2|all] [--json] [--no-mlflow]

The two scenarios of SPEC run on the first training images of split batch1,
in float64, with M = 50 hidden units (see :mod:`clrsearch.nn.gradcheck`).
Exit status 1 when any absolute error reaches 1e-6, so the command doubles as
a check; 2 on bad flags or data. The result is logged to MLflow as a run
(:mod:`clrsearch.tracking.single`) unless ``--no-mlflow``.
"""

import json

import numpy as np

from .. import tracking
from ..config import DataConfig
from ..data import load_splits
from ..nn.gradcheck import HIDDEN, SCENARIOS, format_result, passed, run_check, scenario_inputs
from . import environment
from .args import ArgumentParser, entry_point, positive_float


def _parser():
    parser = ArgumentParser(
        prog="python -m clrsearch.gradcheck",
        description="Compare the analytic gradients with centred finite differences "
                    "on the first training images of split batch1 (float64, M = 50).")
    parser.add_argument("--data-dir", help="folder cifar-10-batches-py or its parent")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default 0)")
    parser.add_argument("--lam", type=positive_float, default=0.01,
                        help="L2 strength of scenario 2 (default 0.01); scenario 1 uses 0")
    parser.add_argument("--h", type=positive_float, default=1e-5,
                        help="step of the centred differences (default 1e-5)")
    parser.add_argument("--scenario", choices=("1", "2", "all"), default="all",
                        help="which scenario to run (default all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--experiment", default=tracking.EXPERIMENT, help="MLflow experiment")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    return parser


@entry_point
def main(argv=None):
    """Run the chosen scenarios; exit status 1 if any absolute error reaches 1e-6."""
    args = _parser().parse_args(argv)
    train = load_splits(DataConfig("batch1", data_dir=environment.data_dir(args.data_dir)), dtype=np.float64).train
    if not args.no_mlflow:
        tracking.check_store(args.experiment)
    scenarios = SCENARIOS if args.scenario == "all" else (int(args.scenario),)
    results = {}
    for scenario in scenarios:
        X, Y = scenario_inputs(train.X, train.Y, scenario)
        lam = 0.0 if scenario == 1 else args.lam
        rng = np.random.default_rng(args.seed)
        results[scenario] = run_check(X, Y, lam, HIDDEN, rng, args.h)
    ok = all(passed(result["table"]) for result in results.values())
    report = {"seed": args.seed, "passed": ok, "scenarios": {str(s): r for s, r in results.items()}}
    if not args.no_mlflow:
        report["mlflow_run_id"] = tracking.log_gradient_check(
            report, {"seed": args.seed, "lam": args.lam, "h": args.h, "scenario": args.scenario}, args.experiment)
    if args.json:
        print(json.dumps(report))
    else:
        print("\n\n".join(format_result(s, r) for s, r in results.items()))
        print("all absolute errors < 1e-6" if ok else "FAILED: an absolute error >= 1e-6")
    return 0 if ok else 1
