"""Reproduce the figures of the study on the real data and write them to docs/RESULTS.md.

    python tools/results.py --data-dir DIR [--section core] [--out docs/RESULTS.md]

Each section is a function returning markdown, registered in ``SECTIONS``.
In the output file a section sits between ``<!-- section: NAME -->`` and
``<!-- end: NAME -->``; a run rewrites only the sections it ran and keeps the
others as they are, so sections can be produced by separate runs (and added
by other modules). Progress goes to stderr.

Section ``search``: the default ``python -m clrsearch.coarse`` then
``python -m clrsearch.fine`` in the working directory, their tables, the final
model's validation and test accuracy and the time split.

Section ``core``:

- the gradient check of SPEC, both scenarios (``python -m clrsearch.gradcheck``);
- ``sanity``: the training accuracy reached and the first epoch at 100%;
- ``fig3`` and ``fig4``: test accuracy for seeds 0, 1, 2, each run being
  ``python -m clrsearch.train --preset fig3 --seed S``, and their mean ± std;
- a "Done when" table against the targets and the original report.

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
    final_target: float = 51.0  # %, test accuracy of the final model (original report 51.14%, validation 52.5%)

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

def core_section(data_dir):
    """Gradient check, sanity run, fig3 and fig4 over three seeds; markdown."""
    folder = ensure_data(data_dir, download=False)
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


# ---------------------------------------------------------------- section search

def search_section(data_dir):
    """The default coarse study, then the default fine study and final model; markdown.

    Both run as the commands a user types, in the working directory, so their
    runs land in the MLflow store there (``mlflow ui`` shows them).
    """
    import json
    import os
    import subprocess

    env = dict(os.environ)
    if data_dir:
        env["CLRSEARCH_DATA"] = str(data_dir)
    outputs = {}
    for kind in ("coarse", "fine"):
        command = [sys.executable, "-m", f"clrsearch.{kind}", "--json"]
        log(f"{kind} study: {' '.join(command[1:])}")
        started = time.perf_counter()
        done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise SystemExit(f"python -m clrsearch.{kind} failed with status {done.returncode}")
        outputs[kind] = json.loads(done.stdout.strip().splitlines()[-1])
        outputs[kind]["wall_seconds"] = time.perf_counter() - started
    return search_markdown(outputs["coarse"], outputs["fine"])


def _optional_pct(value):
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else pct(value)


def search_markdown(coarse, fine):
    final = fine["final"]
    lines = ["## Lambda search and the final model", "",
             "On the offline CIFAR-10 copy, in the project root (so `mlflow ui` there shows these runs):", "",
             "```", "python -m clrsearch.coarse", "python -m clrsearch.fine", "python -m clrsearch.evaluate", "```",
             ""]
    for name, out in (("Coarse", coarse), ("Fine", fine)):
        lines += [f"### {name} study `{out['study']}`", "",
                  "| trial | λ | mean val accuracy | std | per seed | state |", "|---|---|---|---|---|---|"]
        for row in out["trials"]:
            mean, std = (_optional_pct(row[key]) for key in ("mean_val_accuracy", "std_val_accuracy"))
            lines.append(f"| {row['trial']} | {row['lam']:.4g} | {mean} | {std} | {row['val_accuracies']} | "
                         f"{row['state']} |")
        best = out["best"]
        seconds = out["seconds"]
        lines += ["", f"Best: λ = {best['lam']:.4g}, validation accuracy {pct(best['mean_val_accuracy'])} "
                      f"± {pct(best['std_val_accuracy'])}.",
                  "", "Wall time " + f"{out['wall_seconds']:.0f} s (" +
                  ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()) + ").", ""]
    ok = 100 * final["test_accuracy"] >= SETTINGS.final_target
    lines += ["### Final model", "",
              f"λ = {final['lam']:.4g}, 3 cycles of 2 × 900 steps, registered as "
              f"`models:/clrsearch-cifar10/{final['model_version']}` (alias `champion`).", "",
              "| | ours | original report |", "|---|---|---|",
              f"| validation accuracy | {pct(final['val_accuracy'])} | 52.5% |",
              f"| test accuracy | {pct(final['test_accuracy'])} | 51.14% |",
              f"| test accuracy, snapshot ensemble of the cycle ends | {pct(final['ensemble_test_accuracy'])} | — |",
              f"| training accuracy | {pct(final['train_accuracy'])} | — |", "",
              f"Done when: final test accuracy ≥ {SETTINGS.final_target:g}%: {yes_no(ok)}.", ""]
    return "\n".join(lines)


# Section name -> function(data_dir) returning the section's markdown; the
# file keeps the sections in the order they were first written.
SECTIONS = {"core": core_section, "search": search_section}


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
    return parser


@entry_point
def main(argv=None):
    args = _parser().parse_args(argv)
    names = args.section or list(SECTIONS)
    rendered = {}
    for name in dict.fromkeys(names):
        log(f"section {name}")
        start = time.perf_counter()
        rendered[name] = SECTIONS[name](args.data_dir)
        log(f"section {name} done in {time.perf_counter() - start:.0f} s")
    path = write_sections(args.out, rendered)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
