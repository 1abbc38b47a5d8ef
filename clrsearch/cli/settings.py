"""Study definitions: built-in defaults, then a TOML file, then command-line flags.

The defaults live in :data:`clrsearch.config.DEFAULT_SEARCH`. When
``studies/<kind>.toml`` exists in the working directory it overrides them
(``--config FILE`` names another file); flags override both. A TOML file has
up to three tables, named after the config sections::

    [study]            # clrsearch.config.StudyConfig
    n_trials = 10
    [data]             # clrsearch.config.DataConfig
    split = "full"
    [train]            # clrsearch.config.TrainConfig
    n_s = 900

Unknown tables or keys, wrong types and out-of-range values are errors.
"""

import argparse
import dataclasses
import tomllib
from pathlib import Path

from ..config import DEFAULT_SEARCH, DTYPES, GRID_DIMENSIONS, PRUNERS, RACE_RULES, SAMPLERS, SECTIONS, SearchConfig
from ..errors import UsageError
from ..nn.schedule import MODES
from . import args as cli


def accuracy_points(text):
    """``argparse`` type: accuracy points > 0 and < 100 -> a fraction, e.g. '0.3' -> 0.003."""
    value = cli.positive_float(text)
    if value >= 100:
        raise argparse.ArgumentTypeError(f"{text!r} must be accuracy points below 100, e.g. 0.3")
    return value / 100


# flag -> (section, field, argparse type, help); the field's default comes from the config.
FLAGS = {
    "--study-name": ("study", "name", str, "Optuna study name; the same name resumes the study"),
    "--storage": ("study", "storage", str, "Optuna storage URL (default sqlite:///studies/clrsearch.db)"),
    "--sampler": ("study", "sampler", str, f"one of {', '.join(SAMPLERS)}"),
    "--seed": ("study", "seed", cli.non_negative_int, "sampler seed"),
    "--n-trials": ("study", "n_trials", cli.positive_int, "lambda values to try (coarse)"),
    "--n-seeds": ("study", "n_seeds", cli.positive_int, "networks per lambda"),
    "--first-seed": ("study", "first_seed", cli.non_negative_int, "init seed of replicate 0"),
    "--replicates": ("study", "replicates", str, "blocks (replicate r fixes init, mini-batch order and "
                                                  "validation fold r mod F; the default), paired (init and order, "
                                                  "one fixed split) or init (init seeds only, one shared order)"),
    "--alpha": ("study", "alpha", cli.positive_float, "error rate of the race's decision, the MCB intervals and the "
                                                      "Holm-corrected paired tests (default 0.05)"),
    "--lam-min": ("study", "lam_min", cli.positive_float, "smallest lambda of the coarse range"),
    "--lam-max": ("study", "lam_max", cli.positive_float, "largest lambda of the coarse range"),
    "--grid": ("study", "grid", None, "fine grid: lambdas 0,0.001,0.002, or one dimension as NAME=V1,V2 "
                                      "(lam, n_s, n_s_epochs, cycles, augment); repeat for more dimensions"),
    "--grid-points": ("study", "grid_points", cli.positive_int, "size of a grid derived from the coarse study"),
    "--coarse-study": ("study", "coarse_study", str, "coarse study a derived grid comes from"),
    "--trials-per-population": ("study", "trials_per_population", cli.positive_int,
                                "trials trained together as one population"),
    "--pruner": ("study", "pruner", str, f"one of {', '.join(PRUNERS)}"),
    "--experiment": ("study", "experiment", str, "MLflow experiment name"),
    "--race-seeds": ("study", "race_seeds", cli.positive_int, "replicates added per race round (fine)"),
    "--max-seeds": ("study", "max_seeds", cli.positive_int, "replicates of a point at which the race stops (fine)"),
    "--race-rule": ("study", "race_rule", str, f"one of {', '.join(RACE_RULES)}: KN screening with an MCB stop, or "
                                               "Holm-corrected t-tests against the best (fine)"),
    "--delta": ("study", "delta", accuracy_points,
                "indifference zone of the race in accuracy points (default 0.3) (fine)"),
    "--final-seeds": ("study", "final_seeds", cli.positive_int, "networks of the final model, registered as "
                                                                "their ensemble (fine)"),
    "--final-val-size": ("study", "final_val_size", cli.positive_int, "validation images of the final run (fine)"),
    "--final-extra-cycles": ("study", "final_extra_cycles", cli.non_negative_int,
                             "cycles the final model trains beyond the winning point's (fine)"),
    "--data-dir": ("data", "data_dir", str, "folder of cifar-10-batches-py"),
    "--val-size": ("data", "val_size", cli.positive_int, "validation images held out"),
    "--split-seed": ("data", "split_seed", cli.non_negative_int, "seed of the validation hold-out"),
    "--n-batch": ("train", "n_batch", cli.positive_int, "images per update step"),
    "--cycles": ("train", "cycles", cli.positive_int, "cycles per trial"),
    "--n-s": ("train", "n_s", cli.positive_int, "half a cycle, in update steps"),
    "--eta-min": ("train", "eta_min", cli.float_or_auto, "smallest learning rate, or auto (LR range test)"),
    "--eta-max": ("train", "eta_max", cli.float_or_auto, "largest learning rate, or auto (LR range test)"),
    "--clr-mode": ("train", "clr_mode", str, f"one of {', '.join(MODES)}"),
    "--gamma": ("train", "gamma", cli.positive_float, "exp_range amplitude decay per step"),
    "--hidden": ("train", "hidden", cli.positive_int, "hidden units"),
    "--dtype": ("train", "dtype", str, f"one of {', '.join(DTYPES)}"),
    "--shuffle-seed": ("train", "shuffle_seed", cli.non_negative_int, "seed of the mini-batch order"),
    "--evals-per-cycle": ("train", "evals_per_cycle", cli.positive_int, "learning-curve points per cycle"),
    "--eval-train-size": ("train", "eval_train_size", cli.positive_int, "training images for the training curve"),
    "--augment": ("train", "augment", str, "none or flip (mirror each training image with probability 1/2)"),
}


def parse_grid(text):
    """One ``--grid``: '0, 0.001,0.002' -> ("lam", (0.0, 0.001, 0.002)); 'n_s_epochs=2,4' -> ("n_s_epochs", (2, 4)).

    Lambda values are numbers, ``augment`` values names, the other dimensions integers.
    """
    name, _, values = text.rpartition("=")
    name = name.strip() or "lam"
    if name not in GRID_DIMENSIONS:
        raise argparse.ArgumentTypeError(f"grid dimension {name!r} is not one of {', '.join(GRID_DIMENSIONS)}")
    kind, what = {"lam": (float, "a number"), "augment": (str, "a name")}.get(name, (int, "an integer"))
    parsed = []
    for item in values.split(","):
        item = item.strip()
        try:
            parsed.append(kind(item))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"grid item {item!r} of {name} is not {what}; write the grid as comma-separated values, "
                f"e.g. 0,0.001,0.002 or n_s_epochs=2,4") from None
    return name, tuple(parsed)


FINE_ONLY = ("--grid", "--grid-points", "--coarse-study", "--race-seeds", "--max-seeds", "--race-rule", "--delta",
             "--final-seeds",
             "--final-val-size", "--final-extra-cycles")


def search_parser(kind, description):
    """The argument parser of ``python -m clrsearch.<kind>``."""
    parser = cli.ArgumentParser(prog=f"python -m clrsearch.{kind}", description=description)
    parser.add_argument("--config", help=f"study definition (default studies/{kind}.toml if present)")
    for flag, (section, name, kind_of, help_text) in FLAGS.items():
        if kind == "coarse" and flag in FINE_ONLY:
            continue
        if kind == "fine" and flag in ("--n-trials", "--lam-min", "--lam-max", "--sampler"):
            continue
        if name == "grid":
            parser.add_argument(flag, dest=f"{section}.{name}", type=parse_grid, action="append", help=help_text)
        else:
            parser.add_argument(flag, dest=f"{section}.{name}", type=kind_of, help=help_text)
    if kind == "fine":
        parser.add_argument("--no-final", dest="study.final", action="store_const", const=False,
                            help="skip the final model")
        parser.add_argument("--promote", dest="study.promote", action="store_const", const=True,
                            help="make the final model the champion even when it is less accurate than the current "
                                 "one (recorded on the version)")
        parser.add_argument("--no-race", dest="study.race", action="store_const", const=False,
                            help="the fixed protocol: n_seeds replicates per grid point, no race")
    parser.add_argument("--outage-seconds", type=cli.non_negative_float, default=None,
                        help="how long the study waits for its storage or tracking server when it is out of reach, "
                             "in seconds (default 300); past it, the same command resumes the study")
    parser.add_argument("--workers", type=cli.positive_int, default=1,
                        help="processes on this machine sharing the study (default 1)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def take_auto_eta(args):
    """Remove ``--eta-min auto`` / ``--eta-max auto`` from ``args``; returns the names set to auto."""
    auto = set()
    for name in ("eta_min", "eta_max"):
        if getattr(args, f"train.{name}", None) == "auto":
            setattr(args, f"train.{name}", None)
            auto.add(name)
    return auto


def load_search_config(kind, args, cwd=None):
    """Defaults, then the TOML file, then the flags in ``args`` -> SearchConfig."""
    config = DEFAULT_SEARCH[kind]
    path = Path(args.config) if args.config else Path(cwd or ".") / "studies" / f"{kind}.toml"
    if args.config or path.is_file():
        config = apply_overrides(config, read_toml(path), source=str(path))
    flags = {}
    for dest, value in vars(args).items():
        if "." in dest and value is not None:
            section, name = dest.split(".")
            flags.setdefault(section, {})[name] = value
    return apply_overrides(config, flags, source="the command line")


def read_toml(path):
    """The tables of a study definition file, as nested dicts."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path} is not valid TOML: {error}") from None
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None


def apply_overrides(config: SearchConfig, tables: dict, source: str) -> SearchConfig:
    """Replace fields of ``config`` section by section; unknown names are errors."""
    unknown = sorted(set(tables) - set(SECTIONS))
    if unknown:
        raise UsageError(f"{source}: unknown table [{unknown[0]}]; the tables are [{'], ['.join(SECTIONS)}]")
    sections = {}
    for section in SECTIONS:
        values = tables.get(section, {})
        current = getattr(config, section)
        if not isinstance(values, dict):
            raise UsageError(f"{source}: [{section}] must be a table")
        types = {f.name: f.type for f in dataclasses.fields(current)}
        fields = set(types)
        bad = sorted(set(values) - fields)
        if bad:
            raise UsageError(f"{source}: unknown key {bad[0]!r} in [{section}]; known keys: {', '.join(sorted(fields))}")
        if "grid" in values:
            values = {**values, "grid": _grid_tuple(values["grid"], source)}
        for name, value in values.items():
            _check_type(value, types[name], f"{source}: [{section}] {name}")
        try:
            sections[section] = dataclasses.replace(current, **values)
        except UsageError as error:
            raise UsageError(f"{source}: [{section}] {error}") from None
    return SearchConfig(**sections)


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", tuple: "a list"}


def _check_type(value, annotation, where):
    """Raise UsageError unless ``value`` fits a config field annotated ``annotation`` (e.g. ``int | None``)."""
    kinds = [k for k in getattr(annotation, "__args__", (annotation,)) if k is not type(None)]
    if value is None and len(kinds) < len(getattr(annotation, "__args__", (annotation,))):
        return
    for kind in kinds:
        if kind is bool and isinstance(value, bool):
            return
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return
        if kind in (str, tuple) and isinstance(value, kind):
            return
    wanted = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
    raise UsageError(f"{where} must be {wanted}, not {value!r}")


def _grid_tuple(grid, source):
    """A grid from TOML or flags as StudyConfig takes it: numbers (lambdas), a table, or (name, values) pairs."""
    if isinstance(grid, dict):
        return tuple((name, tuple(values) if isinstance(values, list) else (values,)) for name, values in grid.items())
    if not isinstance(grid, (list, tuple)):
        raise UsageError(f"{source}: grid must be a list of numbers, e.g. grid = [0, 0.001, 0.002], or a table "
                         f"[study.grid] of dimensions, e.g. lam = [0, 0.002] and n_s_epochs = [2, 4]")
    return tuple(tuple(item) if isinstance(item, list) else item for item in grid)
