"""Test a registered model on the CIFAR-10 test batch: accuracy and confusion matrix. See :mod:`clrsearch.cli.evaluate`."""

from .cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
