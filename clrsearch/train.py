"""One network trained as in a SPEC experiment: ``python -m clrsearch.train --preset fig3``. See :mod:`clrsearch.cli.train`."""

from .cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
