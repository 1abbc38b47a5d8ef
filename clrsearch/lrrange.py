"""LR range test: ``python -m clrsearch.lrrange`` suggests eta_min and eta_max. See :mod:`clrsearch.cli.lrrange`."""

from .cli.lrrange import main

if __name__ == "__main__":
    raise SystemExit(main())
