"""The sections of the report, each built from what :class:`.read.Tracked` finds, beside the original report's
numbers (SPEC), and what is missing with the command that makes it.

The original report: the class distribution (its figure 1), the gradient check, the sanity, fig3 and fig4
runs (learning curves, test confusion matrix), the eta schedule, the coarse and fine lambda searches (± 3σ),
the best parametrisation. What clrsearch adds: the race, the best set and P(best), the compute spent, the
champion, and its comparison with the previous champion.

Each reads the names its writer defines: the race's study user attrs (:mod:`..search.race`), the columns of the
study run's ``trials.csv`` and its metrics (:mod:`..search.summary`), the version tags of
:mod:`..tracking.challenge`.
"""
from __future__ import annotations

import csv
import io
import math

import numpy as np

from .. import plots
from ..config import GRID_DIMENSIONS
from ..nn.gradcheck import share
from ..search.race import RACE_ROUNDS, race_end, race_left
from ..search.summary import COMPUTE_METRICS
from ..tracking.challenge import (CHALLENGER, COMPARED_TAG, DECISION_TAG, DIFFERENCE_TAG, FORCED_TAG, MCNEMAR_P_TAG,
                                  REASON_TAG)
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

TEXT_COLUMNS = ("state", "verdict", "val_accuracies", "reason", "left_race", "augment")  # of trials.csv
RACE_FIGURES = {"race.png": "each point's mean after every round", "race_mcb.png": "the points alive at each look "
                "of the race, with their MCB intervals among them then, and δ"}  # of the fine study run
PRESET_TITLES = {"sanity": "sanity: overfit 100 training images", "fig3": "fig3: 1 cycle, n_s = 500",
                 "fig4": "fig4: 3 cycles, n_s = 800"}


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
    """The rows of a study run's trials.csv (:func:`..search.summary.trials_table`), numbers as floats and
    ``best_set`` as a bool."""
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    for row in rows:
        for key, value in row.items():
            if key == "best_set":
                row[key] = value == "True"
            elif key not in TEXT_COLUMNS:
                try:
                    row[key] = float(value)
                except ValueError:
                    pass
    return rows


def dimensions(rows) -> list[str]:
    """The columns of trials.csv that name a point (lam first)."""
    return [k for k in GRID_DIMENSIONS if rows and k in rows[0]]


def settings(row, dims) -> str:
    """A point's settings, e.g. "lam = 0.001, n_s_epochs = 2"."""
    return ", ".join(f"{k} = {row[k]:g}" if isinstance(row[k], float) else f"{k} = {row[k]}" for k in dims)


def fine_trials(tracked):
    """The latest finished fine study run and the rows of its trials.csv, (run, None) without it."""
    run = tracked.study_run(tracked.sources.fine_study)
    data = None if run is None else tracked.artifact(run, "trials.csv")
    return run, None if data is None else trial_rows(data)


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
    dims = dimensions(rows)
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    best = next((r for r in rows if r["verdict"] == "best"), None)
    lams = [r["lam"] for r in complete]
    found = f"{len(lams)} λ from {min(lams):.3g} to {max(lams):.3g}" if lams else "none completed"
    original = ((ORIGINAL_COARSE_LAMBDAS, ORIGINAL_COARSE_FINDING) if kind == "coarse"
                else (ORIGINAL_FINE_LAMBDAS, f"best λ = {ORIGINAL_FINE_BEST_LAM:g}"))
    section.add(table(["", f"ours (run {short(run)})", "original report"],
                      [["λ tried", found, original[0]],
                       ["best", "—" if best is None else f"{settings(best, dims)}: {mean_std_row(best)}",
                        original[1]]], original_column=2))
    section.add(table(["trial", *dims, "validation accuracy", "Δ vs best [95% CI], points", "p (Holm)", "verdict"],
                      [[f"{r['trial']:g}", *(f"{r[k]:g}" if isinstance(r[k], float) else r[k] for k in dims),
                        mean_std_row(r), delta_cell(r),
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
                                       "eta.png": "η per update step",
                                       "confusion_matrix.png": "test confusion matrix, MLflow's evaluation"},
             study_command("fine"))
    return section


# ----------------------------------------------------------------------------- what clrsearch adds


def race(tracked) -> Section:
    """The fine study's race as it recorded it (user attrs ``race_rounds``, ``race_left``, ``race_end``), and its
    figures on the fine study run."""
    section = Section("race", "The race")
    study = tracked.study(tracked.sources.fine_study)
    if study is None:
        section.lack(f"no fine study {tracked.sources.fine_study!r} in the Optuna storage", study_command("fine"))
        return section
    end, left, rounds = race_end(study), race_left(study), study.user_attrs.get(RACE_ROUNDS, {})
    if not end and not rounds:
        section.lack("the fine study did not race (it ran with --no-race)", study_command("fine"))
        return section
    run, rows = fine_trials(tracked)
    named = point_names(rows)
    if end:
        rule = "KN screening, MCB stop" if end["rule"] == "kn" else "Holm-corrected t-tests"
        section.add(paragraph(f"Rule: {rule}; δ = {100 * end['delta']:g} accuracy points, α = {end['alpha']:g}. "
                              f"The race stopped after round {end['round']} at {end['replicates']} replicates: "
                              f"{end['reason']}. Left in it: {', '.join(named(p) for p in end['points'])}; the "
                              f"winner is the largest mean among them."))
    else:
        section.lack("the race has not ended (the study was interrupted)", study_command("fine"))
    first = study.user_attrs.get("seeds", [])
    table_rows = [["1", "every point", f"{len(first)} ({', '.join(map(str, first))})"]]
    table_rows += [[r, ", ".join(named(p) for p in d["points"]),
                    f"{len(d['replicates'])} ({', '.join(map(str, d['replicates']))})"]
                   for r, d in sorted(rounds.items(), key=lambda item: int(item[0]))]
    section.add(table(["round", "points", "new replicates"], table_rows))
    if left:
        section.add(table(["point", "left after round"], [[named(p), r] for p, r in sorted(left.items())]))
    if rounds:  # the figures of a race that went past its first round
        if run is None:
            section.lack("no finished fine study run with the race's figures", study_command("fine"))
        else:
            pictures(section, tracked, run, RACE_FIGURES, study_command("fine"))
    return section


def point_names(rows):
    """A function naming a point by its settings in the rows of trials.csv (by its number without them)."""
    dims = dimensions(rows or [])
    names = {int(r["point"]): settings(r, dims) for r in rows or [] if "point" in r}
    return lambda point: f"{point} ({names[int(point)]})" if int(point) in names else str(point)


def best_set(tracked) -> Section:
    """The points the best cannot be told from by MCB, and each point's P(best), from the fine study run's
    trials.csv (:func:`..search.summary.trials_table`)."""
    section = Section("best-set", "The best set and P(best)")
    run, rows = fine_trials(tracked)
    if rows is None:
        section.lack("no finished run of the fine study with its trials.csv", study_command("fine"))
        return section
    rows = [r for r in rows if r["state"] == "COMPLETE"]
    if not rows or "p_best" not in rows[0]:
        section.lack(f"the trials.csv of run {short(run)} has no completed point with P(best)", study_command("fine"))
        return section
    dims = dimensions(rows)
    members = [r for r in rows if r["best_set"]]
    study = tracked.study(tracked.sources.fine_study)
    level = "" if study is None else f", simultaneous {100 * (1 - study.user_attrs.get('alpha', 0.05)):g}%"
    section.add(paragraph(f"Run {short(run)}. Best set (MCB{level}): "
                          + "; ".join(f"trial {r['trial']:g} ({settings(r, dims)})" for r in members)
                          + ". MCB: interval for the point's mean minus the best other's, in accuracy points; "
                            "P(best): Bayesian bootstrap over replicates."))
    ranked = sorted(rows, key=lambda r: (-r["p_best"], r["trial"]))
    section.add(table(["trial", *dims, "validation accuracy", "MCB [interval], points", "best set", "P(best)"],
                      [[f"{r['trial']:g}", *(settings(r, [k]).split(" = ")[1] for k in dims), mean_std_row(r),
                        f"[{100 * r['mcb_low']:+.2f}, {100 * r['mcb_high']:+.2f}]", "yes" if r["best_set"] else "no",
                        f"{r['p_best']:.3f}"] for r in ranked]))
    return section


def compute(tracked) -> Section:
    """The network updates each study trained, in full trainings and as a fraction of an exhaustive study (its
    study run's metrics, :func:`..search.summary.compute_used`)."""
    section = Section("compute", "The compute spent")
    table_rows = []
    for kind, name in (("coarse", tracked.sources.coarse_study), ("fine", tracked.sources.fine_study)):
        run = tracked.study_run(name)
        m = {} if run is None else run.data.metrics
        if not all(key in m for key in COMPUTE_METRICS):
            section.lack(f"no finished run of the {kind} study {name!r} with its compute metrics", study_command(kind))
            continue
        updates, full, fraction = (m[key] for key in COMPUTE_METRICS)
        table_rows.append([f"{kind} {name!r}", short(run), f"{updates:,.0f}", f"{full:.1f}", f"{100 * fraction:.1f} %"])
    if table_rows:
        section.add(table(["study", "run", "network updates", "full trainings", "of an exhaustive study"],
                          table_rows))
    return section


def champion(tracked) -> Section:
    """The version the alias points to, why it holds it, and every version of the registered model."""
    name, alias = tracked.sources.registered_name, tracked.sources.alias
    section = Section("champion", f"The champion: {name}@{alias}")
    version = tracked.champion()
    if version is None:
        section.lack(f"no version of {name} with the alias {alias}", study_command("fine"))
        return section
    accuracy = _tag_float(version, "test_accuracy")
    section.add(paragraph(f"Version {version.version}"
                          + ("" if accuracy is None else f": test accuracy {pct(accuracy)}")
                          + f"; {version.tags.get(DECISION_TAG, 'no decision recorded')}: "
                          + f"{version.tags.get(REASON_TAG, '—')}"))
    section.add(table(["tag", "value"], sorted(version.tags.items())))
    section.add(table(["version", "aliases", "test accuracy", "decision", "compared with", "study", "run"],
                      [[v.version, ", ".join(v.aliases), pct(_tag_float(v, "test_accuracy")),
                        v.tags.get(DECISION_TAG, ""), v.tags.get(COMPARED_TAG, ""), v.tags.get("study_name", ""),
                        (v.run_id or "")[:8]] for v in tracked.versions()]))
    return section


def comparison(tracked) -> Section:
    """The champion against the version it was compared with (the previous champion), and the challenger against
    the champion of its day: test accuracies, the difference, McNemar's p, the decision, as the version tags and
    descriptions record them."""
    section = Section("comparison", "The champion against the previous champion")
    version = tracked.champion()
    if version is None:
        section.lack(f"no version of {tracked.sources.registered_name} with the alias {tracked.sources.alias}",
                     study_command("fine"))
        return section
    compared = [(f"champion, version {version.version}", version)]
    challenger = tracked.version_by_alias(CHALLENGER)
    if challenger is not None:
        compared.append((f"challenger, version {challenger.version}", challenger))
    if COMPARED_TAG not in version.tags:
        section.lack(f"a champion before version {version.version} to compare it with (its decision: "
                     f"{version.tags.get(DECISION_TAG, 'none recorded')})", study_command("fine"))
    rows = []
    for label, v in compared:
        if COMPARED_TAG not in v.tags:
            continue
        before = tracked.version(v.tags[COMPARED_TAG])
        difference = _tag_float(v, DIFFERENCE_TAG)
        rows.append([label, pct(_tag_float(v, "test_accuracy")), f"version {v.tags[COMPARED_TAG]}",
                     pct(None if before is None else _tag_float(before, "test_accuracy")),
                     "—" if difference is None else f"{100 * difference:+.2f}", v.tags.get(MCNEMAR_P_TAG, "—"),
                     v.tags.get(DECISION_TAG, "") + (" (forced)" if v.tags.get(FORCED_TAG) == "true"
                                                     and "forced" not in v.tags.get(DECISION_TAG, "") else ""),
                     v.tags.get(REASON_TAG, "")])
        for text in comparison_paragraphs(v.description):
            section.add(paragraph(f"{label}: {text}"))
    if rows:
        section.add(table(["version", "test accuracy", "compared with", "its test accuracy",
                           "difference, points", "McNemar p", "decision", "why"], rows))
    return section


def comparison_paragraphs(description) -> list[str]:
    """The paragraphs of a version's description that :mod:`..tracking.challenge` wrote (they open in bold), as
    plain text."""
    paragraphs = (description or "").split("\n\n")
    return [p.replace("**", "").replace("`", "") for p in paragraphs[1:] if p.startswith("**")]


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
            ("What clrsearch adds", [race(tracked), best_set(tracked), compute(tracked), champion(tracked),
                                     comparison(tracked)])]
