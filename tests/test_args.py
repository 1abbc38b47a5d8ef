"""What every command shares (clrsearch.cli.args): argument types with one clear error each, and
errors as one line with exit status 2."""

import argparse

import pytest

from clrsearch.cli import args
from clrsearch.errors import UsageError


@pytest.mark.parametrize("kind, good, bad", [
    (args.positive_int, [("1", 1), ("42", 42)], [("0", "must be a positive integer"), ("x", "is not an integer"),
                                                   ("1.5", "is not an integer")]),
    (args.non_negative_int, [("0", 0), ("7", 7)], [("-1", "must be an integer >= 0")]),
    (args.non_negative_float, [("0", 0.0), ("1e-3", 1e-3)], [("-0.1", "must be a finite number >= 0"),
                                                              ("inf", "finite"), ("nan", "finite"),
                                                              ("a", "is not a number")]),
    (args.positive_float, [("2.5", 2.5)], [("0", "must be a finite number > 0"), ("inf", "finite")]),
    (args.float_or_auto, [("auto", "auto"), ("0.1", 0.1)], [("Auto", "is not a number"), ("-1", ">= 0")]),
])
def test_argument_types_accept_their_values_and_name_the_problem_of_others(kind, good, bad):
    for text, value in good:
        assert kind(text) == value
    for text, message in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=message) as error:
            kind(text)
        assert repr(text) in str(error.value)


def test_a_bad_flag_is_one_line_and_exit_status_2(capsys):
    parser = args.ArgumentParser(prog="prog")
    parser.add_argument("--n", type=args.positive_int)
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--n", "0"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == "prog: error: argument --n: '0' must be a positive integer (see --help)\n"


def test_entry_point_turns_a_usage_error_into_one_line_and_exit_status_2(capsys):
    @args.entry_point
    def main(argv=None):
        if argv == ["fail"]:
            raise UsageError("no CIFAR-10 data at /nowhere")
        return 0

    assert main([]) == 0
    with pytest.raises(SystemExit) as stop:
        main(["fail"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == "error: no CIFAR-10 data at /nowhere\n"
    assert main.__name__ == "main"
