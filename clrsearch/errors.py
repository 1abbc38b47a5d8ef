"""The one exception type users see as a message instead of a traceback."""


class UsageError(Exception):
    """Bad input: a flag, a config field, a data directory.

    Entry points print ``str(error)`` as one line and exit with status 2, so
    the message must name the problem and, where there is one, the fix.
    """
