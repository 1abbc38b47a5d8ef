"""The report regenerated from MLflow and Optuna: ``python -m clrsearch.report``. See :mod:`clrsearch.cli.report`."""

from ..cli.report import main

if __name__ == "__main__":
    raise SystemExit(main())
