"""``python -m clrsearch.report`` (:mod:`clrsearch.report`, :mod:`clrsearch.cli.report`) over tiny tracked stores:
its sections, their numbers read back independently with ``MlflowClient`` and Optuna, what it says is missing,
and the report logged to the fine study run.

- a store of ``train`` and ``gradcheck`` runs only: those sections are there, the studies' are missing (slow);
- the tiny coarse and fine studies (``conftest.tiny_studies``), read without writing: the studies' sections are
  there, the ``train`` ones missing (slow);
- a study, registry and fine study run written by the test itself: the race, the best set, P(best), the
  champion and its comparison are read from the names of ``clrsearch.report.sections``.
"""
import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from clrsearch import gradcheck as gradcheck_command
from clrsearch import train as train_command
from clrsearch.cli import report as command
from clrsearch.report import REPORT_ARTIFACT, Sources, sections, write_report
from helpers import read_raw_batch

SMALL = ["--n-s", "10", "--n-batch", "20", "--hidden", "8", "--quiet"]
PNG = b"\x89PNG\r\n\x1a\n"
ORIGINAL_REPORT = ("fig3", "46.01 %"), ("fig4", "47.29 %"), ("best", "51.14 %"), ("best", "52.50 %")


class Page(HTMLParser):
    """Each ``<section id=...>`` of a page: its class, text, the ``src`` of its images and its missing lines."""

    def __init__(self, text):
        super().__init__()
        self.sections, self._current, self._in_missing = {}, None, False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self._current = {"class": attrs.get("class", ""), "text": "", "images": [], "missing": []}
            self.sections[attrs["id"]] = self._current
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

    def handle_data(self, data):
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
    assert len(page.sections["best"]["images"]) == 3
    champion = client.get_model_version_by_alias("clrsearch-cifar10", "champion")
    assert pct(float(champion.tags["test_accuracy"])) in page.sections["champion"]["text"]
    assert REPORT_ARTIFACT not in [f.path for f in client.list_artifacts(final.data.tags["mlflow.parentRunId"])]


# ----------------------------------------------------------------------------- what clrsearch adds, written here


# A fine study's trials table as the study run logs it, two points, no lambda figure beside it.
TRIALS_CSV = """trial,point,lam,state,mean_val_accuracy,std_val_accuracy,replicates,val_accuracies,delta_vs_best,\
ci_low,ci_high,p_vs_best,verdict,rounds,left_race,reason
0,0,0.0,COMPLETE,0.5125,0.004,3,0.5100 0.5100 0.5175,-0.0075,-0.012,-0.003,0.021,worse,1,1,
1,1,0.001,COMPLETE,0.52,0.002,3,0.5200 0.5180 0.5220,nan,nan,nan,nan,best,1,,
"""


@pytest.fixture
def added(tmp_path, mlflow_template, study_url):
    """A store with a finished fine study run, a registered model of two versions (the second the champion,
    tagged with its comparison) and an Optuna fine study whose user attrs hold a race, a best set and P(best)."""
    import helpers

    uri = helpers.copy_store(mlflow_template, tmp_path)
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment("clrsearch", artifact_location=str(tmp_path / "mlruns"))
    older = client.create_run(experiment, tags={"level": "study", "study_name": "fine"}, run_name="fine:old")
    client.set_terminated(older.info.run_id, "FINISHED")
    run = client.create_run(experiment, tags={"level": "study", "study_name": "fine"}, run_name="fine:fine")
    (tmp_path / "trials.csv").write_text(TRIALS_CSV)
    client.log_artifact(run.info.run_id, str(tmp_path / "trials.csv"))  # no figures: the report draws the λ plot
    client.set_terminated(run.info.run_id, "FINISHED")
    name = "clrsearch-cifar10"
    client.create_registered_model(name)
    client.create_model_version(name, "file:///nowhere/1", tags={"test_accuracy": "0.5500"})
    client.create_model_version(name, "file:///nowhere/2", tags={
        "test_accuracy": "0.5612", sections.PREVIOUS_CHAMPION_TAG: "1", sections.MCNEMAR_P_TAG: "0.031"})
    client.set_registered_model_alias(name, "champion", "2")
    study = optuna.create_study(study_name="fine", storage=study_url)
    for key, value in {"seeds": [0, 1, 2], "race_rounds": {"2": {"points": [1, 3], "replicates": [3, 4, 5]}},
                       "race_left": {"0": 1, "1": 2, "3": 2}, sections.BEST_SET_ATTR: [1, 3],
                       sections.P_BEST_ATTR: {"1": 0.7, "3": 0.3}}.items():
        study.set_user_attr(key, value)
    return Sources(uri, storage=study_url), client, run.info.run_id, older.info.run_id


def test_race_best_set_champion_and_comparison_are_read_from_their_names(added, tmp_path):
    sources, client, _, _ = added
    report = write_report(sources, tmp_path / "out" / "r.html", attach=False)
    page = Page(report.path.read_text())
    for section in ("race", "best-set", "champion", "comparison"):
        assert page.sections[section]["class"] == "present", (section, page.sections[section]["missing"])
    race = " ".join(page.sections["race"]["text"].split())
    assert "2 1, 3 3 (3, 4, 5)" in race and "1 every point 3 (0, 1, 2)" in race
    best_set = page.sections["best-set"]["text"]
    assert "Best set: 1, 3." in best_set and "0.700" in best_set and "0.300" in best_set
    assert "56.12 %" in page.sections["champion"]["text"]
    comparison = page.sections["comparison"]["text"]
    assert "56.12 %" in comparison and "55.00 %" in comparison and "0.031" in comparison


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
    assert listed.count("; run python -m clrsearch.") == len(report.missing) == 14
