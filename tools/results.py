"""Reproduce the figures of the study on the real data and write them to docs/RESULTS.md.

    python tools/results.py --data-dir DIR [--section NAME ...] [--out docs/RESULTS.md] [--study-args FLAGS]

Each section is a function returning markdown, registered in ``SECTIONS``.
In the output file a section sits between ``<!-- section: NAME -->`` and
``<!-- end: NAME -->``; a run rewrites only the sections it ran and keeps the
others as they are, so sections can be produced by separate runs (and added
by other modules). Each section is written as soon as it is done, so a
section that fails keeps the ones before it. Progress goes to stderr.

Section ``core``:

- the gradient check of SPEC, both scenarios (``python -m clrsearch.gradcheck``);
- ``sanity``: the training accuracy reached and the first epoch at 100%;
- ``fig3`` and ``fig4``: test accuracy for seeds 0, 1, 2, each run being
  ``python -m clrsearch.train --preset fig3 --seed S``, and their mean ± std;
- a "Done when" table against the targets and the original report.

Section ``search``: ``python -m clrsearch.coarse --json`` then
``python -m clrsearch.fine --json`` in the working directory (their runs land
in its MLflow store, their studies in its Optuna storage). Per study, every
point's λ and schedule, mean ± std of its paired replicates, paired difference
to the best with its 95% interval, Holm-corrected p and verdict, and for the
fine study the round it left the race; the final model (winning settings, its
members' test accuracies, the registered ensemble's, the snapshot
ensemble's); "Done when" against issue 11's targets; the cost of each stage.

Section ``augment``: a fine study ``flip-effect`` (``--grid augment=none,flip``
at the fine study's best λ, n_s_epochs 4, 5 replicates, no race, no final
model) and the paired difference flip − none.

Section ``schedule``: no training; the fine study in the storage, the best
point of each schedule of its grid against the overall best.

Section ``pruning``: in a temporary folder, ``python -m clrsearch.coarse
--n-trials 30 --n-seeds 2`` without a pruner and again with ``--pruner
median`` (each its own study and storage, MLflow store there too); every
trial's cycle-1 accuracy (the rung values the pruned study reported), which
trials were pruned, the best trial of both, the training time of both and the
share saved; and the rules of :mod:`clrsearch.search.pruning` replayed on the
same cycle-1 accuracies, the measurement behind ``--pruner median``'s margin.

``--study-args`` adds flags to every study command (for quick checks on a
tiny configuration); it also says which fine study augment and schedule read.
Seeds, targets and the default output file are the fields of :class:`ResultsSettings`.
"""

import math
import platform
import re
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clrsearch.cli import environment
from clrsearch.cli.args import ArgumentParser, entry_point
from clrsearch.cli.train import parse_experiment
from clrsearch.config import DataConfig
from clrsearch.data import ensure_data, load_splits
from clrsearch.data.download import _md5
from clrsearch.nn import gradcheck
from clrsearch.nn.experiment import run_experiment
from clrsearch.nn.gradcheck import share


@dataclass(frozen=True)
class ResultsSettings:
    """Seeds, targets and where the page goes; ``SETTINGS`` is the one in use."""

    out: str = "docs/RESULTS.md"  # default of --out, relative to the working directory
    figure_seeds: tuple = (0, 1, 2)  # seeds of each SPEC figure's runs (initial weights and mini-batch order)
    gradcheck_seed: int = 0  # seed of the checked network's initial weights (python -m clrsearch.gradcheck's default)
    gradcheck_lam: float = 0.01  # lambda of scenario 2 (the command's default); scenario 1 uses 0
    gradcheck_seconds: float = 60.0  # seconds scenario 2 must finish within
    # Test accuracy, %, for each SPEC figure: (figure, (our target for the mean over seeds,
    # the original report, the assignment text)).
    figure_targets: tuple = (("fig3", (45.5, 46.01, 45.85)), ("fig4", (46.8, 47.29, 47.47)))
    # Section search: the targets of issue 11 and the original report's final run.
    final_target: float = 55.0  # %, test accuracy of the registered final model (the members' ensemble)
    member_target: float = 53.0  # %, the final model's members' mean test accuracy, as single networks
    fine_minutes: float = 8.0  # wall time of the default fine study, race and final model included
    report_test: float = 51.14  # %, test accuracy of the original report's final network
    report_val: float = 52.5  # %, its validation accuracy
    # Section augment: the flip-effect study (python -m clrsearch.fine with these flags).
    augment_study: str = "flip-effect"  # its Optuna study name
    augment_lam: float = 0.003  # lambda when the storage holds no finished fine study to take the best from
    augment_n_s_epochs: int = 4  # its schedule: n_s = 4 * floor(n / n_batch)
    augment_seeds: int = 5  # paired replicates of each setting
    # One trial per population: a population gathers one mini-batch for all its members, and the trainer
    # refuses members that differ in augment. The pairing does not suffer: replicate r has the same initial
    # weights and mini-batch order in whichever population it trains.
    augment_trials_per_population: int = 1
    # Section pruning: the coarse study with and without the pruner (python -m clrsearch.coarse with these flags).
    pruning_trials: int = 30  # lambdas of both studies, the same draws
    pruning_seeds: int = 2  # paired replicates per lambda
    pruning_pruner: str = "median"  # the pruned study's --pruner

    def targets(self, figure):
        """(target, original report, assignment) of ``figure``, each a test accuracy in %."""
        return dict(self.figure_targets)[figure]


SETTINGS = ResultsSettings()
TITLE = "# clrsearch results"
INTRO = ("Figures of the study reproduced by `python tools/results.py`. Each section is "
         "rewritten only by a run of that section; the commands under each table reproduce "
         "every number in it.")


def log(message):
    print(f"[results] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- section core

def core_section(run):
    """Gradient check, sanity run, fig3 and fig4 over three seeds; markdown."""
    folder = ensure_data(environment.data_dir(run.data_dir), download=False)
    checks = gradient_check(folder)
    sanity_experiment = train_experiment(train_argv("sanity", folder))
    log(f"sanity: {sanity_experiment.data.n_train} images, {sanity_experiment.train.total_steps} updates")
    sanity = run_experiment(sanity_experiment, splits_of(sanity_experiment))
    log(f"sanity: training accuracy {100 * sanity.train_accuracy:.2f}%")
    sanity_epoch = first_epoch_at(sanity.result.history, "train_accuracy", 1.0)
    figures, data_sets = {}, DataSets()
    for name, _ in SETTINGS.figure_targets:
        figures[name] = []
        for seed in SETTINGS.figure_seeds:
            experiment = train_experiment(train_argv(name, folder, seed))
            log(f"{name} seed {seed}: {experiment.train.total_steps} updates")
            splits = data_sets.of(experiment)
            start = time.perf_counter()  # training and evaluation; the data are loaded once, before
            outcome = run_experiment(experiment, splits)
            seconds = time.perf_counter() - start
            log(f"{name} seed {seed}: test accuracy {100 * outcome.test_accuracy:.2f}% ({seconds:.0f} s)")
            figures[name].append((seed, outcome, seconds))

    lines = ["## Core figures", "",
             f"Data: `{folder}` ({data_fingerprint(folder)}). "
             f"numpy {np.__version__}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}. "
             "The whole section:", "",
             "```", f"python tools/results.py --data-dir {folder} --section core", "```", ""]
    lines += done_when(checks, sanity, sanity_epoch, figures)
    lines += gradcheck_markdown(checks, folder)
    lines += sanity_markdown(sanity, sanity_epoch, folder)
    for name, runs in figures.items():
        lines += figure_markdown(name, runs, folder)
    return "\n".join(lines).rstrip() + "\n"


def train_argv(preset, folder, seed=None):
    """The flags of ``python -m clrsearch.train`` that run ``preset`` (with ``seed``) on the data in ``folder``."""
    return ["--preset", preset, *([] if seed is None else ["--seed", str(seed)]), "--data-dir", str(folder)]


def train_command(argv):
    """``argv`` as the command line shown under a table."""
    return shlex.join(["python", "-m", "clrsearch.train", *argv])


def train_experiment(argv):
    """The experiment ``python -m clrsearch.train`` builds from ``argv``: the same flags give the same numbers.

    A seed sets both the initial weights and the mini-batch order.
    """
    experiment, _ = parse_experiment(argv)
    return experiment


def splits_of(experiment):
    """The experiment's splits, loaded as the ``train`` command loads them (never downloaded here)."""
    return load_splits(experiment.data, dtype=np.dtype(experiment.train.dtype), download=False)


class DataSets:
    """The splits of each experiment, loaded once for all the runs on the same data."""

    def __init__(self):
        self._loaded = {}

    def of(self, experiment):
        key = (experiment.data, experiment.train.dtype)
        if key not in self._loaded:
            self._loaded[key] = splits_of(experiment)
        return self._loaded[key]


def gradient_check(folder):
    """Both SPEC scenarios as ``python -m clrsearch.gradcheck`` runs them: {scenario: result}."""
    train = load_splits(DataConfig("batch1", data_dir=str(folder)), dtype=np.float64, download=False).train
    results = {}
    for scenario in gradcheck.SCENARIOS:
        X, Y = gradcheck.scenario_inputs(train.X, train.Y, scenario)
        lam = 0.0 if scenario == 1 else SETTINGS.gradcheck_lam
        log(f"gradient check, scenario {scenario}: D = {X.shape[0]}, N = {X.shape[1]}, lambda = {lam:g}")
        result = gradcheck.run_check(X, Y, lam, gradcheck.HIDDEN, np.random.default_rng(SETTINGS.gradcheck_seed))
        log(f"gradient check, scenario {scenario}: {result['seconds']:.1f} s")
        results[scenario] = result
    return results


def first_epoch_at(history, metric, level, member=0):
    """First evaluation epoch at which ``metric`` of ``member`` reaches ``level``; None if never."""
    reached = np.flatnonzero(history.metrics[metric][:, member] >= level)
    return float(history.epochs[reached[0]]) if reached.size else None


def data_fingerprint(folder):
    """md5 of the files split batch1 reads, so a reader can tell which copy of CIFAR-10 it was."""
    return ", ".join(f"{name} md5 `{_md5(Path(folder) / name)}`"
                     for name in ("data_batch_1", "data_batch_2", "test_batch"))


def pct(value):
    return f"{100 * value:.2f}%"


def mean_std(values):
    """Mean and sample standard deviation (ddof 1) of a few runs."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def yes_no(ok):
    return "yes" if ok else "**no**"


def done_when(checks, sanity, sanity_epoch, figures):
    rows = []
    for scenario, result in checks.items():
        worst = max(row["max_abs"] for row in result["table"].values())
        original = "~1e-8" if scenario == 1 else "~1e-7"
        rows.append((f"gradient check, scenario {scenario}: largest absolute error", "< 1e-6",
                     f"{worst:.1e}", original, yes_no(worst < gradcheck.TOLERANCE)))
    seconds = checks[2]["seconds"]
    limit = SETTINGS.gradcheck_seconds
    rows.append(("gradient check, scenario 2: time", f"< {limit:.0f} s", f"{seconds:.2f} s", "—",
                 yes_no(seconds < limit)))
    epoch = "never" if sanity_epoch is None else f"epoch {sanity_epoch:g}"
    rows.append(("sanity: training accuracy", "100%", f"{pct(sanity.train_accuracy)} (first at {epoch})",
                 "100% by epoch ~13", yes_no(sanity.train_accuracy == 1.0)))
    for name, runs in figures.items():
        target, original, assignment = SETTINGS.targets(name)
        mean, std = mean_std([100 * outcome.test_accuracy for _, outcome, _ in runs])
        rows.append((f"{name}: mean test accuracy, seeds {', '.join(str(s) for s, _, _ in runs)}",
                     f">= {target:.1f}%", f"{mean:.2f}% ± {std:.2f}",
                     f"{original:.2f}% ({assignment:.2f}% in the assignment)", yes_no(mean >= target)))
    return ["### Done when", "",
            "| check | target | ours | original report | met |",
            "|---|---|---|---|---|",
            *(f"| {' | '.join(row)} |" for row in rows), "",
            f"± is the sample standard deviation over the {len(SETTINGS.figure_seeds)} seeds, in percentage points; "
            "each seed sets both the initial weights and the mini-batch order.", ""]


def gradcheck_markdown(checks, folder):
    lines = ["### Gradient check", "",
             f"Analytic gradients against centred differences (h = {checks[1]['h']:g}, float64, "
             f"M = {gradcheck.HIDDEN}, initial weights from seed {SETTINGS.gradcheck_seed}) on the first training "
             "images of split batch1; relative error |ga − gn| / max(eps, |ga| + |gn|).", "",
             "| scenario | inputs | λ | param | abs < 1e-6 | max abs error | rel < 1e-6 | max rel error |",
             "|---|---|---|---|---|---|---|---|"]
    for scenario, result in checks.items():
        inputs = f"{result['dims']} dims × {result['images']} image{'s' if result['images'] > 1 else ''}"
        for name, row in result["table"].items():
            lines.append(f"| {scenario} | {inputs} | {result['lam']:g} | {name} | {share(row['pct_abs_below'])} "
                         f"| {row['max_abs']:.2e} | {share(row['pct_rel_below'])} | {row['max_rel']:.2e} |")
    lines += ["", "Time (analytic and numerical gradients): "
              + ", ".join(f"scenario {s} {r['seconds']:.2f} s" for s, r in checks.items()) + ".", "",
              "```", f"python -m clrsearch.gradcheck --data-dir {folder} --seed {SETTINGS.gradcheck_seed} "
              f"--lam {SETTINGS.gradcheck_lam:g}", "```", ""]
    return lines


def sanity_markdown(sanity, epoch, folder):
    history = sanity.result.history
    t = sanity.experiment.train
    curve = history.metrics["train_accuracy"][:, 0]
    milestones = [e for e in (1, 5, 10, 13, 20, 50) if e < history.epochs[-1]]
    at = {e: curve[np.searchsorted(history.epochs, e)] for e in milestones}
    lines = ["### sanity: overfit 100 training images", "",
             f"{sanity.experiment.data.n_train} images of data_batch_1, λ = {sanity.experiment.lam:g}, "
             f"n_batch {t.n_batch}, {t.cycles} cycles of 2 × {t.n_s} steps "
             f"({history.epochs[-1]:g} epochs).", "",
             "| training accuracy | first epoch at 100% | training cost at the end | training loss at the end |",
             "|---|---|---|---|",
             f"| {pct(sanity.train_accuracy)} | {'never' if epoch is None else f'{epoch:g}'} "
             f"| {history.final('train_cost')[0]:.2e} | {history.final('train_loss')[0]:.2e} |", "",
             "Training accuracy by epoch: " + ", ".join(f"{e}: {pct(a)}" for e, a in at.items()) + ".", "",
             "```", train_command(train_argv("sanity", folder)), "```", ""]
    return lines


def figure_markdown(name, runs, folder):
    experiment = runs[0][1].experiment
    t = experiment.train
    original = SETTINGS.targets(name)[1]
    lines = [f"### {name}", "",
             f"Split batch1 ({runs[0][1].splits.train.n:,} training images), λ = {experiment.lam:g}, "
             f"n_batch {t.n_batch}, {t.cycles} cycle{'s' if t.cycles > 1 else ''} of 2 × {t.n_s} steps, "
             f"η in [{t.eta_min:g}, {t.eta_max:g}], M = {t.hidden}, {t.dtype}. "
             f"Original report: {original:.2f}% test accuracy.", "",
             "| seed | train accuracy | validation accuracy | test accuracy | seconds |",
             "|---|---|---|---|---|"]
    for seed, outcome, seconds in runs:
        lines.append(f"| {seed} | {pct(outcome.train_accuracy)} | {pct(outcome.val_accuracy)} "
                     f"| {pct(outcome.test_accuracy)} | {seconds:.0f} |")
    cells = []
    for key in ("train_accuracy", "val_accuracy", "test_accuracy"):
        mean, std = mean_std([100 * getattr(outcome, key) for _, outcome, _ in runs])
        cells.append(f"{mean:.2f}% ± {std:.2f}")
    lines += [f"| mean ± std | {' | '.join(cells)} | |", "",
              "```", *(train_command(train_argv(name, folder, seed)) for seed, _, _ in runs), "```", ""]
    return lines


# ---------------------------------------------------------------- the study commands

@dataclass(frozen=True)
class SectionInput:
    """What every section gets: the data folder and the flags added to every study command."""

    data_dir: str | None = None  # --data-dir; None: $CLRSEARCH_DATA or the cache
    study_args: tuple = ()  # --study-args, split into words


# Flags one study command takes and the other refuses. The fine command's: clrsearch.cli.settings.FINE_ONLY
# (each with a value) and these two (without); the coarse command's: COARSE_ONLY (each with a value).
NO_VALUE_FINE_FLAGS = ("--no-final", "--no-race")
COARSE_ONLY = ("--n-trials", "--lam-min", "--lam-max", "--sampler")


def without_flags(study_args, valued, bare=()):
    """``study_args`` without the flags of ``valued`` (and their values) and of ``bare``."""
    kept, words = [], list(study_args)
    while words:
        word = words.pop(0)
        flag = word.split("=", 1)[0]
        if flag in bare:
            continue
        if flag in valued:
            if "=" not in word and words:
                words.pop(0)
            continue
        kept.append(word)
    return kept


def study_argv(kind, study_args):
    """The flags the study command of ``kind`` gets from ``--study-args``: those the other command alone takes
    are left out, so that one string serves both."""
    from clrsearch.cli.settings import FINE_ONLY

    if kind == "coarse":
        return without_flags(study_args, FINE_ONLY, NO_VALUE_FINE_FLAGS)
    return without_flags(study_args, COARSE_ONLY)


def study_config(kind, argv):
    """The SearchConfig ``python -m clrsearch.<kind> ARGV`` runs in the working directory (its parser, its TOML)."""
    from clrsearch.cli.settings import load_search_config, search_parser

    return load_search_config(kind, search_parser(kind, "").parse_args(argv))


def shown_command(kind, argv, data_dir):
    """The command line shown under a table: ``python -m clrsearch.<kind> ARGV``, with the data folder if given."""
    prefix = f"CLRSEARCH_DATA={shlex.quote(str(data_dir))} " if data_dir else ""
    return prefix + shlex.join(["python", "-m", f"clrsearch.{kind}", *argv])


def run_study(kind, argv, data_dir, cwd=None, env=None):
    """Run ``python -m clrsearch.<kind> ARGV --json`` in the working directory (or ``cwd``, with the variables
    ``env`` added); its JSON summary.

    The summary gets two keys of the tool's: ``wall_seconds``, the command's
    wall time (imports included), and ``command``, its command line.
    """
    import json
    import os
    import subprocess

    env = {**os.environ, **(env or {})}
    if data_dir:
        env["CLRSEARCH_DATA"] = str(data_dir)
    argv = [*argv, "--json"]
    command = shown_command(kind, argv, data_dir)
    log(f"{kind} study: {command}")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", f"clrsearch.{kind}", *argv], env=env, stdout=subprocess.PIPE,
                          text=True, cwd=cwd)
    if done.returncode != 0:
        raise SystemExit(f"{command} failed with status {done.returncode}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["wall_seconds"] = time.perf_counter() - started
    out["command"] = command
    log(f"{kind} study: {out['wall_seconds']:.0f} s")
    return out


def load_study(config):
    """The Optuna study ``config`` names, from its storage; None when the storage or the study does not exist.

    Nothing is created: a SQLite file that is missing stays missing.
    """
    import optuna

    from clrsearch.config import DEFAULT_STORAGE
    from clrsearch.search.queue import sqlite_path

    url = config.study.storage or DEFAULT_STORAGE
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        return None
    try:
        return optuna.load_study(study_name=config.study.name, storage=url)
    except KeyError:
        return None


def study_rows(study, config):
    """The trials table of ``study`` (see ``search.summary.trials_table``) at the alpha it was run with."""
    from clrsearch.search.summary import trials_table

    return trials_table(study, study.user_attrs.get("alpha", config.study.alpha))


# ---------------------------------------------------------------- rendering helpers

def number(value):
    """``value`` as a float, None for a missing value (JSON null, NaN, "")."""
    if value is None or value == "":
        return None
    value = float(value)
    return None if math.isnan(value) else value


def accuracy_cell(row):
    """Mean ± sample std of the replicates' validation accuracies, in %, and their count."""
    mean, std = number(row.get("mean_val_accuracy")), number(row.get("std_val_accuracy"))
    if mean is None:
        return ""
    spread = "" if std is None else f" ± {100 * std:.2f}"
    return f"{100 * mean:.2f}%{spread} ({row.get('replicates', '?')})"


def delta_cell(row):
    """Paired difference to the best, in points, with its 95% interval; — for the best itself."""
    if row.get("verdict") == "best":
        return "—"
    delta, low, high = (number(row.get(key)) for key in ("delta_vs_best", "ci_low", "ci_high"))
    if delta is None:
        return ""
    if low is None or high is None:
        return f"{100 * delta:+.2f} (no interval: < 2 common replicates)"
    return f"{100 * delta:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]"


def p_cell(row):
    if row.get("verdict") == "best":
        return "—"
    p = number(row.get("p_vs_best"))
    return "" if p is None else f"{p:.3g}"


def verdict_cell(row):
    """The verdict, in bold for the best; the state (and reason) of a trial that did not complete."""
    verdict = row.get("verdict") or ""
    if verdict == "best":
        return "**best**"
    if verdict:
        return verdict
    reason = row.get("reason") or ""
    return row.get("state", "") + (f" ({reason})" if reason else "")


def race_cell(row):
    """When the point left the fine study's race: after round R, or still in at the end."""
    if row.get("left_race", "") != "":
        return f"after round {row['left_race']}"
    if row.get("state") != "COMPLETE":
        return ""
    return f"stayed to the end ({row.get('rounds', 1)} rounds)"


def schedule_keys(rows):
    """The grid dimensions beside lambda that the rows carry, in the package's order."""
    from clrsearch.config import GRID_DIMENSIONS

    present = set().union(*rows) if rows else set()
    return [name for name in GRID_DIMENSIONS if name != "lam" and name in present]


def settings_text(row, keys):
    """λ and the schedule dimensions of a row, e.g. "λ = 0.003, n_s_epochs 4"."""
    return ", ".join([f"λ = {row['lam']:.4g}"] + [f"{key} {row[key]}" for key in keys if key in row])


def raced(rows):
    """Whether the rows come from a study that raced (some point took more than one round or left)."""
    return any(r.get("left_race", "") != "" or (r.get("rounds") or 1) > 1 for r in rows)


def table(header, rows):
    """A markdown table: ``header`` and every row a list of cells."""
    return [f"| {' | '.join(header)} |", "|" + "---|" * len(header),
            *(f"| {' | '.join(str(c).replace('|', '/') for c in row)} |" for row in rows)]


def trials_markdown(rows, race=False):
    """The table of one study: λ, the schedule dimensions, mean ± std (n), Δ [95% CI], p, verdict (and race)."""
    keys = schedule_keys(rows)
    header = ["trial", "λ", *keys, "val accuracy, mean ± std (n)", "Δ vs best, points [95% CI]", "p (Holm)",
              "verdict", *(["left the race"] if race else [])]
    body = []
    for r in rows:
        body.append([r["trial"], f"{r['lam']:.4g}", *(r[k] for k in keys), accuracy_cell(r), delta_cell(r),
                     p_cell(r), verdict_cell(r), *([race_cell(r)] if race else [])])
    return table(header, body)


def best_of(out):
    """The best row of a study summary: its ``best``, else the row whose verdict is best; None if none."""
    best = out.get("best")
    if best:
        return best
    return next((r for r in out.get("trials", []) if r.get("verdict") == "best"), None)


def race_markdown(rows):
    """Who left the fine study's race when, and how it ended."""
    complete = [r for r in rows if r.get("state") == "COMPLETE"]
    if not complete:
        return []
    rounds = max((r.get("rounds") or 1) for r in complete)
    left = {}
    for r in complete:
        if r.get("left_race", "") != "":
            left.setdefault(int(r["left_race"]), []).append(r)
    stayed = [r for r in complete if r.get("left_race", "") == ""]
    tied = [r for r in stayed if r.get("verdict") == "tied"]
    parts = [f"{len(left[k])} point{'s' if len(left[k]) != 1 else ''} after round {k}" for k in sorted(left)]
    line = (f"The race took {rounds} round{'s' if rounds != 1 else ''}; "
            + (f"left: {', '.join(parts)}. " if parts else "no point left it. "))
    if tied:
        most = max(r.get("replicates", 0) for r in stayed)
        line += (f"{len(tied)} point{'s' if len(tied) != 1 else ''} still tied with the best at {most} replicates "
                 "(the budget): the tie-break keeps the largest mean over all replicates, the best row above.")
    else:
        line += "The best stands alone at the end."
    return [line, ""]


def resumed(out):
    """Whether a study command trained no trial: the study was already finished in the storage."""
    return "training" not in (out.get("seconds") or {})


def stage_costs(coarse, fine):
    """Seconds per stage of each study, as it measured them, and the command's wall time."""
    order = ["data", "training", "evaluation", "tracking", "final model", "total"]
    names = [n for n in order if n in coarse.get("seconds", {}) or n in fine.get("seconds", {})]
    names += sorted((set(coarse.get("seconds", {})) | set(fine.get("seconds", {}))) - set(order))

    def cell(out, name):
        value = number(out.get("seconds", {}).get(name))
        return "—" if value is None else f"{value:.1f} s"

    body = [[("total, in the process" if n == "total" else n), cell(coarse, n), cell(fine, n)] for n in names]
    walls = [number(out.get("wall_seconds")) for out in (coarse, fine)]
    body.append(["**wall time of the command** (imports included)",
                 *("—" if w is None else f"**{w:.0f} s** ({w / 60:.1f} min)" for w in walls)])
    return table(["stage", "coarse", "fine"], body)


def final_protocol(final, config, keys):
    """One paragraph: the winning point and how the final model was trained and registered."""
    from clrsearch.tracking.registry import REGISTERED_NAME

    study_cfg, train_cfg = config.study, config.train
    members = len(final.get("member_test_accuracies") or []) or study_cfg.final_seeds
    cycles = int(final.get("cycles", train_cfg.cycles)) + study_cfg.final_extra_cycles
    if "n_s" in final:
        half = f"{final['n_s']} steps"
    elif "n_s_epochs" in final:
        half = (f"n_s = {final['n_s_epochs']} · ⌊n / {train_cfg.n_batch}⌋ steps ({final['n_s_epochs']} epochs "
                f"of its n training images)")
    else:
        half = f"n_s = {train_cfg.n_s} steps"
    images = (f"all training images but {study_cfg.final_val_size:,} held out for validation"
              if config.data.split == "full" else f"split {config.data.split}")
    augment = final.get("augment", train_cfg.augment)
    return [f"Winning point: {settings_text(final, keys)}. The final model, as the assignment's final run: "
            f"{members} networks (replicates 0–{members - 1}) trained together on {images}, "
            f"{cycles} cycles ({study_cfg.final_extra_cycles} more than the point's) of 2 × {half}, "
            f"augment {augment}; registered as `models:/{REGISTERED_NAME}/{final.get('model_version')}` "
            f"(alias `champion`), the ensemble averaging the members' class probabilities; "
            f"MLflow run `{final.get('run_id')}`.", ""]


def final_markdown(final, config, keys):
    """The final model: its protocol, then ensemble, members, snapshot ensemble, validation and training."""
    members = [100 * a for a in final.get("member_test_accuracies") or []]
    mean, std = mean_std(members) if members else (float("nan"), float("nan"))
    rows = [["test accuracy, the registered ensemble", f"**{pct(final['test_accuracy'])}**",
             f"{SETTINGS.report_test:.2f}% (one network)"],
            ["test accuracy of the members, mean ± std", f"{mean:.2f}% ± {std:.2f}" if members else "—",
             f"{SETTINGS.report_test:.2f}%"],
            ["test accuracy of each member", ", ".join(f"{a:.2f}%" for a in members) or "—", "—"],
            ["test accuracy, snapshot ensemble of every member's cycle ends",
             _optional_pct(final.get("snapshot_ensemble_test_accuracy")) or "—", "—"],
            ["validation accuracy, the ensemble", pct(final["val_accuracy"]), f"{SETTINGS.report_val:g}%"],
            ["training accuracy, the ensemble", pct(final["train_accuracy"]), "—"]]
    return ["### Final model", "", *final_protocol(final, config, keys), *table(["", "ours", "original report"], rows),
            "", "± is the sample standard deviation over the members, in percentage points.", ""]


def search_done_when(fine, keys):
    """The targets of issue 11 against the final model and the fine study's wall time."""
    rows = []
    final = fine.get("final")
    if final:
        ensemble = 100 * final["test_accuracy"]
        rows.append(["final model: test accuracy of the registered ensemble", f"≥ {SETTINGS.final_target:.1f}%",
                     f"{ensemble:.2f}%", f"{SETTINGS.report_test:.2f}% (one network)",
                     yes_no(ensemble >= SETTINGS.final_target)])
        members = [100 * a for a in final.get("member_test_accuracies") or []]
        if members:
            mean, std = mean_std(members)
            rows.append(["final model: the members' mean test accuracy, as single networks",
                         f"≥ {SETTINGS.member_target:.1f}%", f"{mean:.2f}% ± {std:.2f} ({len(members)})",
                         f"{SETTINGS.report_test:.2f}%", yes_no(mean >= SETTINGS.member_target)])
    wall = number(fine.get("wall_seconds"))
    if wall is not None:
        check = ["fine study, race and final model included: wall time", f"≤ {SETTINGS.fine_minutes:g} min"]
        if resumed(fine):
            rows.append([*check, f"{wall / 60:.1f} min, resumed: no trial trained in this run", "—",
                         "not measured"])
        else:
            rows.append([*check, f"{wall / 60:.1f} min", "—", yes_no(wall <= 60 * SETTINGS.fine_minutes)])
    best = best_of(fine)
    if best is not None:
        tied = [r for r in fine.get("trials", []) if r.get("verdict") == "tied"]
        how = f" ({len(tied)} tied at the end: the tie-break)" if tied else ", alone"
        rows.append(["the fine study ends with one winner", "one best", f"trial {best['trial']}{how}", "—",
                     "yes"])
    return ["### Done when", "", *table(["check", "target", "ours", "original report", "met"], rows), ""]


PAIRED = ("Every trial trains paired replicates: replicate r starts from the same initial weights and sees the "
          "same mini-batches in every trial of a study, so each point is compared with the best replicate by "
          "replicate, on their common replicates.")
INIT_ONLY = ("Replicates differ by their initial weights only (`replicates = \"init\"`, the original report's "
             "protocol); each point is compared with the best on the replicates with the same initial weights.")


def search_markdown(coarse, fine, configs=None):
    """The search section from the JSON summaries of the coarse and fine commands (as :func:`run_study` returns
    them); ``configs`` kind -> SearchConfig they ran with (default: the package's defaults)."""
    from clrsearch.config import DEFAULT_SEARCH

    configs = {**DEFAULT_SEARCH, **(configs or {})}
    study_cfg = configs["fine"].study
    commands = [out.get("command", f"python -m clrsearch.{kind}") for kind, out in (("coarse", coarse), ("fine", fine))]
    lines = ["## Lambda search and the final model", "",
             "On the offline CIFAR-10 copy, in the project root (so `mlflow ui` there shows these runs; "
             "`--json` prints the summary this section is made from):", "",
             "```", *commands, "python -m clrsearch.evaluate", "```", "",
             (PAIRED if study_cfg.replicates == "paired" else INIT_ONLY) + " " + COMPARISON.format(study_cfg.alpha),
             ""]
    lines += search_done_when(fine, schedule_keys(fine.get("trials", [])))
    lines += study_markdown("Coarse", coarse) + study_markdown("Fine", fine)
    final = fine.get("final")
    if final:
        lines += final_markdown(final, configs["fine"], schedule_keys(fine.get("trials", [])))
    else:
        lines += ["### Final model", "", "None: the fine study ran without its final model (`--no-final`).", ""]
    lines += ["### Cost of each stage", "",
              "Seconds as each study measured them (`seconds` of its summary), and the wall time of each command.",
              "", *stage_costs(coarse, fine), ""]
    again = [kind for kind, out in (("coarse", coarse), ("fine", fine)) if resumed(out)]
    if again:
        lines += [f"The {' and the '.join(again)} study trained no trial in this run: "
                  f"{'they were' if len(again) > 1 else 'it was'} already finished in the storage and only "
                  "summarised again (the fine study's final model is trained anew on every run). To time a whole "
                  "search, run it on a new storage, e.g. `--study-args \"--storage sqlite:///studies/timing.db\"`.",
                  ""]
    return "\n".join(lines)


COMPARISON = ("Δ is the mean paired difference in validation accuracy (percentage points) with its 95% t interval; "
              "p the one-sided paired t-test (H1: the point is worse than the best), Holm-corrected over the "
              "study's comparisons; the verdict is worse when p < α = {:g}, else tied. ± is the sample standard "
              "deviation over the replicates, n their count.")


def study_markdown(name, out):
    """One study's heading, table, best point and (for a fine study that raced) how the race went."""
    rows = out.get("trials", [])
    race = out.get("kind", name.lower()) == "fine" and raced(rows)
    lines = [f"### {name} study `{out['study']}`", "", *trials_markdown(rows, race), ""]
    best = best_of(out)
    if best is not None:
        lines += [f"Best: trial {best['trial']}, {settings_text(best, schedule_keys(rows))}: validation "
                  f"accuracy {accuracy_cell(best)}.", ""]
    return lines + (race_markdown(rows) if race else [])


def _optional_pct(value):
    value = number(value)
    return "" if value is None else pct(value)


# ---------------------------------------------------------------- section search

def search_section(run):
    """The coarse study, then the fine study and final model, as ``python -m clrsearch.coarse`` and
    ``python -m clrsearch.fine`` run them with ``--study-args``; markdown.

    Both run in the working directory, so their runs land in the MLflow store
    there (``mlflow ui`` shows them) and their studies in its storage.
    """
    outputs, configs = {}, {}
    for kind in ("coarse", "fine"):
        argv = study_argv(kind, run.study_args)
        configs[kind] = study_config(kind, argv)
        outputs[kind] = run_study(kind, argv, run.data_dir)
    return search_markdown(outputs["coarse"], outputs["fine"], configs)


# ---------------------------------------------------------------- section augment

def augment_lam(config):
    """(lambda, where it comes from): the best lambda of the fine study ``config`` names, else the fallback."""
    from clrsearch.config import DEFAULT_STORAGE
    from clrsearch.errors import redact

    study = load_study(config)
    url = redact(config.study.storage or DEFAULT_STORAGE)
    if study is not None:
        from clrsearch.search.summary import best_row

        best = best_row(study_rows(study, config))
        if best is not None:
            return float(best["lam"]), f"the best λ of the fine study `{config.study.name}` in `{url}`"
    return SETTINGS.augment_lam, f"no finished fine study `{config.study.name}` in `{url}`: the fallback λ"


def augment_argv(lam, study_args):
    """The flags of the flip-effect study: ``study_args`` then the comparison's own (which win)."""
    return [*study_args, "--study-name", SETTINGS.augment_study, "--grid", f"lam={lam:g}",
            "--grid", f"n_s_epochs={SETTINGS.augment_n_s_epochs}", "--grid", "augment=none,flip",
            "--n-seeds", str(SETTINGS.augment_seeds), "--trials-per-population",
            str(SETTINGS.augment_trials_per_population), "--no-race", "--no-final"]


def augment_section(run):
    """Flip augmentation against none at the fine study's best lambda, paired replicate by replicate; markdown."""
    lam, source = augment_lam(study_config("fine", study_argv("fine", run.study_args)))
    log(f"augment: lambda {lam:g} ({source})")
    argv = augment_argv(lam, study_argv("fine", run.study_args))
    out = run_study("fine", argv, run.data_dir)
    return augment_markdown(out, lam, source, study_config("fine", argv).study.alpha)


def flip_effect(rows, alpha):
    """(flip − none, CI low, CI high, p, conclusion) from the two rows' comparisons with the best; None when
    a row is missing or untested."""
    by = {r.get("augment"): r for r in rows if r.get("state") == "COMPLETE"}
    if set(by) != {"none", "flip"}:
        return None
    flip_best = by["flip"].get("verdict") == "best"
    best, other = (by["flip"], by["none"]) if flip_best else (by["none"], by["flip"])
    delta, low, high = (number(other.get(k)) for k in ("delta_vs_best", "ci_low", "ci_high"))
    if delta is None or best.get("verdict") != "best":
        return None
    sign = -1 if flip_best else 1  # flip − none is −(none − flip) when flip is the best
    low, high = sorted((sign * low, sign * high)) if low is not None and high is not None else (None, None)
    winner, loser = ("flip", "none") if flip_best else ("none", "flip")
    if other.get("verdict") == "worse":
        conclusion = f"`{loser}` is worse than `{winner}` (p < α = {alpha:g})"
    else:
        conclusion = f"tied (p ≥ α = {alpha:g}): no difference these replicates can tell"
    return sign * delta, low, high, number(other.get("p_vs_best")), conclusion


def augment_markdown(out, lam, source, alpha=0.05):
    """The flip-effect study's two rows, the paired difference flip − none, and the command line."""
    rows = out.get("trials", [])
    header = ["augment", "val accuracy, mean ± std (n)", "Δ vs best, points [95% CI]", "p (Holm)", "verdict"]
    body = [[r.get("augment", ""), accuracy_cell(r), delta_cell(r), p_cell(r), verdict_cell(r)] for r in rows]
    lines = ["## Flip augmentation", "",
             f"Study `{out.get('study', SETTINGS.augment_study)}`: λ = {lam:g} ({source}), n_s_epochs "
             f"{SETTINGS.augment_n_s_epochs}, {SETTINGS.augment_seeds} paired replicates per setting (replicate r: "
             "the same initial weights and mini-batch order with and without flips), no race, no final model. "
             "`flip` mirrors each training image left–right with probability ½ per mini-batch.", "",
             *table(header, body), ""]
    effect = flip_effect(rows, alpha)
    if effect is not None:
        delta, low, high, p, text = effect
        interval = "" if low is None else f" [{100 * low:+.2f}, {100 * high:+.2f}]"
        p_text = "" if p is None else f", one-sided paired t-test p = {p:.3g}"
        lines += [f"Paired difference flip − none: **{100 * delta:+.2f} points**{interval} (95% interval){p_text}: "
                  f"{text}.", ""]
    wall = number(out.get("wall_seconds"))
    lines += ["```", out.get("command", ""), "```", ""]
    if wall is not None:
        lines += [f"Wall time {wall:.0f} s ({wall / 60:.1f} min).", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- section schedule

def schedule_section(run):
    """The fine study in the storage, its schedules compared (no training); markdown."""
    from clrsearch.config import DEFAULT_STORAGE
    from clrsearch.errors import redact

    config = study_config("fine", study_argv("fine", run.study_args))
    study = load_study(config)
    url = redact(config.study.storage or DEFAULT_STORAGE)
    if study is None:
        raise SystemExit(f"no fine study {config.study.name!r} in {url}: run the search section first")
    rows = study_rows(study, config)
    grid = study.user_attrs.get("grid")
    return schedule_markdown(rows, {"study": config.study.name, "storage": url, "grid": grid,
                                    "alpha": study.user_attrs.get("alpha", config.study.alpha)})


def schedule_markdown(rows, about):
    """Per schedule of the fine grid, its best point against the overall best, then every point's mean.

    ``about``: ``study`` (name), ``storage`` (URL, redacted), ``grid`` (the study's user attr, or None),
    ``alpha``.
    """
    keys = schedule_keys(rows)
    complete = [r for r in rows if r.get("state") == "COMPLETE" and number(r.get("mean_val_accuracy")) is not None]
    grid = "; ".join(f"{name} = {', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in values)}"
                     for name, values in about.get("grid") or [])
    lines = ["## Schedules of the fine grid", "",
             f"From the fine study `{about['study']}` in `{about['storage']}` as it stands (no new training): "
             f"{len(complete)} points" + (f" of the grid {grid}" if grid else "") + ", each compared with the "
             "overall best on their common replicates (paired t-test, one-sided, Holm-corrected over all the "
             f"study's comparisons, α = {about.get('alpha', 0.05):g}). This is the measurement behind the "
             "schedule range of the default grid.", ""]
    if not keys:
        return "\n".join(lines + ["The study's grid has no schedule dimension beside λ: nothing to compare.", ""])
    groups = {}
    for r in complete:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    body, bests = [], {}
    for key in sorted(groups):
        group = groups[key]
        best = max(group, key=lambda r: r["mean_val_accuracy"])
        bests[key] = best
        kept = sum(r.get("verdict") in ("best", "tied") for r in group)
        body.append([*key, f"{best['lam']:.4g}", accuracy_cell(best), delta_cell(best), p_cell(best),
                     verdict_cell(best), f"{kept} of {len(group)}"])
    lines += ["The best λ of each schedule:", "",
              *table([*keys, "best λ", "val accuracy, mean ± std (n)", "Δ vs the overall best, points [95% CI]",
                      "p (Holm)", "verdict", "points best or tied"], body), ""]
    lines += schedule_conclusion(bests, keys)
    lams = sorted({r["lam"] for r in complete})
    columns = sorted(groups)
    cells = {(r["lam"], tuple(r[k] for k in keys)): r for r in complete}

    def cell(lam, key):
        r = cells.get((lam, key))
        return "" if r is None else f"{100 * r['mean_val_accuracy']:.2f}% ({r.get('replicates', '?')}, {r['verdict']})"

    header = ["λ", *(", ".join(f"{k} {v}" for k, v in zip(keys, key)) for key in columns)]
    lines += ["Mean validation accuracy of every point (replicates, verdict against the overall best):", "",
              *table(header, [[f"{lam:.4g}", *(cell(lam, key) for key in columns)] for lam in lams]), ""]
    return "\n".join(lines)


def schedule_conclusion(bests, keys):
    """One sentence: which schedule holds the best point, and how the others' best points compare with it."""
    winner = next((key for key, r in bests.items() if r.get("verdict") == "best"), None)
    if winner is None:
        return []

    def name(key):
        return ", ".join(f"{k} {v}" for k, v in zip(keys, key))

    others = []
    for key, r in bests.items():
        if key == winner:
            continue
        p = number(r.get("p_vs_best"))
        others.append(f"the best of {name(key)} (λ = {r['lam']:.4g}) is {r.get('verdict') or r.get('state')}"
                      + ("" if p is None else f" (p = {p:.3g})"))
    text = f"The overall best point (λ = {bests[winner]['lam']:.4g}) has the schedule {name(winner)}"
    return [text + ("; " + "; ".join(others) if others else "") + ".", ""]


# ---------------------------------------------------------------- section pruning

def pruning_argv(name, pruner, study_args):
    """The flags of one study of the pruning section: ``study_args`` then its own (which win); the storage is
    relative to the folder the command runs in."""
    return [*study_args, "--n-trials", str(SETTINGS.pruning_trials), "--n-seeds", str(SETTINGS.pruning_seeds),
            "--pruner", pruner, "--study-name", name, "--storage", f"sqlite:///{name}.db"]


def pruning_section(run):
    """The coarse study without and with the pruner, each in its own storage in a temporary folder; markdown."""
    import tempfile

    import optuna

    study_args = study_argv("coarse", run.study_args)
    outs, argvs = {}, {}
    with tempfile.TemporaryDirectory(prefix="clrsearch-pruning-") as folder:
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db"}
        for name, pruner in (("unpruned", "none"), ("pruned", SETTINGS.pruning_pruner)):
            argvs[name] = pruning_argv(name, pruner, study_args)
            outs[name] = run_study("coarse", argvs[name], run.data_dir, cwd=folder, env=env)
        study = optuna.load_study(study_name="pruned", storage=f"sqlite:///{folder}/pruned.db")
        rungs = {t.user_attrs.get("point", t.number): dict(t.intermediate_values) for t in study.get_trials()
                 if t.state.name in ("COMPLETE", "PRUNED")}
    cycles = study_config("coarse", argvs["pruned"]).train.cycles
    return pruning_markdown(outs, rungs, cycles)


def replay_rule(rule, cycle_1):
    """The points ``rule`` prunes after cycle 1, each judged against the points before it (one schedule).

    cycle_1: point (its slot) -> its replicates' mean validation accuracy after cycle 1.
    """
    order = sorted(cycle_1)
    return {p for k, p in enumerate(order) if rule.prunes(cycle_1[p], [cycle_1[q] for q in order[:k + 1]])}


def replayed_rules():
    """(name, rule) of the rules replayed on the measured cycle-1 accuracies."""
    from dataclasses import replace

    from clrsearch.search.pruning import RULES

    median, halving = RULES["median"], RULES["hyperband"]
    return [("median, no margin (the plain median rule)", replace(median, margin=0.0)),
            ("median, margin 1 point: `--pruner median`", median),
            ("median, margin 2 points", replace(median, margin=0.02)),
            ("successive halving, η = 3: `--pruner hyperband`", halving),
            ("successive halving, η = 3, margin 1 point", replace(halving, margin=0.01))]


def pruning_markdown(outs, rungs, cycles):
    """The pruning section from the two studies' JSON summaries, the pruned study's rung values (point ->
    step -> accuracy) and the cycles of a trial."""
    pruned_rows = {r["point"]: r for r in outs["pruned"]["trials"]}
    plain_rows = {r["point"]: r for r in outs["unpruned"]["trials"]}
    cycle_1 = {p: values[1] for p, values in rungs.items() if 1 in values}
    final = {p: r["mean_val_accuracy"] for p, r in plain_rows.items() if number(r.get("mean_val_accuracy"))}
    pruned = sorted((p for p, r in pruned_rows.items() if r.get("state") == "PRUNED"), key=lambda p: cycle_1[p])
    best_pruned, best_plain = best_of(outs["pruned"]), best_of(outs["unpruned"])
    top = max(cycle_1.values())
    kept_gap = max(top - v for p, v in cycle_1.items() if p not in pruned)
    pruned_gap = min((top - cycle_1[p] for p in pruned), default=None)
    seconds = {name: number(out.get("seconds", {}).get("training")) for name, out in outs.items()}
    saved = 1 - seconds["pruned"] / seconds["unpruned"] if all(seconds.values()) else None
    # a trial pruned at rung c trains c of its cycles
    steps_saved = sum((cycles - max(rungs[p])) / cycles for p in pruned) / len(rungs)
    same_best = best_pruned is not None and best_plain is not None and best_pruned["point"] == best_plain["point"]

    def best_text(best):
        return "none" if best is None else (f"trial {best['trial']}, λ = {best['lam']:.4g}, "
                                            f"{pct(best['mean_val_accuracy'])}")

    lines = ["## Pruning", "",
             f"The coarse study of {SETTINGS.pruning_trials} λ and {SETTINGS.pruning_seeds} paired replicates, run "
             f"without a pruner and with `--pruner {SETTINGS.pruning_pruner}`, each in its own study and storage "
             "(the same λ draws, in a temporary folder, its MLflow store there too):", "",
             "```", outs["unpruned"].get("command", ""), outs["pruned"].get("command", ""), "```", "",
             f"At the end of each cycle but the last (cycle 1 of {cycles} here) a trial's value is its "
             "replicates' mean validation accuracy; it is compared with the trials before it in the study's order "
             f"that reached that cycle, pruned or not: {rule_text(SETTINGS.pruning_pruner)} "
             "(`clrsearch/search/pruning.py`).", "",
             "### Done when", "",
             *table(["check", "measured", "met"], [
                 ["prunes the trials whose cycle-1 accuracy is far below the best",
                  f"{len(pruned)} pruned, each {100 * pruned_gap:.2f} points or more below the best cycle-1 "
                  f"accuracy ({pct(top)}); every trial kept is within {100 * kept_gap:.2f} points of it"
                  if pruned else "none pruned", yes_no(bool(pruned) and pruned_gap > kept_gap)],
                 ["saves a measured share of the study's training time",
                  "" if saved is None else f"training {seconds['pruned']:.1f} s against {seconds['unpruned']:.1f} s "
                  f"without pruning: **{100 * saved:.0f}% saved** ({100 * steps_saved:.0f}% of the update steps)",
                  yes_no(saved is not None and saved > 0)],
                 ["its best trial is the same as without pruning",
                  f"with: {best_text(best_pruned)}; without: {best_text(best_plain)}", yes_no(same_best)]]), ""]

    body = []
    for p in sorted(rungs, key=lambda p: pruned_rows[p]["lam"]):
        mine, plain = pruned_rows[p], plain_rows.get(p, {})
        state = "**PRUNED**" if mine["state"] == "PRUNED" else mine["state"]
        body.append([mine["trial"], f"{mine['lam']:.3g}", pct(cycle_1[p]), state,
                     _optional_pct(mine.get("mean_val_accuracy")), _optional_pct(plain.get("mean_val_accuracy")),
                     plain.get("verdict", "")])
    lines += ["### Every trial", "",
              f"Sorted by λ; validation accuracies are means over the {SETTINGS.pruning_seeds} replicates. The "
              "verdict is the unpruned study's paired test against its best.", "",
              *table(["trial", "λ", "after cycle 1", "with pruning", "final, with pruning", "final, without",
                      "verdict without"], body), ""]

    wall = {name: number(out.get("wall_seconds")) for name, out in outs.items()}
    stages = ["training", "evaluation", "tracking", "total"]
    lines += ["### Time", "",
              *table(["", *stages, "wall"],
                     [[name, *(_seconds(outs[name].get("seconds", {}).get(k)) for k in stages), _seconds(wall[name])]
                      for name in ("unpruned", "pruned")]), "",
              "Seconds on a shared 2-core machine; `training` is the update steps alone.", ""]

    body = []
    best = max(final, key=final.get) if final else None
    for name, rule in replayed_rules():
        chosen = replay_rule(rule, cycle_1)
        kept = [p for p in final if p not in chosen]
        kept_best = max(kept, key=final.get) if kept else None
        smallest = min((pruned_rows[p]["lam"] for p in chosen), default=None)
        body.append([name, len(chosen), "" if smallest is None else f"{smallest:.3g}",
                     "yes" if kept_best == best else f"**no**: trial {pruned_rows[best]['trial']} pruned",
                     f"{100 * (cycles - 1) / cycles * len(chosen) / len(cycle_1):.0f}%"])
    lines += ["### Why this rule", "",
              "Each rule replayed on the cycle-1 accuracies above (slot order, from the fifth trial on), against "
              "the unpruned study's final accuracies:", "",
              *table(["rule", "trials pruned", "smallest λ pruned", "best trial kept", "update steps saved"], body),
              "", *replay_conclusion(body), ""]
    return "\n".join(lines)


def rule_text(pruner):
    """What the rule of ``--pruner`` NAME does, in one clause."""
    from clrsearch.search.pruning import rule_of

    rule = rule_of(pruner)
    if rule is None:
        return "no rule"
    where = "their median" if rule.kind == "median" else f"the best 1/{rule.eta} of them"
    points = 100 * rule.margin
    margin = f"more than {points:g} point{'' if points == 1 else 's'} below " if rule.margin else "below "
    return (f"`--pruner {pruner}` prunes it when it is {margin}{where} (its own value included), once "
            f"{rule.warmup} values are there")


def replay_conclusion(rows):
    """A sentence from the replayed rules' rows: what the plain median rule and the chosen rule prune."""
    plain, chosen = rows[0], rows[1]
    text = f"Without a margin the median rule prunes {plain[1]} trials, the smallest λ = {plain[2]}"
    if plain[3] != "yes":
        text += (", and the best trial among them: the good λ lie close together after cycle 1, in another order "
                 "than at the end")
    if chosen[1]:
        text += (f". With the margin of 1 point it prunes {chosen[1]}, none below λ = {chosen[2]}, and "
                 + ("keeps the best." if chosen[3] == "yes" else "loses the best."))
    return [text]


def _seconds(value):
    value = number(value)
    return "" if value is None else f"{value:.1f} s"


# Section name -> function(SectionInput) returning the section's markdown; the
# file keeps the sections in the order they were first written.
SECTIONS = {"core": core_section, "search": search_section, "augment": augment_section,
            "schedule": schedule_section, "pruning": pruning_section}


# ---------------------------------------------------------------- the file

def begin_marker(name):
    return f"<!-- section: {name} -->"


def end_marker(name):
    return f"<!-- end: {name} -->"


def merge_sections(text, sections):
    """``text`` with each section of ``sections`` (name -> markdown) put in place.

    A section already in ``text`` (between its markers) is replaced; a new one
    is appended. Everything else in ``text`` is kept as it is.
    """
    if not text.strip():
        text = f"{TITLE}\n\n{INTRO}\n"
    for name, body in sections.items():
        block = f"{begin_marker(name)}\n{body.rstrip()}\n{end_marker(name)}"
        pattern = re.compile(re.escape(begin_marker(name)) + r".*?" + re.escape(end_marker(name)), re.DOTALL)
        if pattern.search(text):
            text = pattern.sub(lambda _: block, text, count=1)
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
    return text


def write_sections(path, sections):
    """Merge ``sections`` into the file at ``path`` (created if missing)."""
    path = Path(path)
    old = path.read_text() if path.is_file() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(merge_sections(old, sections))
    return path


def _parser():
    parser = ArgumentParser(prog="python tools/results.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir",
                        help="folder cifar-10-batches-py or its parent (default $CLRSEARCH_DATA or the cache)")
    parser.add_argument("--section", action="append", choices=sorted(SECTIONS),
                        help="section to run; repeat for several (default all)")
    parser.add_argument("--out", default=SETTINGS.out, help=f"markdown file to update (default {SETTINGS.out})")
    parser.add_argument("--study-args", default="", metavar="FLAGS",
                        help="flags added to every study command of the search and augment sections (and read "
                             "by augment and schedule to find the fine study), as one string; for quick checks, "
                             "e.g. --study-args '--n-s 20 --n-batch 20 --hidden 8 --val-size 200 "
                             "--eval-train-size 100 --final-val-size 200'. A flag only one of the two commands "
                             "takes goes to that one alone. The page then no longer shows the default studies")
    return parser


@entry_point
def main(argv=None):
    args = _parser().parse_args(argv)
    names = args.section or list(SECTIONS)
    run = SectionInput(args.data_dir, tuple(shlex.split(args.study_args)))
    if run.study_args:  # flags a command refuses end here, before any section runs
        for kind in ("coarse", "fine"):
            study_config(kind, study_argv(kind, run.study_args))
    for name in dict.fromkeys(names):
        log(f"section {name}")
        start = time.perf_counter()
        path = write_sections(args.out, {name: SECTIONS[name](run)})  # a later section that fails keeps this one
        log(f"section {name} done in {time.perf_counter() - start:.0f} s; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
