"""Fine lambda search on a grid, then the final model: trained, tested and registered.

    python -m clrsearch.fine [--grid 0,0.001,0.002] [--n-seeds 3] [--final-cycles 3] [--ensemble]

Without ``--grid`` the grid is derived from the coarse study in the same
storage (see :func:`clrsearch.search.study.derive_grid`). The final model is
registered in MLflow as ``clrsearch-cifar10`` with the alias ``champion``.
"""

from .cli.study import command

main = command("fine", __doc__)

if __name__ == "__main__":
    raise SystemExit(main())
