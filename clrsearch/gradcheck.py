"""Gradient check: ``python -m clrsearch.gradcheck`` compares analytic and numerical gradients. See :mod:`clrsearch.cli.gradcheck`."""

from .cli.gradcheck import main

if __name__ == "__main__":
    raise SystemExit(main())
