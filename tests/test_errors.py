"""The one exception users see as a message (clrsearch.errors), and how messages show URLs and errors."""

import pytest

from clrsearch.errors import UsageError, first_line, redact


@pytest.mark.parametrize("url, shown", [
    ("postgresql://someone:secret@db.example:5432/studies", "postgresql://someone@db.example:5432/studies"),
    ("postgresql+psycopg://someone:p@ss:w0rd@host/db", "postgresql+psycopg://someone@host/db"),
    ("http://user:token@127.0.0.1:5000", "http://user@127.0.0.1:5000"),
    ("postgresql://someone@host/db", "postgresql://someone@host/db"),
    ("sqlite:///studies/clrsearch.db", "sqlite:///studies/clrsearch.db"),
    ("not a url @ all", "not a url @ all"),
    ("http://host:5000/path@x", "http://host:5000/path@x"),
    ("no answer from postgresql://u:pw@h/db or http://v:t@k:1 (refused)",
     "no answer from postgresql://u@h/db or http://v@k:1 (refused)"),
])
def test_redact_drops_the_password_and_nothing_else(url, shown):
    assert redact(url) == shown


def test_first_line_of_an_error_or_its_type_when_it_says_nothing():
    assert first_line(ValueError("bad value\nmore detail\n")) == "bad value"
    assert first_line(ValueError("\n  indented first line\nsecond")) == "indented first line"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(UsageError("   ")) == "UsageError"
