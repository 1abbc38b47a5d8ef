"""The one exception type users see as a message instead of a traceback, and what such messages show."""


class UsageError(Exception):
    """Bad input: a flag, a config field, a data directory.

    Entry points print ``str(error)`` as one line and exit with status 2, so
    the message must name the problem and, where there is one, the fix.
    """


def first_line(error):
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def redact(url):
    """A storage or tracking URL without its password, fit for a message or a tag."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}@{host}"
    return url
