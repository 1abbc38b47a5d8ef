"""Study definitions (clrsearch.cli.settings): built-in defaults, TOML files, flags, and their errors."""

import argparse
from pathlib import Path

import pytest

from clrsearch.cli.settings import apply_overrides, load_search_config, parse_grid, read_toml, search_parser
from clrsearch.config import DEFAULT_SEARCH
from clrsearch.errors import UsageError

REPO = Path(__file__).resolve().parents[1]


def parse(kind, argv, cwd):
    args = search_parser(kind, "test").parse_args(argv)
    return load_search_config(kind, args, cwd=cwd)


@pytest.mark.parametrize("kind", ["coarse", "fine"])
def test_repository_toml_files_hold_the_built_in_defaults(kind):
    tables = read_toml(REPO / "studies" / f"{kind}.toml")
    assert apply_overrides(DEFAULT_SEARCH[kind], tables, "repo") == DEFAULT_SEARCH[kind]


def test_coarse_defaults_are_the_protocol_of_the_study(tmp_path):
    config = parse("coarse", [], tmp_path)
    assert (config.study.n_trials, config.study.n_seeds, config.study.sampler) == (10, 3, "random")
    assert (config.study.lam_min, config.study.lam_max) == (1e-5, 1e-1)
    assert (config.data.split, config.data.val_size) == ("full", 5000)
    t = config.train
    assert (t.n_batch, t.cycles, t.n_s, t.eta_min, t.eta_max) == (100, 2, 2 * (45000 // 100), 1e-5, 1e-1)


def test_working_directory_toml_overrides_defaults_and_flags_override_it(tmp_path):
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "coarse.toml").write_text("[study]\nn_trials = 4\nn_seeds = 2\n[train]\nn_s = 50\n")
    config = parse("coarse", ["--n-seeds", "5"], tmp_path)
    assert (config.study.n_trials, config.study.n_seeds, config.train.n_s) == (4, 5, 50)
    assert config.train.cycles == DEFAULT_SEARCH["coarse"].train.cycles


def test_config_flag_reads_another_file(tmp_path):
    other = tmp_path / "mine.toml"
    other.write_text('[study]\ngrid = [0, 0.5]\nname = "mine"\n')
    config = parse("fine", ["--config", str(other)], tmp_path)
    assert config.study.grid == (("lam", (0.0, 0.5)),) and config.study.name == "mine"


def test_grid_flag_parses_comma_separated_numbers(tmp_path):
    assert parse("fine", ["--grid", "0, 0.001,0.002"], tmp_path).study.grid == (("lam", (0.0, 0.001, 0.002)),)
    with pytest.raises(argparse.ArgumentTypeError, match="not a number"):
        parse_grid("0,abc")


@pytest.mark.parametrize("text, message", [
    ("[stduy]\nn_trials = 3\n", "unknown table [stduy]"),
    ("[study]\nn_trails = 3\n", "unknown key 'n_trails' in [study]"),
    ("[train]\nn_s = 0\n", "n_s must be >= 1"),
    ("[train]\nn_s = 9.5\n", "n_s must be an integer"),
    ("[train]\neta_min = 0.2\n", "eta_min (0.2) must be smaller than eta_max"),
    ("[study]\nlam_min = -1.0\n", "lambda must be a finite number >= 0"),
    ("[study]\nsampler = \"grid\"\n", "grid sampler belongs to the fine study"),
    ("[study\n", "not valid TOML"),
])
def test_bad_toml_names_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as error:
        parse("coarse", ["--config", str(path)], tmp_path)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        parse("coarse", ["--config", str(tmp_path / "nope.toml")], tmp_path)
