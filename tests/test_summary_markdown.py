"""The study run's description (clrsearch.search.summary.markdown_table): the trials table in Markdown,
checked on hand-made rows against the text written out by hand."""

import math

from clrsearch.search import summary

NAN = math.nan


def row(trial, lam, mean, std, verdict, **fields):
    base = {"trial": trial, "point": trial, "lam": lam, "state": "COMPLETE", "mean_val_accuracy": mean,
            "std_val_accuracy": std, "replicates": 3, "val_accuracies": "", "delta_vs_best": NAN, "ci_low": NAN,
            "ci_high": NAN, "p_vs_best": NAN, "verdict": verdict, "rounds": 1, "left_race": "", "reason": ""}
    return {**base, **fields}


ROWS = [row(3, 0.0015, 0.5213, 0.0036, "best"),
        row(9, 0.000341, 0.5184, 0.0003, "tied", delta_vs_best=-0.0029, ci_low=-0.011, ci_high=0.0052,
            p_vs_best=0.21),
        row(4, 0.08, NAN, NAN, "", state="FAIL", replicates=0, reason="diverged | at step 3")]


def test_the_table_in_markdown_with_the_best_point_in_bold_and_first_said():
    assert summary.markdown_table(ROWS, "coarse study 'coarse'") == "\n".join([
        "### coarse study 'coarse'",
        "",
        "**Best: trial 3, λ = 0.0015: validation accuracy 52.13 ± 0.36 % (3 replicates).**",
        "",
        "3 points; Δ and its 95% interval: paired difference to the best, in accuracy points; "
        "p: one-sided paired t-test, Holm-adjusted.",
        "",
        "| trial | λ | val accuracy (mean ± std, n) | Δ vs best [95% CI] | p (Holm) | verdict |",
        "|---:|---:|---|---|---:|---|",
        "| **3** | **0.0015** | **52.13 ± 0.36 % (3)** |  |  | **best** |",
        "| 9 | 0.000341 | 51.84 ± 0.03 % (3) | -0.29 [-1.10, +0.52] | 0.21 | tied |",
        "| 4 | 0.08 |  |  |  | FAIL (diverged \\| at step 3) |",
    ])


def test_schedule_dimensions_get_their_own_columns():
    rows = [row(0, 0.001, 0.5, 0.01, "best", n_s_epochs=2), row(1, 0.001, 0.49, 0.01, "worse", n_s_epochs=4)]
    text = summary.markdown_table(rows)
    assert text.splitlines()[4] == ("| trial | λ | n_s_epochs | val accuracy (mean ± std, n) | Δ vs best [95% CI] | "
                                    "p (Holm) | verdict |")
    assert "**Best: trial 0, λ = 0.001, n_s_epochs = 2:" in text and "| 1 | 0.001 | 4 |" in text


def test_a_table_too_long_for_an_mlflow_tag_keeps_the_rows_that_fit_and_says_where_the_rest_is():
    rows = [row(k, 0.001 * (k + 1), 0.5, 0.01, "best" if k == 0 else "worse") for k in range(200)]
    text = summary.markdown_table(rows, "fine study 'fine'")
    assert len(text) <= summary.MAX_DESCRIPTION
    kept = text.count("\n| ") - 1  # the header line also starts so
    assert 0 < kept < 200 and text.endswith(f"*{200 - kept} more rows in trials.csv*")
