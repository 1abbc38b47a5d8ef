"""The report: the original report's figures and what clrsearch adds, regenerated from what is tracked.

    python -m clrsearch.report [--out report.html] [--tracking-uri URI] [--storage URL] [--no-mlflow] [--json]

Reads the MLflow store (``$MLFLOW_TRACKING_URI``, else ``mlflow.db`` in the
working directory), its registry and the Optuna storage; trains nothing.
Writes one self-contained HTML file, every figure in it, and logs it as the
artifact ``report.html`` of the latest finished run of the fine study (unless
``--no-mlflow``), so that it opens in the MLflow UI. Prints each section's
status and, for each missing part, the command that makes it.
"""

import json

import mlflow

from .. import tracking
from ..config import DEFAULT_STORAGE
from ..report import Sources, write_report
from . import args as cli


def parse(argv=None):
    parser = cli.ArgumentParser(prog="python -m clrsearch.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="report.html", help="the HTML file to write (default report.html)")
    parser.add_argument("--tracking-uri", help="MLflow store (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    parser.add_argument("--experiment", default=tracking.EXPERIMENT, help="MLflow experiment")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage (default {DEFAULT_STORAGE})")
    parser.add_argument("--coarse-study", default="coarse", help="name of the coarse study (default coarse)")
    parser.add_argument("--fine-study", default="fine", help="name of the fine study (default fine)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the report to the fine study run")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    sources = Sources(args.tracking_uri or mlflow.get_tracking_uri(), args.experiment, args.storage,
                      args.coarse_study, args.fine_study)
    return sources, args


@cli.entry_point
def main(argv=None):
    sources, args = parse(argv)
    report = write_report(sources, args.out, attach=not args.no_mlflow)
    if args.json:
        print(json.dumps({"path": str(report.path), "sections": report.status, "mlflow_run_id": report.run_id,
                          "missing": [{"what": m.what, "command": m.command} for m in report.missing]}))
        return 0
    print(f"report written to {report.path}" + (f", logged to run {report.run_id}" if report.run_id else ""))
    for section, status in report.status.items():
        print(f"  {section:20s} {status}")
    for m in report.missing:
        print(f"missing: {m.what}; run {m.command}")
    return 0
