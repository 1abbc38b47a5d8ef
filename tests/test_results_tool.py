"""The search, augment and schedule sections of tools/results.py rendered from hand-made summaries and a
study made by hand: every number on the page is checked against a value worked out here. No training."""

import math

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

import results
from clrsearch.config import DEFAULT_SEARCH

NAN = float("nan")


def row(trial, lam, accuracy, verdict, compared=(NAN, NAN, NAN, NAN), **extra):
    """A row as ``search.summary.trials_table`` gives it (and ``--json`` prints it).

    ``accuracy``: (mean, std, replicates); ``compared``: (delta, CI low, CI high, p) against the best.
    """
    (mean, std, n), (delta, low, high, p) = accuracy, compared
    return {"trial": trial, "point": trial, "lam": lam, "state": "COMPLETE", "mean_val_accuracy": mean,
            "std_val_accuracy": std, "replicates": n, "val_accuracies": "", "delta_vs_best": delta,
            "ci_low": low, "ci_high": high, "p_vs_best": p, "verdict": verdict, "rounds": 1, "left_race": "",
            "reason": "", **extra}


def coarse_summary():
    rows = [row(0, 0.0001, (0.510, 0.002, 3), "worse", (-0.012, -0.020, -0.004, 0.03)),
            row(1, 0.002, (0.522, 0.003, 3), "best", (0.0, 0.0, 0.0, None)),
            {**row(2, 0.09, (NAN, NAN, 1), ""), "state": "PRUNED", "reason": "pruned after cycle 1"}]
    return {"study": "coarse", "kind": "coarse", "trials": rows, "best": rows[1], "wall_seconds": 130.0,
            "command": "python -m clrsearch.coarse --json",
            "seconds": {"data": 2.5, "training": 100.0, "evaluation": 10.0, "tracking": 5.0, "total": 120.0}}


def fine_summary():
    rows = [row(0, 0.002, (0.515, 0.004, 3), "worse", (-0.011, -0.016, -0.006, 0.004), n_s_epochs=2, left_race=1),
            row(1, 0.002, (0.526, 0.002, 9), "best", (0.0, 0.0, 0.0, None), n_s_epochs=4, rounds=3),
            row(2, 0.004, (0.524, 0.003, 9), "tied", (-0.002, -0.005, 0.001, 0.3), n_s_epochs=4, rounds=3)]
    final = {"lam": 0.002, "n_s_epochs": 4, "train_accuracy": 0.61, "val_accuracy": 0.545, "test_accuracy": 0.551,
             "member_test_accuracies": [0.52, 0.53, 0.54], "snapshot_ensemble_test_accuracy": 0.5531,
             "model_version": "7", "run_id": "abc123"}
    return {"study": "fine", "kind": "fine", "trials": rows, "best": rows[1], "final": final, "wall_seconds": 500.0,
            "command": "python -m clrsearch.fine --json",
            "seconds": {"data": 2.0, "training": 300.0, "evaluation": 20.0, "tracking": 8.0, "final model": 150.0,
                        "total": 490.0}}


def lines_with(text, *parts):
    return [line for line in text.splitlines() if all(part in line for part in parts)]


# ----------------------------------------------------------------------------- settings and flags


def test_the_targets_of_issue_11_are_settings():
    s = results.ResultsSettings()
    assert (s.final_target, s.member_target, s.fine_minutes, s.report_test) == (55.0, 53.0, 8, 51.14)
    assert {"core", "search", "augment", "schedule"} <= set(results.SECTIONS)


def test_each_study_command_gets_the_study_args_it_takes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no studies/*.toml: the commands' built-in defaults
    args = ["--n-s", "20", "--final-val-size", "200", "--grid-points=4", "--no-race", "--hidden", "8", "--no-final",
            "--n-trials", "4", "--lam-max=0.05"]
    assert results.study_argv("coarse", args) == ["--n-s", "20", "--hidden", "8", "--n-trials", "4", "--lam-max=0.05"]
    assert results.study_argv("fine", args) == args[:9]
    for kind in ("coarse", "fine"):  # both commands' own parsers take what they are given
        results.study_config(kind, results.study_argv(kind, args))


def test_the_flip_effect_command_is_the_comparison_asked_for():
    argv = results.augment_argv(0.003, ("--hidden", "8"))
    assert results.shown_command("fine", argv, None) == (
        "python -m clrsearch.fine --hidden 8 --study-name flip-effect --grid lam=0.003 --grid n_s_epochs=4 "
        "--grid augment=none,flip --n-seeds 5 --trials-per-population 1 --no-race --no-final")


# ----------------------------------------------------------------------------- section search


def test_search_tables_show_schedule_columns_paired_differences_and_the_race():
    text = results.search_markdown(coarse_summary(), fine_summary(), dict(DEFAULT_SEARCH))
    header = lines_with(text, "| trial | λ | n_s_epochs |")
    assert len(header) == 1 and "left the race" in header[0] and "p (Holm)" in header[0]
    coarse_header = lines_with(text, "| trial | λ | val accuracy")
    assert len(coarse_header) == 1 and "left the race" not in coarse_header[0]  # the coarse study does not race
    assert lines_with(text, "| 0 | 0.0001 | 51.00% ± 0.20 (3) | -1.20 [-2.00, -0.40] | 0.03 | worse |")
    assert lines_with(text, "| 2 | 0.09 |", "PRUNED (pruned after cycle 1)")
    assert lines_with(text, "| 0 | 0.002 | 2 | 51.50% ± 0.40 (3) | -1.10 [-1.60, -0.60] | 0.004 | worse | "
                            "after round 1 |")
    assert lines_with(text, "| 1 | 0.002 | 4 | 52.60% ± 0.20 (9) | — | — | **best** | "
                            "stayed to the end (3 rounds) |")
    assert lines_with(text, "The race took 3 rounds", "1 point after round 1", "1 point still tied")


def test_final_model_members_mean_std_and_the_done_when_lines():
    text = results.search_markdown(coarse_summary(), fine_summary(), dict(DEFAULT_SEARCH))
    # members 52, 53, 54 %: mean 53.00, sample std 1.00
    assert lines_with(text, "| test accuracy of the members, mean ± std | 53.00% ± 1.00 | 51.14% |")
    assert lines_with(text, "| test accuracy of each member | 52.00%, 53.00%, 54.00% |")
    assert lines_with(text, "| test accuracy, the registered ensemble | **55.10%** |")
    assert lines_with(text, "snapshot ensemble", "55.31%")
    assert lines_with(text, "| validation accuracy, the ensemble | 54.50% | 52.5% |")
    assert lines_with(text, "registered ensemble", "≥ 55.0%", "55.10%", "| yes |")
    assert lines_with(text, "members' mean test accuracy", "≥ 53.0%", "53.00% ± 1.00 (3)", "| yes |")
    assert lines_with(text, "wall time", "≤ 8 min", "8.3 min", "**no**")  # 500 s > 480 s
    assert lines_with(text, "ends with one winner", "trial 1 (1 tied at the end: the tie-break)")
    # the default protocol: 5 networks would be the default, but 3 members were trained; 2 + 1 cycles
    assert lines_with(text, "Winning point: λ = 0.002, n_s_epochs 4", "3 networks (replicates 0–2)",
                      "all training images but 1,000", "3 cycles (1 more", "`models:/clrsearch-cifar10/7`")


def test_stage_costs_per_study_and_the_wall_time_of_each_command():
    text = results.search_markdown(coarse_summary(), fine_summary())
    assert lines_with(text, "| final model | — | 150.0 s |")
    assert lines_with(text, "| training | 100.0 s | 300.0 s |")
    assert lines_with(text, "| total, in the process | 120.0 s | 490.0 s |")
    assert lines_with(text, "wall time of the command", "**130 s** (2.2 min)", "**500 s** (8.3 min)")
    stages = [line.split("|")[1].strip() for line in text.split("### Cost of each stage")[1].splitlines()
              if line.startswith("| ") and "---" not in line][1:]
    assert stages[:6] == ["data", "training", "evaluation", "tracking", "final model", "total, in the process"]


def test_a_resumed_study_is_not_timed():
    fine = fine_summary()
    fine["seconds"] = {"data": 0.2, "tracking": 7.5, "final model": 22.3, "total": 33.9}  # nothing trained
    text = results.search_markdown(coarse_summary(), fine)
    assert lines_with(text, "wall time", "≤ 8 min", "resumed: no trial trained in this run", "not measured")
    assert "The fine study trained no trial in this run" in text
    assert lines_with(text, "| training | 100.0 s | — |")


def test_json_nulls_and_a_fine_study_without_final_model():
    fine = fine_summary()
    del fine["final"]
    for r in fine["trials"]:
        r["p_vs_best"] = None if r["verdict"] == "best" else r["p_vs_best"]
    text = results.search_markdown(coarse_summary(), fine)
    assert "None: the fine study ran without its final model" in text
    assert not lines_with(text, "registered ensemble", "≥ 55.0%")
    assert lines_with(text, "ends with one winner")


# ----------------------------------------------------------------------------- section augment


def flip_rows(flip_best):
    """Flip better by 0.4 points [0.1, 0.7] (or worse by as much), p = 0.01."""
    good, bad = ("flip", "none") if flip_best else ("none", "flip")
    return [row(0, 0.003, (0.520, 0.002, 5), "worse", (-0.004, -0.007, -0.001, 0.01), n_s_epochs=4, augment=bad),
            row(1, 0.003, (0.524, 0.002, 5), "best", (0.0, 0.0, 0.0, None), n_s_epochs=4, augment=good)]


def test_flip_minus_none_takes_its_sign_from_whichever_is_best():
    delta, low, high, p, text = results.flip_effect(flip_rows(flip_best=True), 0.05)
    assert (delta, low, high, p) == pytest.approx((0.004, 0.001, 0.007, 0.01))
    assert text.startswith("`none` is worse than `flip`")
    delta, low, high, p, text = results.flip_effect(flip_rows(flip_best=False), 0.05)
    assert (delta, low, high) == pytest.approx((-0.004, -0.007, -0.001))
    assert text.startswith("`flip` is worse than `none`")
    tied = flip_rows(True)
    tied[0].update(verdict="tied", p_vs_best=0.2)
    assert results.flip_effect(tied, 0.05)[4].startswith("tied")
    assert results.flip_effect(tied[:1], 0.05) is None


def test_augment_section_shows_both_rows_the_difference_and_the_command():
    out = {"study": "flip-effect", "trials": flip_rows(flip_best=True), "wall_seconds": 90.0,
           "command": "python -m clrsearch.fine --study-name flip-effect --json"}
    text = results.augment_markdown(out, 0.003, "the fallback λ")
    assert lines_with(text, "| flip | 52.40% ± 0.20 (5) | — | — | **best** |")
    assert lines_with(text, "| none | 52.00% ± 0.20 (5) | -0.40 [-0.70, -0.10] | 0.01 | worse |")
    assert lines_with(text, "flip − none: **+0.40 points** [+0.10, +0.70]", "p = 0.01", "`none` is worse")
    assert lines_with(text, "python -m clrsearch.fine --study-name flip-effect --json")
    assert lines_with(text, "λ = 0.003 (the fallback λ), n_s_epochs 4, 5 paired replicates")


# ----------------------------------------------------------------------------- section schedule


def schedule_rows():
    return [row(0, 0.001, (0.515, 0.003, 3), "worse", (-0.010, -0.015, -0.005, 0.01), n_s_epochs=2),
            row(1, 0.001, (0.522, 0.002, 9), "tied", (-0.003, -0.007, 0.001, 0.2), n_s_epochs=4),
            row(2, 0.003, (0.518, 0.004, 3), "worse", (-0.007, -0.012, -0.002, 0.02), n_s_epochs=2),
            row(3, 0.003, (0.525, 0.002, 9), "best", (0.0, 0.0, 0.0, NAN), n_s_epochs=4)]


def test_schedule_section_takes_each_schedules_best_lambda_against_the_overall_best():
    about = {"study": "fine", "storage": "sqlite:///studies/clrsearch.db", "alpha": 0.05,
             "grid": [["lam", [0.001, 0.003]], ["n_s_epochs", [2, 4]]]}
    text = results.schedule_markdown(schedule_rows(), about)
    assert lines_with(text, "4 points of the grid lam = 0.001, 0.003; n_s_epochs = 2, 4")
    assert lines_with(text, "| 2 | 0.003 | 51.80% ± 0.40 (3) | -0.70 [-1.20, -0.20] | 0.02 | worse | 0 of 2 |")
    assert lines_with(text, "| 4 | 0.003 | 52.50% ± 0.20 (9) | — | — | **best** | 2 of 2 |")
    assert lines_with(text, "has the schedule n_s_epochs 4",
                      "the best of n_s_epochs 2 (λ = 0.003) is worse (p = 0.02)")
    assert lines_with(text, "| λ | n_s_epochs 2 | n_s_epochs 4 |")
    assert lines_with(text, "| 0.001 | 51.50% (3, worse) | 52.20% (9, tied) |")


def test_schedule_section_without_a_schedule_dimension():
    rows = [{k: v for k, v in r.items() if k != "n_s_epochs"} for r in schedule_rows()[:1]]
    text = results.schedule_markdown(rows, {"study": "fine", "storage": "x"})
    assert "no schedule dimension" in text


def add_point(study, lam, epochs, accuracies):
    study.add_trial(create_trial(
        params={"lam": lam, "n_s_epochs": epochs},
        distributions={"lam": FloatDistribution(0.0, 0.01), "n_s_epochs": IntDistribution(2, 4)},
        value=float(np.mean(accuracies)), state=TrialState.COMPLETE,
        user_attrs={"replicates": list(range(len(accuracies))), "val_accuracies": list(accuracies),
                    "val_accuracy_std": float(np.std(accuracies, ddof=1))}))


def test_the_fine_study_is_read_from_the_storage_the_study_args_name(study_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no studies/fine.toml here: the command's built-in defaults
    args = ("--storage", study_url)
    config = results.study_config("fine", list(args))
    assert results.augment_lam(config)[0] == results.SETTINGS.augment_lam  # no study yet
    study = optuna.create_study(study_name="fine", storage=study_url, direction="maximize")
    study.set_user_attr("alpha", 0.05)
    study.set_user_attr("grid", [["lam", [0.001, 0.003]], ["n_s_epochs", [2, 4]]])
    add_point(study, 0.001, 2, (0.50, 0.51, 0.52))  # 2 points below the best on every replicate
    add_point(study, 0.003, 2, (0.505, 0.512, 0.528))
    add_point(study, 0.001, 4, (0.52, 0.53, 0.54))
    add_point(study, 0.003, 4, (0.521, 0.533, 0.539))
    lam, source = results.augment_lam(config)
    assert lam == 0.003 and "the best λ of the fine study `fine`" in source  # mean 53.1% > 53.0%
    text = results.schedule_section(results.SectionInput(None, args))
    assert lines_with(text, "| 4 | 0.003 |", "**best**")
    assert lines_with(text, "| 2 | 0.003 |", "51.50% ± 1.18 (3)")  # sample std of 50.5, 51.2, 52.8: 1.179


def test_a_missing_sqlite_storage_is_not_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = results.study_config("fine", ["--storage", f"sqlite:///{tmp_path}/none.db"])
    assert results.load_study(config) is None and not (tmp_path / "none.db").exists()
    with pytest.raises(SystemExit, match="no fine study 'fine'"):
        results.schedule_section(results.SectionInput(None, ("--storage", f"sqlite:///{tmp_path}/none.db")))
    assert not math.isnan(results.SETTINGS.augment_lam)
