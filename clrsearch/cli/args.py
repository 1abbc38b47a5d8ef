"""What every command shares: a parser and argument types whose errors are one line and exit status 2."""

import argparse
import contextlib
import functools
import os
import sys

from ..errors import UsageError


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse`` parser whose errors are one line on stderr and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


QUIET_MLFLOW = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # a command's output is its own; a user's value wins


def entry_point(main):
    """Wrap ``main(argv=None)`` so that a :class:`UsageError` becomes one line and exit 2, and MLflow's
    artifact download bars stay off while it runs (:data:`QUIET_MLFLOW`)."""

    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            with _defaults(os.environ, QUIET_MLFLOW):
                return main(argv)
        except UsageError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    return wrapper


@contextlib.contextmanager
def _defaults(environ, values):
    """``values`` set in ``environ`` where it has none, while the block runs."""
    added = {name: value for name, value in values.items() if name not in environ}
    environ.update(added)
    try:
        yield
    finally:
        for name in added:
            environ.pop(name, None)


def positive_int(text):
    """``argparse`` type: an integer >= 1."""
    value = _parse(int, text, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return value


def non_negative_int(text):
    """``argparse`` type: an integer >= 0."""
    value = _parse(int, text, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be an integer >= 0")
    return value


def non_negative_float(text):
    """``argparse`` type: a finite float >= 0."""
    value = _parse(float, text, "a number")
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def float_or_auto(text):
    """``argparse`` type: "auto" or a finite float >= 0."""
    return "auto" if text == "auto" else non_negative_float(text)


def positive_float(text):
    """``argparse`` type: a finite float > 0."""
    value = _parse(float, text, "a number")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
    return value


def _parse(kind, text, what):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
