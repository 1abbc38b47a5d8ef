"""Fine lambda search on a grid, then the final model: trained, tested and registered.

    python -m clrsearch.fine [--grid 0,0.001,0.002] [--n-seeds 3] [--final-cycles 3] [--ensemble]

Without ``--grid`` the grid is derived from the coarse study in the same
storage (see :func:`clrsearch.search.derive_grid`). The final model is
registered in MLflow as ``clrsearch-cifar10`` with the alias ``champion``.
"""

import sys

from . import cli


@cli.entry_point
def main(argv=None):
    try:
        from . import runner  # NumPy, Optuna, MLflow: seconds of imports that Ctrl-C may interrupt
    except KeyboardInterrupt:
        print("\ninterrupted before the study started", file=sys.stderr)
        raise SystemExit(130)
    return runner.main("fine", argv, __doc__.split("\n\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())
