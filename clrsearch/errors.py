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


_USERINFO_PASSWORD = re.compile(r"(://[^/:@\s]+):[^/\s]*@")  # scheme://user:password@host
_QUERY_PASSWORD = re.compile(r"([?&;]password=)[^&;\s]*", re.IGNORECASE)  # ...?password=... of a database URL


def redact(text):
    """``text``, a storage or tracking URL, a command line or a message naming some, without any password in
    it (of ``scheme://user:password@host``, of ``?password=``): fit for a message, a param or a tag."""
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1@", str(text)))
