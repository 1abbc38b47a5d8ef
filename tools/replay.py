"""Replay the fine study's race on a fully trained table: how often each rule picks a point within δ of the best.

    python tools/replay.py train --data-dir DIR [--out docs/data/fine_table.csv] [-- FINE FLAGS ...]
    python tools/replay.py replay [--table docs/data/fine_table.csv] [--out docs/data/replay.md] [--replays 2000]

``train`` trains the full table once: the fine study with the race off, every
point of the grid at the replicate budget (``--max-seeds``, 12) as paired
replicates, no final model, in the study ``--study-name`` (default
``fine-table``); it writes one CSV row per point and replicate: ``point``,
``params`` (JSON), ``replicate``, ``val_accuracy`` (fraction) and
``update_steps`` (of that network).

``replay`` reads the table and replays the race ``--replays`` times: each
replay draws the budget's replicates with replacement from the table's blocks
(a block: replicate r of every point), in random order, and runs on them

- ``kn``: the study's race (KN screening, MCB stop; :func:`race.next_step`),
- ``holm``: the Holm-corrected race of earlier versions (``--race-rule holm``),
- ``fixed``: every point at the budget, the largest mean wins.

Per rule it reports PCS, the fraction of replays whose chosen point's table
mean is within δ of the table's best mean; the coverage of the table's best
by the best set (MCB over all points, as the study's summary computes it);
the selection optimism (winner's mean in the replay − its table mean); and the
compute used as a fraction of the exhaustive study (every point × the budget,
in update steps). The decisions are those of the study's own functions
(:mod:`clrsearch.search.decision`, :func:`clrsearch.search.race.next_step`).
"""

import argparse
import csv
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clrsearch.config import StudyConfig  # noqa: E402
from clrsearch.search import decision, race  # noqa: E402
from clrsearch.search.compare import best_key  # noqa: E402

COLUMNS = ("point", "params", "replicate", "val_accuracy", "update_steps")
RULES = ("kn", "holm", "fixed")


@dataclass(frozen=True)
class Table:
    """A fully trained table: every point at every block."""

    params: dict  # point -> its settings
    accuracies: dict  # point -> dict replicate -> accuracy (fraction)
    steps: dict  # point -> update steps of one network

    @property
    def blocks(self):
        """The replicate ids every point has, sorted."""
        return sorted(set.intersection(*(set(a) for a in self.accuracies.values())))

    @property
    def means(self):
        return {p: float(np.mean([a[r] for r in self.blocks])) for p, a in self.accuracies.items()}


def write_table(path, rows):
    """Write rows (dicts with COLUMNS) as CSV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "params": json.dumps(row["params"], sort_keys=True)})


def read_table(path):
    """The Table of a CSV written by :func:`write_table`."""
    params, accuracies, steps = {}, {}, {}
    with Path(path).open(newline="") as f:
        for row in csv.DictReader(f):
            point = int(row["point"])
            params[point] = json.loads(row["params"])
            accuracies.setdefault(point, {})[int(row["replicate"])] = float(row["val_accuracy"])
            steps[point] = int(row["update_steps"])
    if not accuracies:
        raise SystemExit(f"{path} holds no rows: train the table first (python tools/replay.py train)")
    return Table(params, accuracies, steps)


def table_rows(study, steps_of):
    """CSV rows of a fixed-protocol study: its latest completed trial per point; ``steps_of(params)`` gives the
    update steps of one network of a point."""
    from optuna.trial import TrialState

    from clrsearch.search.study import latest_trials, replicate_accuracies

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    rows = []
    for point, t in sorted(latest_trials(complete).items()):
        for replicate, accuracy in sorted(replicate_accuracies(t).items()):
            rows.append({"point": point, "params": t.params, "replicate": replicate, "val_accuracy": accuracy,
                         "update_steps": steps_of(t.params)})
    return rows


@dataclass(frozen=True)
class Outcome:
    """One rule on one replay."""

    winner: object
    covered: bool | None  # the table's best in the best set (None: not reported for the rule)
    race_mean: float  # the winner's mean over the replicates it had in the replay
    updates: int  # update steps trained


def run_rule(rule, data, steps, study_cfg: StudyConfig, best):
    """Run ``rule`` on ``data`` (point -> replicate 0 .. budget-1 -> accuracy); ``best`` is the table's best point."""
    budget = study_cfg.max_seeds
    if rule == "fixed":
        counts = {p: budget for p in data}
        survivors = tuple(sorted(data))
    else:
        cfg = replace(study_cfg, race_rule=rule)
        have = min(cfg.n_seeds, budget)
        counts = {p: have for p in data}
        in_race = set(data)
        while True:
            seen = {p: {r: a for r, a in data[p].items() if r < counts[p]} for p in data}
            step = race.next_step(seen, in_race, have, cfg)
            if step.end:
                survivors = step.going_on
                break
            in_race = set(step.going_on)
            have = min(have + cfg.race_seeds, budget)
            counts.update({p: have for p in in_race})
    seen = {p: {r: a for r, a in data[p].items() if r < counts[p]} for p in data}
    winner = best_key({p: seen[p] for p in survivors} or seen)
    covered = best in decision.best_set(decision.mcb(seen, study_cfg.alpha)) if rule == "kn" else None
    return Outcome(winner, covered, float(np.mean(list(seen[winner].values()))),
                   sum(counts[p] * steps[p] for p in data))


def replay(table: Table, study_cfg: StudyConfig, replays=2000, seed=0):
    """Per rule: PCS, best-set coverage, mean optimism and mean compute fraction over ``replays`` replays.

    Returns
    -------
    dict rule -> dict with "pcs", "coverage" (None unless kn), "optimism" (fraction), "compute" (fraction)
    """
    rng = np.random.default_rng(seed)
    blocks, means = table.blocks, table.means
    top = max(means.values())
    best = best_key({p: {r: table.accuracies[p][r] for r in blocks} for p in table.accuracies})
    exhaustive = sum(study_cfg.max_seeds * s for s in table.steps.values())
    tallies = {rule: [] for rule in RULES}
    for _ in range(replays):
        drawn = rng.choice(blocks, size=study_cfg.max_seeds, replace=True)  # (budget,) table blocks, in order
        data = {p: {j: a[b] for j, b in enumerate(drawn)} for p, a in table.accuracies.items()}
        for rule in RULES:
            tallies[rule].append(run_rule(rule, data, table.steps, study_cfg, best))
    report = {}
    for rule, outcomes in tallies.items():
        covered = [o.covered for o in outcomes if o.covered is not None]
        report[rule] = {
            "pcs": float(np.mean([means[o.winner] >= top - study_cfg.delta for o in outcomes])),
            "coverage": float(np.mean(covered)) if covered else None,
            "optimism": float(np.mean([o.race_mean - means[o.winner] for o in outcomes])),
            "compute": float(np.mean([o.updates / exhaustive for o in outcomes])),
        }
    return report


def markdown(report, table: Table, study_cfg: StudyConfig, replays, seed):
    """The replay as a Markdown section for docs/RESULTS.md."""
    names = {"kn": "KN screening + MCB stop (`--race-rule kn`)", "holm": "Holm-corrected race (`--race-rule holm`)",
             "fixed": f"fixed: every point at {study_cfg.max_seeds} replicates, largest mean"}
    means = table.means
    lines = ["## Replaying the race", "",
             f"`python tools/replay.py replay --replays {replays} --seed {seed}` on a table of {len(means)} points × "
             f"{len(table.blocks)} paired replicates: each replay draws {study_cfg.max_seeds} blocks with "
             f"replacement, in random order; δ = {100 * study_cfg.delta:g} points, α = {study_cfg.alpha:g}, "
             f"rounds of {study_cfg.race_seeds} after {study_cfg.n_seeds}. The table's best mean is "
             f"{100 * max(means.values()):.2f}%; PCS: the chosen point's table mean within δ of it.", "",
             "| rule | PCS | best set covers the table's best | selection optimism (points) | compute "
             "(fraction of exhaustive) |", "|---|---:|---:|---:|---:|"]
    for rule in RULES:
        r = report[rule]
        coverage = "" if r["coverage"] is None else f"{r['coverage']:.3f}"
        lines.append(f"| {names[rule]} | {r['pcs']:.3f} | {coverage} | {100 * r['optimism']:+.3f} | "
                     f"{r['compute']:.3f} |")
    return "\n".join(lines) + "\n"


def train_table(args, extra):
    """Train the full table with the fine study (race off, budget replicates, no final model) and write the CSV."""
    import optuna

    from clrsearch import fine
    from clrsearch.cli.settings import load_search_config, search_parser
    from clrsearch.data import load_splits
    from clrsearch.search import queue
    from clrsearch.search.study import point_train_config

    flags = [*extra, "--no-race", "--no-final", "--n-seeds", str(args.max_seeds), "--study-name", args.study_name]
    if args.data_dir:
        flags += ["--data-dir", args.data_dir]
    status = fine.main(flags)
    if status:
        return status
    config = load_search_config("fine", search_parser("fine", "").parse_args(flags))
    n_train = load_splits(config.data).train.n
    study = optuna.load_study(study_name=args.study_name, storage=queue.storage_url(config.study.storage))
    rows = table_rows(study, lambda params: point_train_config(config.train, params, n_train).total_steps)
    write_table(args.out, rows)
    print(f"{len(rows)} rows written to {args.out}", file=sys.stderr)
    return 0


def parse(argv):
    parser = argparse.ArgumentParser(prog="python tools/replay.py", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_subparsers(dest="mode", required=True)
    train = modes.add_parser("train", help="train the full table once (the fine study, race off)")
    train.add_argument("--data-dir", help="folder of cifar-10-batches-py")
    train.add_argument("--out", default="docs/data/fine_table.csv", help="CSV to write")
    train.add_argument("--max-seeds", type=int, default=12, help="replicates per point: the race's budget")
    train.add_argument("--study-name", default="fine-table", help="Optuna study of the table")
    play = modes.add_parser("replay", help="replay the race on the table")
    play.add_argument("--table", default="docs/data/fine_table.csv", help="CSV written by train")
    play.add_argument("--out", default="docs/data/replay.md", help="Markdown section to write")
    play.add_argument("--replays", type=int, default=2000)
    play.add_argument("--seed", type=int, default=0, help="numpy seed of the block draws")
    play.add_argument("--delta", type=float, default=0.3, help="indifference zone, accuracy points")
    play.add_argument("--alpha", type=float, default=0.05)
    play.add_argument("--n-seeds", type=int, default=3, help="replicates of the first round (KN's n0)")
    play.add_argument("--race-seeds", type=int, default=3, help="replicates added per round")
    play.add_argument("--max-seeds", type=int, default=12, help="the replicate budget")
    parser.epilog = train.format_help() + "\n" + play.format_help()
    return parser.parse_known_args(argv)


def main(argv=None):
    args, extra = parse(argv)
    if args.mode == "train":
        return train_table(args, [a for a in extra if a != "--"])
    if extra:
        raise SystemExit(f"unknown arguments: {' '.join(extra)}")
    table = read_table(args.table)
    study_cfg = StudyConfig(kind="fine", name="replay", sampler="grid", grid=(0.0,), alpha=args.alpha,
                            delta=args.delta / 100, n_seeds=args.n_seeds, race_seeds=args.race_seeds,
                            max_seeds=args.max_seeds)
    report = replay(table, study_cfg, args.replays, args.seed)
    text = markdown(report, table, study_cfg, args.replays, args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
