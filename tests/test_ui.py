"""The MLflow UI in headless Chromium, over the store of a tiny coarse and fine study (``conftest.tiny_studies``).

``mlflow server`` runs on a loopback port; Debian's ``chromium`` is driven
through Playwright. The runs page lists the fine study's run with its trial
runs nested under it, the study run's page its description (the summary table)
and datasets, a seed run's artifacts page shows its confusion matrix, the
model page shows ``clrsearch-cifar10`` with the alias ``champion`` and the
version's page its description and tags.
Screenshots (also those of ``python tools/screenshots.py``) and the server's
log go to a temporary folder, never into the repository. Skipped when Chromium
or Playwright is missing.
"""

import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

import screenshots
from clrsearch import tracking

pytestmark = [pytest.mark.ui, pytest.mark.slow]
expect = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)").expect


@dataclass
class UI:
    url: str  # of the server
    browser: object  # playwright Browser
    page: object  # playwright Page
    client: MlflowClient  # on the store itself
    seen: screenshots.Tour
    artifacts: Path  # screenshots and the server's log


@pytest.fixture(scope="module")
def ui(request, tmp_path_factory):
    if not Path(screenshots.SETTINGS.chromium).is_file():
        pytest.skip(f"no Chromium at {screenshots.SETTINGS.chromium} (apt-get install chromium)")
    studies = request.getfixturevalue("tiny_studies")  # only once Chromium is there
    store = studies.store
    client = MlflowClient(store, registry_uri=store)
    artifacts = tmp_path_factory.mktemp("ui-artifacts")
    with screenshots.mlflow_server(store, studies.folder / "mlruns", log_path=artifacts / "server.log") as url, \
            screenshots.chromium() as browser:
        yield UI(url, browser, screenshots.new_page(browser), client, screenshots.tour(client), artifacts)


def test_the_tour_is_the_fine_study_its_grid_and_the_first_model_version(ui):
    assert ui.seen.study_run == "fine:fine"
    assert ui.client.get_run(ui.seen.study_run_id).info.run_name == "fine:fine"
    assert ui.seen.study_name == "fine"
    assert ui.seen.trial_runs == ("trial-0 lam=0", "trial-1 lam=0.01")
    assert ui.seen.searched == ("lam",)
    assert ui.seen.model_version == "1"


def test_the_tour_shows_the_trial_closest_to_the_best_in_the_dashboard(ui):
    trials = tracking.child_runs(ui.seen.experiment_id, ui.seen.study_run_id, "trial", ui.client)
    verdicts = {int(t.data.tags["trial"]): t.data.tags.get("verdict") for t in trials}
    assert sorted(verdicts) == [0, 1]
    assert verdicts[ui.seen.challenger] in ("tied", "worse")
    assert verdicts[1 - ui.seen.challenger] == "best"


def test_runs_page_lists_the_study_run_with_its_trial_runs_nested_under_it(ui):
    page, seen = ui.page, ui.seen
    parent = screenshots.open_runs(page, ui.url, seen.experiment_id, seen.study_run)
    other = screenshots.run_link(page, "coarse:coarse")
    other.wait_for()
    trials = [screenshots.run_link(page, name) for name in seen.trial_runs]
    assert [link.count() for link in trials] == [0, 0]  # collapsed under their parent

    screenshots.expand_run(page, seen.study_run)
    for link in trials:
        expect(link).to_be_visible()
    screenshots.save(page, ui.artifacts / "runs.png", page.get_by_role("row"))
    # Newest first: the fine study, its nested runs indented under it, then the coarse study.
    top, below = parent.bounding_box(), other.bounding_box()
    for link in trials:
        box = link.bounding_box()
        assert top["y"] < box["y"] < below["y"]
        assert box["x"] > top["x"]


def test_seed_run_artifacts_page_shows_the_confusion_matrix(ui, tmp_path):
    page, seen = ui.page, ui.seen
    image = screenshots.open_artifact(page, ui.url, seen.experiment_id, seen.seed_run_id, "confusion_val.png")
    screenshots.save(page, ui.artifacts / "confusion.png", image)
    expect(image).to_be_visible()
    expect(page.get_by_role("heading", name="seed-0", exact=True)).to_be_visible()
    logged = Path(ui.client.download_artifacts(seen.seed_run_id, "confusion_val.png", str(tmp_path)))
    with Image.open(logged) as png:
        assert tuple(image.evaluate("image => [image.naturalWidth, image.naturalHeight]")) == png.size


def test_model_page_shows_the_registered_model_with_its_champion_alias(ui):
    page = ui.page
    row = screenshots.open_model(page, ui.url, tracking.REGISTERED_NAME, ui.seen.model_version)
    expect(page.get_by_role("heading", name=tracking.REGISTERED_NAME, exact=True)).to_be_visible()
    expect(screenshots.alias_tag(row, tracking.ALIAS)).to_be_visible()
    screenshots.save(page, ui.artifacts / "model.png", row)


def test_study_run_page_shows_its_description_table_and_datasets(ui):
    page, seen = ui.page, ui.seen
    fold = screenshots.open_run(page, ui.url, seen.experiment_id, seen.study_run_id)
    expect(fold).to_be_visible()
    note = ui.client.get_run(seen.study_run_id).data.tags["mlflow.note.content"]
    (best,) = [line.strip("*") for line in note.splitlines() if line.startswith("**Best: trial ")]
    expect(page.get_by_text(best, exact=True)).to_be_visible()
    expect(page.get_by_role("columnheader", name="Δ vs best [95% CI]", exact=True)).to_be_visible()
    names = [d.dataset.name for d in ui.client.get_run(seen.study_run_id).inputs.dataset_inputs]
    expect(screenshots.datasets(page).first).to_have_text(re.compile(rf"^({'|'.join(names)}) \("))


def test_version_page_shows_its_description_and_tags(ui):
    page = ui.page
    version = ui.client.get_model_version(tracking.REGISTERED_NAME, ui.seen.model_version)
    rows = screenshots.open_version(page, ui.url, tracking.REGISTERED_NAME, ui.seen.model_version)
    first_line = version.description.splitlines()[0]
    assert first_line.startswith("Final model of the study ")
    expect(page.get_by_text("Final model of the study", exact=False).first).to_be_visible()
    expect(rows.filter(has_text="test_accuracy")).to_contain_text(version.tags["test_accuracy"])


def test_readme_screenshots_show_the_runs_table_study_confusion_matrix_model_and_version(ui):
    paths = screenshots.take(ui.browser, ui.url, ui.artifacts / "readme", ui.seen)
    assert [path.name for path in paths] == ["mlflow_runs.png", "mlflow_study.png", "mlflow_confusion.png",
                                             "mlflow_model.png", "mlflow_version.png"]
    for path in paths:
        with Image.open(path) as png:
            assert png.format == "PNG" and png.width == screenshots.SETTINGS.viewport_width
            assert 300 < png.height <= screenshots.SETTINGS.viewport_height


def test_the_report_opens_from_the_fine_study_run_in_the_ui(ui, request):
    """Last in this file: it logs report.html to the fine study run of the shared tiny store."""
    from clrsearch.report import Sources, write_report

    studies = request.getfixturevalue("tiny_studies")
    report = write_report(Sources(studies.store, storage=studies.storage), ui.artifacts / "report.html")
    assert report.run_id == ui.seen.study_run_id
    experiment = ui.client.get_run(report.run_id).info.experiment_id
    ui.page.goto(f"{ui.url}/#/experiments/{experiment}/runs/{report.run_id}/artifacts/report.html")
    title = "clrsearch: the report, regenerated from what is tracked"

    def shown():
        return any(title in frame.content() for frame in ui.page.frames if frame != ui.page.main_frame)

    deadline = time.monotonic() + screenshots.SETTINGS.wait_ms / 1000
    while not shown() and time.monotonic() < deadline:
        ui.page.wait_for_timeout(250)
    assert shown(), "the artifact view shows no frame holding the report"
    ui.page.screenshot(path=str(ui.artifacts / "mlflow_report.png"))
