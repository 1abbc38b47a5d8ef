"""The sections of the report, each built from what :class:`.read.Tracked` finds, beside the original report's
numbers (SPEC), and what is missing with the command that makes it.

The original report: the class distribution (its figure 1), the gradient check, the sanity, fig3 and fig4
runs (learning curves, test confusion matrix), the eta schedule, the coarse and fine lambda searches (± 3σ),
the best parametrisation. What clrsearch adds: the race, the best set and P(best), the champion, and its
comparison with the previous champion.
"""
from __future__ import annotations

import csv
import io
import math

import numpy as np

from .. import plots
from ..nn.gradcheck import share
from ..search.race import RACE_ROUNDS
from ..search.study import RACE_LEFT
from ..tracking.single import CLASS_COUNTS_JSON, GRADCHECK_JSON
from .page import Section, figure_png, paragraph, picture, table

# The original report's figures (SPEC, "Experiments and the figures they produced"); accuracies as fractions.
ORIGINAL_TEST_ACCURACY = {"fig3": 0.4601, "fig4": 0.4729, "best": 0.5114}
ASSIGNMENT_TEST_ACCURACY = {"fig3": 0.4585, "fig4": 0.4747}
ORIGINAL_BEST_VAL_ACCURACY = 0.525
ORIGINAL_SANITY = "100% training accuracy by epoch ~13, cost ~0"
ORIGINAL_COARSE_LAMBDAS = "10 λ = 10^U(−5, −1), several seeds each"
ORIGINAL_COARSE_FINDING = "lower λ better"
ORIGINAL_FINE_LAMBDAS = "grid 0, 0.001, …, 0.007"
ORIGINAL_FINE_BEST_LAM = 0.001
ORIGINAL_GRADCHECK = {"1": "first 20 dimensions of 1 image, λ = 0: all absolute errors < 1e-6, the largest ~1e-8",
                      "2": "3072 dimensions of 5 images, λ > 0: all absolute errors < 1e-6, the largest ~1e-7"}
ORIGINAL_SCHEDULE = {"eta_min": 1e-5, "eta_max": 1e-1, "fig3": (500, 1), "fig4": (800, 3)}  # (n_s, cycles)

# What the fine study and the registry record beyond the race, under these names; a section shows what it
# finds and says "missing" otherwise.
BEST_SET_ATTR = "best_set"  # fine study user attr (or study-run tag): the points the best cannot be told from
P_BEST_ATTR = "p_best"  # fine study user attr: trial -> probability of being the best
P_BEST_METRIC_PREFIX = "p_best_"  # or fine study-run metrics p_best_<trial>
PREVIOUS_CHAMPION_TAG = "previous_champion"  # champion version tag: the version it was compared with
MCNEMAR_P_TAG = "mcnemar_p"  # champion version tag: McNemar's p-value against the previous champion
MCNEMAR_WORD = "mcnemar"  # every champion version tag whose name holds it is shown in the comparison

PRESET_TITLES = {"sanity": "sanity: overfit 100 training images", "fig3": "fig3: 1 cycle, n_s = 500",
                 "fig4": "fig4: 3 cycles, n_s = 800"}
TRIAL_COLUMNS = ("trial", "point", "state", "mean_val_accuracy", "std_val_accuracy", "replicates", "val_accuracies",
                 "delta_vs_best", "ci_low", "ci_high", "p_vs_best", "verdict", "rounds", "left_race", "reason")


def train_command(preset: str) -> str:
    return f"python -m clrsearch.train --preset {preset}"


def study_command(kind: str) -> str:
    return f"python -m clrsearch.{kind}"


def pct(value) -> str:
    """A fraction as a percentage with two decimals; "—" for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{100 * float(value):.2f} %"


def mean_std(values) -> str:
    """Fractions as mean ± sample std (n), in percent."""
    values = np.asarray(values, dtype=float)
    std = values.std(ddof=1) if values.size > 1 else 0.0
    return f"{100 * values.mean():.2f} ± {100 * std:.2f} % ({values.size})"


def short(run) -> str:
    return run.info.run_id[:8]


def pictures(section: Section, tracked, run, names: dict, command: str) -> None:
    """Embed the run's PNG artifacts ``names`` (file -> caption), saying which are missing."""
    for name, caption in names.items():
        png = tracked.artifact(run, name)
        if png is None:
            section.lack(f"{name} of run {short(run)}", command)
        else:
            section.add(picture(png, f"{caption} (run {short(run)}, {name})"))


# ----------------------------------------------------------------------------- the original report


def class_distribution(tracked) -> Section:
    """Figure 1: the classes of the training, validation and test sets, from a train run."""
    section = Section("class-distribution", "Class distribution per batch (figure 1)")
    run = next((runs[0] for runs in map(tracked.train_runs, ("fig3", "fig4", "sanity", "best")) if runs), None)
    if run is None:
        section.lack("no run of python -m clrsearch.train", train_command("fig3"))
        return section
    counts = tracked.artifact_json(run, CLASS_COUNTS_JSON)
    section.add(paragraph(f"Split {run.data.params.get('data.split', '?')} of run {short(run)} "
                          f"(preset {run.data.tags.get('preset')}); the original report's figure 1 shows the same "
                          f"counts of its batches."))
    if counts is None:
        section.lack(f"{CLASS_COUNTS_JSON} of run {short(run)}", train_command("fig3"))
    else:
        splits = [name for name in counts if name != "class_names"]
        rows = [[name, *(counts[split][k] for split in splits)] for k, name in enumerate(counts["class_names"])]
        rows.append(["all", *(sum(counts[split]) for split in splits)])
        section.add(table(["class", *splits], rows))
    pictures(section, tracked, run, {"class_distribution.png": "images per class"}, train_command("fig3"))
    return section


def gradient_check(tracked) -> Section:
    """The two scenarios of the gradient check, beside the original report's largest errors."""
    section = Section("gradient-check", "Gradient check")
    run = tracked.gradcheck_run()
    result = None if run is None else tracked.artifact_json(run, GRADCHECK_JSON)
    if result is None:
        section.lack("no gradient-check run", "python -m clrsearch.gradcheck")
        return section
    section.add(paragraph(f"Run {short(run)}: analytic against centred-difference gradients (float64), initial "
                          f"weights from seed {result['seed']}; every absolute error below 1e-6: "
                          f"{'yes' if result['passed'] else 'no'}."))
    for scenario, r in result["scenarios"].items():
        section.add(paragraph(f"Scenario {scenario}: D = {r['dims']}, N = {r['images']}, M = {r['hidden']}, "
                              f"λ = {r['lam']:g}, h = {r['h']:g}, {r['seconds']:.2f} s. Original report: "
                              f"{ORIGINAL_GRADCHECK.get(scenario, '—')}."))
        rows = [[name, share(row["pct_abs_below"]), f"{row['max_abs']:.2e}", share(row["pct_rel_below"]),
                 f"{row['max_rel']:.2e}"] for name, row in r["table"].items()]
        section.add(table(["param", "abs < 1e-6", "max abs error", "rel < 1e-6", "max rel error"], rows))
    return section


def experiment(tracked, preset: str) -> Section:
    """The runs of one SPEC experiment: accuracies beside the original's, the latest run's curves and test
    confusion matrix."""
    section = Section(preset, PRESET_TITLES[preset])
    runs = tracked.train_runs(preset)
    if not runs:
        section.lack(f"no run of the {preset} experiment", train_command(preset))
        return section
    rows = []
    for run in runs:
        m, p = run.data.metrics, run.data.params
        rows.append([short(run), p.get("seed", "?"), p.get("lam", "?"), f"{p.get('train.cycles', '?')} of 2 × "
                     f"{p.get('train.n_s', '?')}", pct(m.get("train_accuracy")), pct(m.get("val_accuracy")),
                     pct(m.get("test_accuracy")), ""])
    if len(runs) > 1:
        rows.append(["all runs", "", "", "", mean_std([r.data.metrics["train_accuracy"] for r in runs]),
                     mean_std([r.data.metrics["val_accuracy"] for r in runs]),
                     mean_std([r.data.metrics["test_accuracy"] for r in runs]), ""])
    original = ORIGINAL_SANITY if preset == "sanity" else (f"{pct(ORIGINAL_TEST_ACCURACY[preset])} (assignment "
                                                        f"{pct(ASSIGNMENT_TEST_ACCURACY[preset])})")
    rows.append(["original report", "", "", "", "", "", "", original])
    section.add(table(["run", "seed", "λ", "cycles of 2 × n_s steps", "training accuracy", "validation accuracy",
                       "test accuracy", "original report (test)"], rows, original_column=7))
    if preset == "sanity":
        section.add(sanity_table(tracked, runs[0]))
    pictures(section, tracked, runs[0], {"learning_curves.png": "cost, loss and accuracy by update step",
                                         "confusion_test.png": "test confusion matrix"}, train_command(preset))
    return section


def sanity_table(tracked, run) -> str:
    """When the sanity run first reached 100% training accuracy, and its final cost, beside the original's."""
    accuracy = tracked.metric_history(run, "train_accuracy")
    epochs = dict(tracked.metric_history(run, "epoch"))
    first = next((epochs.get(step) for step, value in accuracy if value >= 1.0), None)
    cost = tracked.metric_history(run, "train_cost")
    ours = (f"{pct(accuracy[-1][1] if accuracy else None)} training accuracy, first at epoch "
            f"{'—' if first is None else f'{first:g}'}; final training cost {cost[-1][1]:.2e}" if cost else "—")
    return table(["run", "ours", "original report"], [[short(run), ours, ORIGINAL_SANITY]], original_column=2)


def eta_schedule(tracked) -> Section:
    """The learning rate per update step of the fig4 run (else fig3), beside the original's schedule."""
    section = Section("eta", "Cyclical learning rate η")
    preset, runs = next(((p, r) for p, r in ((p, tracked.train_runs(p)) for p in ("fig4", "fig3")) if r),
                        ("fig4", []))
    if not runs:
        section.lack("no run of the fig4 or fig3 experiment", train_command("fig4"))
        return section
    p = runs[0].data.params
    n_s, cycles = ORIGINAL_SCHEDULE[preset]
    section.add(table(["", "η_min", "η_max", "n_s", "cycles"],
                      [[f"{preset}, run {short(runs[0])}", p.get("train.eta_min"), p.get("train.eta_max"),
                        p.get("train.n_s"), p.get("train.cycles")],
                       ["original report", f"{ORIGINAL_SCHEDULE['eta_min']:g}", f"{ORIGINAL_SCHEDULE['eta_max']:g}",
                        n_s, cycles]]))
    pictures(section, tracked, runs[0], {"eta.png": "η per update step"}, train_command(preset))
    return section


def trial_rows(data: bytes) -> list[dict]:
    """The rows of a study run's trials.csv, numbers as floats."""
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    for row in rows:
        for key, value in row.items():
            if key not in ("state", "verdict", "val_accuracies", "reason", "left_race"):
                try:
                    row[key] = float(value)
                except ValueError:
                    pass
    return rows


def lambda_search(tracked, kind: str) -> Section:
    """A study's lambdas: mean validation accuracy ± 3σ per lambda, its table, beside the original's list."""
    name = tracked.sources.coarse_study if kind == "coarse" else tracked.sources.fine_study
    section = Section(f"{kind}-search", f"{kind.capitalize()} λ search (study {name!r})")
    run = tracked.study_run(name)
    data = None if run is None else tracked.artifact(run, "trials.csv")
    if data is None:
        section.lack(f"no finished run of the {kind} study {name!r} with its trials.csv", study_command(kind))
        return section
    rows = trial_rows(data)
    dims = [k for k in rows[0] if k not in TRIAL_COLUMNS] if rows else []
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    best = next((r for r in rows if r["verdict"] == "best"), None)
    lams = [r["lam"] for r in complete]
    found = f"{len(lams)} λ from {min(lams):.3g} to {max(lams):.3g}" if lams else "none completed"
    original = ((ORIGINAL_COARSE_LAMBDAS, ORIGINAL_COARSE_FINDING) if kind == "coarse"
                else (ORIGINAL_FINE_LAMBDAS, f"best λ = {ORIGINAL_FINE_BEST_LAM:g}"))
    settings = "" if best is None else ", ".join(f"{k} = {best[k]:g}" for k in dims)
    section.add(table(["", f"ours (run {short(run)})", "original report"],
                      [["λ tried", found, original[0]],
                       ["best", "—" if best is None else f"{settings}: {mean_std_row(best)}", original[1]]],
                      original_column=2))
    section.add(table(["trial", *dims, "validation accuracy", "Δ vs best [95% CI], points", "p (Holm)", "verdict"],
                      [[f"{r['trial']:g}", *(f"{r[k]:g}" for k in dims), mean_std_row(r), delta_cell(r),
                        "" if math.isnan(r["p_vs_best"]) else f"{r['p_vs_best']:.3g}", r["verdict"] or r["state"]]
                       for r in rows]))
    names = sorted(n for n in tracked.artifact_names(run) if n.startswith("lambda_search") and n.endswith(".png"))
    for png_name in names:
        section.add(picture(tracked.artifact(run, png_name), f"mean validation accuracy ± 3σ per λ ({png_name})"))
    if not names and complete:  # drawn again from the logged table
        fig = plots.lambda_search(lams, [r["mean_val_accuracy"] for r in complete],
                                  [r["std_val_accuracy"] for r in complete], log_x=kind == "coarse",
                                  best_lam=None if best is None else best["lam"],
                                  title=f"{kind} search: mean validation accuracy ± 3σ")
        section.add(picture(figure_png(fig), "mean validation accuracy ± 3σ per λ, drawn from trials.csv"))
    png = tracked.artifact(run, "paired_differences.png")
    if png is not None:
        section.add(picture(png, "each point's paired difference to the best, 95% interval (paired_differences.png)"))
    return section


def mean_std_row(r) -> str:
    return f"{pct(r['mean_val_accuracy'])} ± {100 * r['std_val_accuracy']:.2f} ({r['replicates']:g})"


def delta_cell(r) -> str:
    if r["verdict"] == "best" or math.isnan(r["delta_vs_best"]):
        return ""
    return f"{100 * r['delta_vs_best']:+.2f} [{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}]"


def best_parametrisation(tracked) -> Section:
    """The final model of the fine study: its accuracies beside the original's best run, curves, confusion."""
    section = Section("best", "The best parametrisation: the final model")
    final = tracked.final_run(tracked.study_run(tracked.sources.fine_study))
    if final is None:
        section.lack("no final model run under a finished fine study run", study_command("fine"))
        return section
    m, p = final.data.metrics, final.data.params
    members = p.get("members", p.get("n_networks", "?"))
    section.add(paragraph(f"Run {short(final)}: λ = {p.get('lam')}, {p.get('cycles')} cycles of 2 × {p.get('n_s')} "
                          f"steps, n_batch {p.get('n_batch')}, {members} network(s) on {p.get('n_train')} training "
                          f"images, augment {p.get('augment')}."))
    members_cell = ("—" if "members_mean_test_accuracy" not in m else
                    f"{pct(m['members_mean_test_accuracy'])} ± {100 * m.get('members_std_test_accuracy', 0):.2f}")
    section.add(table(["", "ours", "original report"],
                      [[f"test accuracy (ensemble of {members})", pct(m.get("test_accuracy")),
                        f"{pct(ORIGINAL_TEST_ACCURACY['best'])} (one network)"],
                       ["test accuracy of the members, mean ± std", members_cell,
                        pct(ORIGINAL_TEST_ACCURACY["best"])],
                       ["validation accuracy", pct(m.get("final_val_accuracy")), pct(ORIGINAL_BEST_VAL_ACCURACY)],
                       ["training accuracy", pct(m.get("final_train_accuracy")), "—"]], original_column=2))
    pictures(section, tracked, final, {"learning_curves.png": "cost, loss and accuracy by update step",
                                       "eta.png": "η per update step", "confusion_test.png": "test confusion matrix"},
             study_command("fine"))
    return section


# ----------------------------------------------------------------------------- what clrsearch adds


def race(tracked) -> Section:
    """The rounds of the fine study's race and when each point left it."""
    section = Section("race", "The race")
    study = tracked.study(tracked.sources.fine_study)
    if study is None:
        section.lack(f"no fine study {tracked.sources.fine_study!r} in the Optuna storage", study_command("fine"))
        return section
    rounds, left = study.user_attrs.get(RACE_ROUNDS, {}), study.user_attrs.get(RACE_LEFT, {})
    if not rounds and not left:
        section.lack("the fine study did not race (it ran with --no-race)", study_command("fine"))
        return section
    first = study.user_attrs.get("seeds", [])
    rows = [["1", "every point", f"{len(first)} ({', '.join(map(str, first))})"]]
    rows += [[r, ", ".join(map(str, d["points"])), f"{len(d['replicates'])} ({', '.join(map(str, d['replicates']))})"]
             for r, d in sorted(rounds.items(), key=lambda item: int(item[0]))]
    section.add(paragraph(f"{len(rows)} round(s); a point leaves the race once it is worse than the best."))
    section.add(table(["round", "points", "new replicates"], rows))
    section.add(table(["point", "left after round"], [[p, r] for p, r in sorted(left.items(), key=lambda i: int(i[0]))]))
    run = tracked.study_run(tracked.sources.fine_study)
    png = None if run is None else tracked.artifact(run, "race.png")
    if png is not None:
        section.add(picture(png, f"each point's mean after every round (run {short(run)}, race.png)"))
    return section


def best_set(tracked) -> Section:
    """The points the best cannot be told from, and each point's probability of being the best."""
    section = Section("best-set", "The best set and P(best)")
    study, run = tracked.study(tracked.sources.fine_study), tracked.study_run(tracked.sources.fine_study)
    attrs = {} if study is None else study.user_attrs
    members = attrs.get(BEST_SET_ATTR, None if run is None else run.data.tags.get(BEST_SET_ATTR))
    p_best = attrs.get(P_BEST_ATTR) or ({} if run is None else {
        key[len(P_BEST_METRIC_PREFIX):]: value for key, value in run.data.metrics.items()
        if key.startswith(P_BEST_METRIC_PREFIX)})
    if members is None:
        section.lack(f"the fine study records no best set (study user attr or study-run tag {BEST_SET_ATTR!r})",
                     study_command("fine"))
    else:
        shown = members if isinstance(members, str) else ", ".join(map(str, members))
        section.add(paragraph(f"Best set: {shown}."))
    if not p_best:
        section.lack(f"the fine study records no P(best) (study user attr {P_BEST_ATTR!r} or study-run metrics "
                     f"{P_BEST_METRIC_PREFIX}<trial>)", study_command("fine"))
    else:
        ranked = sorted(p_best.items(), key=lambda item: -float(item[1]))
        section.add(table(["trial", "P(best)"], [[k, f"{float(v):.3f}"] for k, v in ranked]))
    return section


def champion(tracked) -> Section:
    """The version the alias points to, its tags, and every version of the registered model."""
    name, alias = tracked.sources.registered_name, tracked.sources.alias
    section = Section("champion", f"The champion: {name}@{alias}")
    version = tracked.champion()
    if version is None:
        section.lack(f"no version of {name} with the alias {alias}", study_command("fine"))
        return section
    section.add(paragraph(f"Version {version.version}: test accuracy {pct(float(version.tags['test_accuracy']))} "
                          if "test_accuracy" in version.tags else f"Version {version.version}."))
    section.add(table(["tag", "value"], sorted(version.tags.items())))
    section.add(table(["version", "aliases", "test accuracy", "study", "run"],
                      [[v.version, ", ".join(v.aliases), pct(float(v.tags["test_accuracy"]))
                        if "test_accuracy" in v.tags else "—", v.tags.get("study_name", ""),
                        (v.run_id or "")[:8]] for v in tracked.versions()]))
    return section


def comparison(tracked) -> Section:
    """The champion against the champion before it: test accuracies and McNemar's test, as its tags record."""
    section = Section("comparison", "The champion against the previous champion")
    version = tracked.champion()
    if version is None:
        section.lack(f"no version of {tracked.sources.registered_name} with the alias {tracked.sources.alias}",
                     study_command("fine"))
        return section
    previous = version.tags.get(PREVIOUS_CHAMPION_TAG)
    tests = {k: v for k, v in version.tags.items() if MCNEMAR_WORD in k.lower()}
    if previous is None and not tests:
        section.lack(f"the champion version {version.version} has no tag {PREVIOUS_CHAMPION_TAG!r} or "
                     f"{MCNEMAR_P_TAG!r}", study_command("fine"))
        return section
    rows = [[f"champion, version {version.version}", pct(_tag_float(version, "test_accuracy"))]]
    before = None if previous is None else tracked.version(previous)
    if before is not None:
        rows.append([f"previous champion, version {before.version}", pct(_tag_float(before, "test_accuracy"))])
    section.add(table(["model", "test accuracy"], rows))
    if tests:
        section.add(table(["McNemar", "value"], sorted(tests.items())))
    return section


def _tag_float(version, key):
    try:
        return float(version.tags[key])
    except (KeyError, ValueError):
        return None


def build(tracked) -> list:
    """Every section, as (heading, sections) parts of the page."""
    return [("The original report", [class_distribution(tracked), gradient_check(tracked),
                                     *(experiment(tracked, p) for p in ("sanity", "fig3", "fig4")),
                                     eta_schedule(tracked), lambda_search(tracked, "coarse"),
                                     lambda_search(tracked, "fine"), best_parametrisation(tracked)]),
            ("What clrsearch adds", [race(tracked), best_set(tracked), champion(tracked), comparison(tracked)])]
