"""The one exception type users see as a message instead of a traceback, and what such messages show."""

import re


class UsageError(Exception):
    """Bad input: a flag, a config field, a data directory.

    Entry points print ``str(error)`` as one line and exit with status 2, so
    the message must name the problem and, where there is one, the fix.
    """


def first_line(error):
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def redact(text):
    """``text``, a storage or tracking URL or a message naming some, without the password of any
    ``scheme://user:password@host`` in it: fit for a message or a tag."""
    return re.sub(r"(://[^/:@\s]+):[^/\s]*@", r"\1@", text)
