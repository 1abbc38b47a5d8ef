"""The pruning section of tools/results.py rendered from hand-made summaries of a study run without and with
the pruner: the done-when lines, the trials table and the replayed rules, each number worked out here."""

import results

# point -> (lambda, cycle-1 accuracy, final accuracy without pruning). Point 6 has the best final accuracy
# but a cycle-1 accuracy below the median of the points before it: the plain median rule prunes it.
POINTS = {0: (0.001, 0.50, 0.52), 1: (0.002, 0.51, 0.53), 2: (0.0001, 0.49, 0.51), 3: (0.01, 0.48, 0.50),
          4: (0.05, 0.45, 0.46), 5: (0.1, 0.40, 0.41), 6: (0.003, 0.47, 0.535)}
# The median rule with its margin of 1 point, by hand (slot s against slots 0..s, from the fifth on):
# point 4: median(.50 .51 .49 .48 .45) = .49, .45 < .48: pruned; point 5: median of six = (.48 + .49) / 2 =
# .485, .40 < .475: pruned; point 6: median(.40 .45 .47 .48 .49 .50 .51) = .48, .47 is not < .47: kept.
PRUNED = (4, 5)


def row(point, state, mean, verdict=""):
    return {"trial": point, "point": point, "lam": POINTS[point][0], "state": state, "mean_val_accuracy": mean,
            "std_val_accuracy": 0.0, "replicates": 2, "verdict": verdict, "reason": ""}


def summaries():
    plain = [row(p, "COMPLETE", final, "best" if p == 6 else "tied") for p, (_, _, final) in POINTS.items()]
    pruned = [row(p, "PRUNED", float("nan")) if p in PRUNED else row(p, "COMPLETE", final, "best" if p == 6 else "tied")
              for p, (_, _, final) in POINTS.items()]
    outs = {"unpruned": {"trials": plain, "best": plain[6], "seconds": {"training": 100.0, "total": 120.0},
                         "wall_seconds": 130.0, "command": "python -m clrsearch.coarse --pruner none"},
            "pruned": {"trials": pruned, "best": pruned[6], "seconds": {"training": 80.0, "total": 100.0},
                       "wall_seconds": 110.0, "command": "python -m clrsearch.coarse --pruner median"}}
    rungs = {p: ({1: c1} if p in PRUNED else {1: c1, 2: final}) for p, (_, c1, final) in POINTS.items()}
    return outs, rungs


def lines_with(text, *parts):
    return [line for line in text.splitlines() if all(part in line for part in parts)]


def test_the_replayed_median_rule_prunes_what_the_hand_worked_median_prunes():
    from clrsearch.search.pruning import RULES

    cycle_1 = {p: c1 for p, (_, c1, _) in POINTS.items()}
    assert results.replay_rule(RULES["median"], cycle_1) == set(PRUNED)


def test_done_when_lines_measure_the_gap_the_saving_and_the_best():
    outs, rungs = summaries()
    text = results.pruning_markdown(outs, rungs, cycles=2)
    # the best cycle-1 accuracy is 51%; pruned: 6 and 11 points below it; kept: at most 51 - 47 = 4 points below
    assert lines_with(text, "far below the best", "2 pruned, each 6.00 points or more below", "(51.00%)",
                      "within 4.00 points", "| yes |")
    # 80 s against 100 s: 20%; update steps: 2 of 7 trials train 1 of their 2 cycles, 1/7 = 14%
    assert lines_with(text, "training 80.0 s against 100.0 s", "**20% saved** (14% of the update steps)", "| yes |")
    assert lines_with(text, "the same as without pruning", "with: trial 6, λ = 0.003, 53.50%",
                      "without: trial 6, λ = 0.003, 53.50%", "| yes |")
    assert lines_with(text, "`--pruner median` prunes it when it is more than 1 point below their median",
                      "once 5 values are there")


def test_the_trials_table_shows_cycle_1_the_state_and_both_final_accuracies():
    outs, rungs = summaries()
    text = results.pruning_markdown(outs, rungs, cycles=2)
    assert lines_with(text, "| 5 | 0.1 | 40.00% | **PRUNED** |  | 41.00% | tied |")
    assert lines_with(text, "| 6 | 0.003 | 47.00% | COMPLETE | 53.50% | 53.50% | best |")
    trials = text.split("### Every trial", 1)[1].split("###", 1)[0]
    lams = [float(line.split("|")[2]) for line in trials.splitlines() if line[:3].strip("| ").isdigit()]
    assert lams == sorted(POINTS[p][0] for p in POINTS)  # every point, sorted by lambda


def test_the_replayed_rules_show_that_no_margin_loses_the_best():
    outs, rungs = summaries()
    text = results.pruning_markdown(outs, rungs, cycles=2)
    # the plain median rule also prunes point 6 (.47 < .48); 3 of 7 trials at half their steps: 21%
    assert lines_with(text, "| median, no margin (the plain median rule) | 3 | 0.003 | **no**: trial 6 pruned | 21% |")
    assert lines_with(text, "| median, margin 1 point: `--pruner median` | 2 | 0.05 | yes | 14% |")
    # halving keeps the best third: point 4 against the 2nd largest of five (.50), 5 against the 2nd of six
    # (.50), 6 against the 3rd of seven (.49): all three pruned
    assert lines_with(text, "| successive halving, η = 3: `--pruner hyperband` | 3 | 0.003 | **no**: trial 6 pruned |")
    assert lines_with(text, "Without a margin the median rule prunes 3 trials, the smallest λ = 0.003, and the best "
                            "trial among them", "With the margin of 1 point it prunes 2, none below λ = 0.05, and "
                            "keeps the best.")
    assert "pruning" in results.SECTIONS
