"""``python -m clrsearch.report`` (:mod:`clrsearch.report`, :mod:`clrsearch.cli.report`) over tiny tracked stores:
its sections, their numbers read back independently with ``MlflowClient`` and Optuna, what it says is missing,
and the report logged to the fine study run.

- a store of ``train`` and ``gradcheck`` runs only: those sections are there, the studies' are missing (slow);
- the tiny coarse and fine studies (``conftest.tiny_studies``), read without writing: the studies' sections are
  there, the ``train`` ones missing (slow);
- a study, registry and fine study run written by the test itself, under the names their writers use: the race,
  the best set, P(best), the champion and its comparison;
- real tiny fine studies, one racing (KN) and three final models (champion, champion again, challenger): the race,
  the best set and P(best), the compute and the comparison with the previous champion, as the study, its run,
  the trial runs and the registry hold them (slow).
"""
import base64
import csv
import io
import json
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from clrsearch import gradcheck as gradcheck_command
from clrsearch import train as train_command
from clrsearch.cli import report as command
from clrsearch.report import REPORT_ARTIFACT, Sources, sections, write_report
from clrsearch.tracking import challenge
from helpers import read_raw_batch

SMALL = ["--n-s", "10", "--n-batch", "20", "--hidden", "8", "--quiet"]
PNG = b"\x89PNG\r\n\x1a\n"
ORIGINAL_REPORT = ("fig3", "46.01 %"), ("fig4", "47.29 %"), ("best", "51.14 %"), ("best", "52.50 %")


class Page(HTMLParser):
    """Each ``<section id=...>`` of a page: its class, text, the ``src`` of its images, its missing lines and the
    rows of its tables (lists of cell texts)."""

    def __init__(self, text):
        super().__init__()
        self.sections, self._current, self._in_missing, self._cell = {}, None, False, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self._current = {"class": attrs.get("class", ""), "text": "", "images": [], "missing": [], "rows": []}
            self.sections[attrs["id"]] = self._current
        elif tag == "tr" and self._current is not None:
            self._current["rows"].append([])
        elif tag in ("td", "th") and self._current is not None:
            self._current["rows"][-1].append("")
            self._cell = self._current["rows"][-1]
        elif tag == "img" and self._current is not None:
            self._current["images"].append(attrs["src"])
        elif tag == "p" and attrs.get("class") == "missing" and self._current is not None:
            self._in_missing = True
            self._current["missing"].append("")

    def handle_endtag(self, tag):
        if tag == "section":
            self._current = None
        elif tag == "p":
            self._in_missing = False
        elif tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[-1] += data
        if self._current is not None:
            self._current["text"] += data + " "
            if self._in_missing:
                self._current["missing"][-1] += data


def pct(fraction):
    return f"{100 * fraction:.2f} %"


def png_of(src):
    assert src.startswith("data:image/png;base64,")
    return base64.b64decode(src.split(",", 1)[1])


# ----------------------------------------------------------------------------- train and gradcheck runs only


@pytest.fixture(scope="module")
def singles(store, tiny_data, tmp_path_factory):
    """The module's store holding sanity, fig3 (seeds 0 and 1) and fig4 runs and a gradient check; the report of
    it (no Optuna storage) as a Page, its Report and the client."""
    out = tmp_path_factory.mktemp("singles")
    for preset, seed in (("sanity", 0), ("fig3", 0), ("fig3", 1), ("fig4", 0)):
        assert train_command.main(["--preset", preset, "--seed", str(seed), "--data-dir", str(tiny_data), *SMALL,
                                   "--out", str(out / f"{preset}-{seed}")]) == 0
    assert gradcheck_command.main(["--data-dir", str(tiny_data)]) == 0
    storage = out / "no-studies.db"
    report = write_report(Sources(store.tracking_uri, storage=f"sqlite:///{storage}"), out / "report.html")
    assert not storage.exists()  # read, never created
    return Page((out / "report.html").read_text()), report, store


@pytest.mark.slow
def test_single_command_sections_are_there_and_the_studies_are_missing_with_their_commands(singles):
    page, report, _ = singles
    for section in ("class-distribution", "gradient-check", "sanity", "fig3", "fig4", "eta"):
        assert page.sections[section]["class"] == report.status[section] == "present", section
        assert page.sections[section]["missing"] == []
    expected = {"coarse-search": "python -m clrsearch.coarse", "fine-search": "python -m clrsearch.fine",
                "best": "python -m clrsearch.fine", "race": "python -m clrsearch.fine",
                "best-set": "python -m clrsearch.fine", "champion": "python -m clrsearch.fine",
                "comparison": "python -m clrsearch.fine"}
    for section, run in expected.items():
        assert page.sections[section]["class"] == "missing", section
        assert all(line.startswith("missing: ") and line.endswith(f"run {run}")
                   for line in page.sections[section]["missing"]), page.sections[section]["missing"]
    assert page.sections["compute"]["class"] == "missing"
    assert [line.rsplit(" ", 1)[1] for line in page.sections["compute"]["missing"]] == ["clrsearch.coarse",
                                                                                         "clrsearch.fine"]
    assert report.run_id is None  # no fine study run to log it to
    assert set(page.sections) == {"missing", *report.status}


@pytest.mark.slow
def test_experiment_accuracies_are_those_of_the_runs_beside_the_original_report(singles):
    page, _, client = singles
    experiment = client.get_experiment_by_name("clrsearch").experiment_id
    for preset in ("sanity", "fig3", "fig4"):
        runs = client.search_runs([experiment], f"tags.preset = '{preset}'")
        text = page.sections[preset]["text"]
        for run in runs:
            assert run.info.run_id[:8] in text
            for key in ("train_accuracy", "val_accuracy", "test_accuracy"):
                assert pct(run.data.metrics[key]) in text, (preset, key)
    fig3 = [r.data.metrics["test_accuracy"] for r in client.search_runs([experiment], "tags.preset = 'fig3'")]
    assert f"{100 * np.mean(fig3):.2f} ± {100 * np.std(fig3, ddof=1):.2f} % (2)" in page.sections["fig3"]["text"]
    for section, number in ORIGINAL_REPORT[:2]:
        assert number in page.sections[section]["text"]
    assert sections.ORIGINAL_SANITY in page.sections["sanity"]["text"]


@pytest.mark.slow
def test_figures_are_the_logged_pngs(singles, tmp_path):
    page, _, client = singles
    experiment = client.get_experiment_by_name("clrsearch").experiment_id
    latest = client.search_runs([experiment], "tags.preset = 'fig3'", order_by=["attributes.start_time DESC"])[0]
    logged = {name: Path(client.download_artifacts(latest.info.run_id, name, str(tmp_path))).read_bytes()
              for name in ("learning_curves.png", "confusion_test.png", "class_distribution.png")}
    shown = [png_of(src) for src in page.sections["fig3"]["images"] + page.sections["class-distribution"]["images"]]
    assert sorted(shown) == sorted(logged.values())
    for section in ("sanity", "fig4", "eta"):
        assert page.sections[section]["images"] and all(png_of(s).startswith(PNG)
                                                         for s in page.sections[section]["images"])


@pytest.mark.slow
def test_class_counts_are_those_of_the_batches(singles, tiny_data):
    page, _, _ = singles
    text = " ".join(page.sections["class-distribution"]["text"].split())
    counts = [np.bincount(read_raw_batch(tiny_data / name)[1], minlength=10)
              for name in ("data_batch_1", "data_batch_2", "test_batch")]
    for k, name in enumerate(("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                              "truck")):
        assert f"{name} {counts[0][k]} {counts[1][k]} {counts[2][k]} " in text + " "
    assert f"all {counts[0].sum()} {counts[1].sum()} {counts[2].sum()}" in text


@pytest.mark.slow
def test_gradient_check_tables_are_the_logged_metrics(singles):
    page, _, client = singles
    experiment = client.get_experiment_by_name("clrsearch").experiment_id
    (run,) = client.search_runs([experiment], "tags.level = 'gradcheck'")
    text = page.sections["gradient-check"]["text"]
    for scenario in ("1", "2"):
        for name in ("W1", "b1", "W2", "b2"):
            assert f"{run.data.metrics[f'scenario_{scenario}/{name}/max_abs']:.2e}" in text
            assert f"{run.data.metrics[f'scenario_{scenario}/{name}/max_rel']:.2e}" in text
    assert "~1e-8" in text and "~1e-7" in text


# ----------------------------------------------------------------------------- the tiny studies


def run_command(argv, capsys):
    assert command.main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_study_sections_match_the_study_runs_and_optuna(tiny_studies, tmp_path, capsys):
    studies_report = tmp_path / "report.html"
    summary = run_command(["--tracking-uri", tiny_studies.store, "--storage", tiny_studies.storage,
                           "--out", str(studies_report), "--no-mlflow", "--json"], capsys)
    page = Page(studies_report.read_text())
    assert summary["mlflow_run_id"] is None and summary["path"] == str(studies_report)
    for section in ("coarse-search", "fine-search", "best", "champion"):
        assert page.sections[section]["class"] == summary["sections"][section] == "present", section
    for preset in ("sanity", "fig3", "fig4"):
        assert {"what": f"no run of the {preset} experiment",
                "command": f"python -m clrsearch.train --preset {preset}"} in summary["missing"]
    assert "--no-race" in page.sections["race"]["missing"][0]

    for kind in ("coarse", "fine"):
        study = optuna.load_study(study_name=kind, storage=tiny_studies.storage)
        text = page.sections[f"{kind}-search"]["text"]
        for trial in study.trials:
            assert f" {trial.number} " in f" {text}" and f"{trial.params['lam']:g}" in text
            assert pct(trial.value) in text
        assert page.sections[f"{kind}-search"]["images"]
        best = max(study.trials, key=lambda t: t.value)
        assert f"lam = {best.params['lam']:g}: {pct(best.value)}" in text

    client = MlflowClient(tiny_studies.store, registry_uri=tiny_studies.store)
    experiment = client.get_experiment_by_name("clrsearch").experiment_id
    (final,) = client.search_runs([experiment], "tags.level = 'final'")
    best = page.sections["best"]["text"]
    for key in ("test_accuracy", "final_val_accuracy", "final_train_accuracy"):
        assert pct(final.data.metrics[key]) in best
    for section, number in ORIGINAL_REPORT[2:]:
        assert number in page.sections[section]["text"]
    logged = [Path(client.download_artifacts(final.info.run_id, name, str(tmp_path / "final"))).read_bytes()
              for name in ("learning_curves.png", "eta.png", "confusion_matrix.png")]
    assert [png_of(src) for src in page.sections["best"]["images"]] == logged
    champion = client.get_model_version_by_alias("clrsearch-cifar10", "champion")
    assert pct(float(champion.tags["test_accuracy"])) in page.sections["champion"]["text"]
    assert REPORT_ARTIFACT not in [f.path for f in client.list_artifacts(final.data.tags["mlflow.parentRunId"])]


# ----------------------------------------------------------------------------- what clrsearch adds, written here


# A fine study's trials table as the study run logs it (summary.trials_table), two points, no lambda figure.
TRIALS_CSV = """trial,point,lam,state,mean_val_accuracy,std_val_accuracy,replicates,val_accuracies,delta_vs_best,\
ci_low,ci_high,p_vs_best,verdict,mcb_low,mcb_high,best_set,p_best,rounds,left_race,reason
0,0,0.0,COMPLETE,0.5125,0.004,3,0.5100 0.5100 0.5175,-0.0075,-0.012,-0.003,0.021,worse,-0.01,0.0,False,0.3,1,1,
1,1,0.001,COMPLETE,0.52,0.002,3,0.5200 0.5180 0.5220,nan,nan,nan,nan,best,0.0,0.01,True,0.7,1,,
"""


@pytest.fixture
def added(tmp_path, mlflow_template, study_url):
    """A store with a finished fine study run (its trials.csv and compute metrics), a registered model of two
    versions (the second the champion, tagged with its comparison as tracking.challenge tags it) and an Optuna
    fine study whose user attrs hold a race."""
    import helpers

    uri = helpers.copy_store(mlflow_template, tmp_path)
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment("clrsearch", artifact_location=str(tmp_path / "mlruns"))
    older = client.create_run(experiment, tags={"level": "study", "study_name": "fine"}, run_name="fine:old")
    client.set_terminated(older.info.run_id, "FINISHED")
    run = client.create_run(experiment, tags={"level": "study", "study_name": "fine"}, run_name="fine:fine")
    (tmp_path / "trials.csv").write_text(TRIALS_CSV)
    client.log_artifact(run.info.run_id, str(tmp_path / "trials.csv"))  # no figures: the report draws the λ plot
    for key, value in {"network_updates": 1200, "full_training_equivalents": 30.0, "fraction_of_exhaustive": 0.625}.items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id, "FINISHED")
    name = "clrsearch-cifar10"
    client.create_registered_model(name)
    client.create_model_version(name, "file:///nowhere/1", tags={"test_accuracy": "0.5500",
                                                                 challenge.DECISION_TAG: "champion (first version)"})
    client.create_model_version(name, "file:///nowhere/2", tags={
        "test_accuracy": "0.5612", challenge.COMPARED_TAG: "1", challenge.MCNEMAR_P_TAG: "0.031",
        challenge.DIFFERENCE_TAG: "+0.0112", challenge.DECISION_TAG: "champion",
        challenge.REASON_TAG: "Version 2 is significantly more accurate and became champion, replacing version 1."})
    client.set_registered_model_alias(name, "champion", "2")
    study = optuna.create_study(study_name="fine", storage=study_url)
    for key, value in {"seeds": [0, 1, 2], "alpha": 0.05,
                       "race_rounds": {"2": {"points": [1, 3], "replicates": [3, 4, 5]}},
                       "race_left": {"0": 1, "1": 2, "3": 2},
                       "race_end": {"rule": "kn", "reason": "one point left", "round": 2, "replicates": 6,
                                    "points": [2], "alpha": 0.05, "delta": 0.003}}.items():
        study.set_user_attr(key, value)
    return Sources(uri, storage=study_url), client, run.info.run_id, older.info.run_id


def test_race_best_set_compute_champion_and_comparison_are_read_from_their_writers_names(added, tmp_path):
    sources, client, _, _ = added
    report = write_report(sources, tmp_path / "out" / "r.html", attach=False)
    page = Page(report.path.read_text())
    for section in ("best-set", "champion", "comparison"):
        assert page.sections[section]["class"] == "present", (section, page.sections[section]["missing"])
    race = " ".join(page.sections["race"]["text"].split())
    assert "stopped after round 2 at 6 replicates: one point left" in race and "δ = 0.3 accuracy points" in race
    assert ["2", "1 (lam = 0.001), 3", "3 (3, 4, 5)"] in page.sections["race"]["rows"]
    assert ["1", "every point", "3 (0, 1, 2)"] in page.sections["race"]["rows"]
    # a race past its first round without its figures on the study run says so
    assert page.sections["race"]["class"] == "partial"
    assert [line.split(" of run")[0] for line in page.sections["race"]["missing"]] == ["missing: race.png",
                                                                                       "missing: race_mcb.png"]
    best_set = page.sections["best-set"]
    assert "Best set (MCB, simultaneous 95%): trial 1 (lam = 0.001)." in " ".join(best_set["text"].split())
    assert best_set["rows"][1:] == [["1", "0.001", "52.00 % ± 0.20 (3)", "[+0.00, +1.00]", "yes", "0.700"],
                                    ["0", "0", "51.25 % ± 0.40 (3)", "[-1.00, +0.00]", "no", "0.300"]]
    assert page.sections["compute"]["rows"][1][2:] == ["1,200", "30.0", "62.5 %"]
    assert "56.12 %" in page.sections["champion"]["text"]
    (row,) = page.sections["comparison"]["rows"][1:]
    assert row == ["champion, version 2", "56.12 %", "version 1", "55.00 %", "+1.12", "0.031", "champion",
                   "Version 2 is significantly more accurate and became champion, replacing version 1."]


def test_a_lambda_plot_missing_from_the_study_run_is_drawn_from_its_trials_table(added, tmp_path):
    sources = added[0]
    page = Page(write_report(sources, tmp_path / "r.html", attach=False).path.read_text())
    fine = page.sections["fine-search"]
    assert fine["class"] == "present" and len(fine["images"]) == 1 and png_of(fine["images"][0]).startswith(PNG)
    text = " ".join(fine["text"].split())
    assert "drawn from trials.csv" in text
    assert "0 0 51.25 % ± 0.40 (3) -0.75 [-1.20, -0.30] 0.021 worse" in text
    assert "1 0.001 52.00 % ± 0.20 (3) best" in text
    assert "lam = 0.001: 52.00 % ± 0.20 (3)" in text and "best λ = 0.001" in text


def test_the_report_is_logged_to_the_latest_fine_study_run_and_replaced_on_a_rerun(added, tmp_path):
    sources, client, run_id, older = added
    for attempt in range(2):
        report = write_report(sources, tmp_path / f"report-{attempt}.html")
        assert report.run_id == run_id
        assert [f.path for f in client.list_artifacts(run_id)] == [REPORT_ARTIFACT, "trials.csv"]
        logged = Path(client.download_artifacts(run_id, REPORT_ARTIFACT, str(tmp_path / f"got-{attempt}")))
        assert logged.read_bytes() == report.path.read_bytes()
    assert client.list_artifacts(older) == []


def test_an_absent_store_reads_as_empty_and_is_not_created(tmp_path):
    store, storage = tmp_path / "mlflow.db", tmp_path / "studies.db"
    report = write_report(Sources(f"sqlite:///{store}", storage=f"sqlite:///{storage}"), tmp_path / "r.html")
    assert set(report.status.values()) == {"missing"} and report.run_id is None
    assert not store.exists() and not storage.exists()
    page = Page(report.path.read_text())
    assert all(s["images"] == [] for s in page.sections.values())
    listed = " ".join(page.sections["missing"]["text"].split())
    assert listed.count("; run python -m clrsearch.") == len(report.missing) == 15


# ----------------------------------------------------------------------------- real fine studies, a race on


@pytest.fixture(scope="module")
def raced(tmp_path_factory, mlflow_template, optuna_template):
    """Tiny fine studies in a store of their own: 'weak' (λ 5, all weight decay) registers version 1, the first
    champion; 'fine' races four λ (KN, 3 then 2 more replicates a round up to 7) and its final model, version 2,
    takes the alias from version 1; 'worse' (λ 5 again) registers version 3, left challenger. The report of it,
    as a Page, the client of the store, the Optuna storage's URL."""
    import helpers
    from clrsearch import fine

    folder = tmp_path_factory.mktemp("raced")
    store = helpers.copy_store(mlflow_template, folder)
    storage = helpers.copy_storage(optuna_template, folder / "studies.db")
    args = ["--data-dir", str(helpers.write_tiny_cifar(folder / "data")), "--storage", storage, *helpers.TINY_STUDY,
            "--final-seeds", "1", "--final-val-size", "200", "--final-extra-cycles", "0"]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("MLFLOW_TRACKING_URI", store)
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        assert fine.main(args + ["--study-name", "weak", "--grid", "5", "--no-race"]) == 0
        assert fine.main(args + ["--grid", "0,0.001,0.01,3", "--n-seeds", "3", "--race-seeds", "2",
                                 "--max-seeds", "7"]) == 0
        assert fine.main(args + ["--study-name", "worse", "--grid", "5", "--no-race"]) == 0
        report = write_report(Sources(store, storage=storage), folder / "report.html")
    client = MlflowClient(store, registry_uri=store)
    study = optuna.load_study(study_name="fine", storage=storage)
    experiment = client.get_experiment_by_name("clrsearch").experiment_id
    (run,) = client.search_runs([experiment], "tags.level = 'study' and tags.study_name = 'fine'")
    return SimpleNamespace(page=Page(report.path.read_text()), report=report, client=client, study=study, run=run,
                           experiment=experiment, folder=folder)


@pytest.mark.slow
def test_the_race_is_the_one_the_fine_study_recorded_with_its_figures(raced):
    study, section = raced.study, raced.page.sections["race"]
    end, rounds, left = (study.user_attrs[key] for key in ("race_end", "race_rounds", "race_left"))
    assert rounds, "the race must go past its first round for this test"
    assert section["class"] == "present", section["missing"]
    lams = {t.user_attrs["point"]: t.params["lam"] for t in study.trials}

    def named(point):
        return f"{point} (lam = {lams[int(point)]:g})"

    text = " ".join(section["text"].split())
    assert (f"The race stopped after round {end['round']} at {end['replicates']} replicates: {end['reason']}. "
            f"Left in it: {', '.join(named(p) for p in end['points'])};") in text
    assert f"δ = {100 * end['delta']:g} accuracy points, α = {end['alpha']:g}" in text
    for number, decided in rounds.items():
        assert [number, ", ".join(named(p) for p in decided["points"]),
                f"{len(decided['replicates'])} ({', '.join(map(str, decided['replicates']))})"] in section["rows"]
    assert [[named(p), str(r)] for p, r in sorted(left.items())] == [
        row for row in section["rows"] if len(row) == 2 and row != ["point", "left after round"]]
    logged = {name: Path(raced.client.download_artifacts(raced.run.info.run_id, name, str(raced.folder / "got")))
              .read_bytes() for name in ("race.png", "race_mcb.png")}
    assert [png_of(src) for src in section["images"]] == [logged["race.png"], logged["race_mcb.png"]]


@pytest.mark.slow
def test_the_best_set_and_p_best_are_those_of_the_study_and_its_trial_runs(raced):
    section = raced.page.sections["best-set"]
    assert section["class"] == "present", section["missing"]
    verdicts = raced.study.user_attrs["verdicts"]  # trial -> p_best, best_set, as the study recorded them
    trial_runs = raced.client.search_runs([raced.experiment], "tags.level = 'trial' and tags.study_name = 'fine'")
    for run in trial_runs:  # the trial runs say the same
        if run.data.tags["trial"] in verdicts:
            v = verdicts[run.data.tags["trial"]]
            assert run.data.metrics["p_best"] == pytest.approx(v["p_best"])
            assert run.data.tags["best_set"] == str(v["best_set"])
    shown = {row[0]: row for row in section["rows"][1:]}
    assert set(shown) == set(verdicts)
    for number, v in verdicts.items():
        assert shown[number][-2:] == ["yes" if v["best_set"] else "no", f"{v['p_best']:.3f}"]
    assert sum(float(row[-1]) for row in shown.values()) == pytest.approx(1, abs=0.003)
    members = [n for n, v in verdicts.items() if v["best_set"]]
    assert raced.run.data.metrics["best_set_size"] == len(members)
    text = " ".join(section["text"].split())
    assert "Best set (MCB, simultaneous 95%): trial " in text
    for n in members:
        assert f"trial {n} (lam = " in text


@pytest.mark.slow
def test_the_compute_is_the_updates_the_fine_study_trained(raced):
    section = raced.page.sections["compute"]
    assert section["class"] == "partial" and "clrsearch.coarse" in section["missing"][0]  # no coarse study here
    m, p = raced.run.data.metrics, raced.run.data.params
    # every trial of the race trained its new replicates' networks for the whole schedule
    steps = 2 * int(p["train.n_s"]) * int(p["train.cycles"])
    updates = sum(len(t.user_attrs["new_replicates"]) for t in raced.study.trials) * steps
    assert m["network_updates"] == updates
    (row,) = section["rows"][1:]
    assert row == ["fine 'fine'", raced.run.info.run_id[:8], f"{updates:,}", f"{m['full_training_equivalents']:.1f}",
                   f"{100 * m['fraction_of_exhaustive']:.1f} %"]
    assert m["full_training_equivalents"] == pytest.approx(updates / steps)
    assert m["fraction_of_exhaustive"] == pytest.approx(updates / (4 * 7 * steps))  # 4 points x 7 replicates


@pytest.mark.slow
def test_the_champion_is_compared_with_the_previous_champion_and_the_challenger_with_it(raced):
    client, name = raced.client, "clrsearch-cifar10"
    assert {a: str(v) for a, v in client.get_registered_model(name).aliases.items()} == {"champion": "2",
                                                                                          "challenger": "3"}
    v1, v2, v3 = (client.get_model_version(name, str(k)) for k in (1, 2, 3))
    champion = raced.page.sections["champion"]
    assert champion["class"] == "present"
    assert (f"Version 2: test accuracy {pct(float(v2.tags['test_accuracy']))}; champion: "
            f"{v2.tags['champion_reason']}") in " ".join(champion["text"].split())
    section = raced.page.sections["comparison"]
    assert section["class"] == "present", section["missing"]
    assert section["rows"][1:] == [
        [f"{label}, version {v.version}", pct(float(v.tags["test_accuracy"])), f"version {before.version}",
         pct(float(before.tags["test_accuracy"])), f"{100 * float(v.tags['accuracy_difference']):+.2f}",
         v.tags["mcnemar_p"], decision, v.tags["champion_reason"]]
        for label, v, before, decision in (("champion", v2, v1, "champion"), ("challenger", v3, v2, "challenger"))]
    assert v2.tags["compared_with_version"] == "1" and v3.tags["compared_with_version"] == "2"
    assert float(v2.tags["accuracy_difference"]) == pytest.approx(
        float(v2.tags["test_accuracy"]) - float(v1.tags["test_accuracy"]), abs=1e-4)
    text = " ".join(section["text"].split())
    assert "champion, version 2: Against the champion, version 1:" in text
    assert "challenger, version 3: Against the champion, version 2:" in text
