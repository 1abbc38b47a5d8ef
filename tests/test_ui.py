"""The MLflow UI in headless Chromium, over a store that a tiny coarse and fine study just wrote.

``mlflow server`` runs on a loopback port; Debian's ``chromium`` is driven
through Playwright. The runs page lists the fine study's run with its trial
runs nested under it, a seed run's artifacts page shows its confusion matrix,
and the model page shows ``clrsearch-cifar10`` with the alias ``champion``.
Screenshots (also those of ``python -m clrsearch.screenshots``) and the
server's log go to ``.ci/artifacts/ui/``. Skipped when Chromium or Playwright
is missing.
"""

from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from clrsearch import coarse, fine, screenshots, tracking
from conftest import write_tiny_cifar
from test_search import TINY

expect = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)").expect
ARTIFACTS = Path(__file__).resolve().parents[1] / ".ci" / "artifacts" / "ui"


@dataclass
class UI:
    url: str  # of the server
    browser: object  # playwright Browser
    page: object  # playwright Page
    client: MlflowClient  # on the store itself
    seen: screenshots.Tour


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    if not Path(screenshots.CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {screenshots.CHROMIUM} (apt-get install chromium)")
    folder = tmp_path_factory.mktemp("ui")
    args = ["--data-dir", str(write_tiny_cifar(folder / "data")), *TINY]
    store = f"sqlite:///{folder}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("MLFLOW_TRACKING_URI", store)
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        assert coarse.main(args + ["--n-trials", "2"]) == 0
        assert fine.main(args + ["--grid", "0,0.01", "--final-cycles", "1"]) == 0
    client = MlflowClient(store, registry_uri=store)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with screenshots.mlflow_server(store, folder / "mlruns", log_path=ARTIFACTS / "server.log") as url, \
            screenshots.chromium() as browser:
        yield UI(url, browser, screenshots.new_page(browser), client, screenshots.tour(client))


def test_the_tour_is_the_fine_study_its_grid_and_the_first_model_version(ui):
    assert ui.seen.study_run == "fine:fine"
    assert ui.seen.trial_runs == ("trial-0 lam=0", "trial-1 lam=0.01")
    assert ui.seen.model_version == "1"


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
    screenshots.save(page, ARTIFACTS / "runs.png", page.get_by_role("row"))
    # Newest first: the fine study, its nested runs indented under it, then the coarse study.
    top, below = parent.bounding_box(), other.bounding_box()
    for link in trials:
        box = link.bounding_box()
        assert top["y"] < box["y"] < below["y"]
        assert box["x"] > top["x"]


def test_seed_run_artifacts_page_shows_the_confusion_matrix(ui, tmp_path):
    page, seen = ui.page, ui.seen
    image = screenshots.open_artifact(page, ui.url, seen.experiment_id, seen.seed_run_id, "confusion_val.png")
    screenshots.save(page, ARTIFACTS / "confusion.png", image)
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
    screenshots.save(page, ARTIFACTS / "model.png", row)


def test_readme_screenshots_show_the_runs_table_confusion_matrix_and_model(ui):
    paths = screenshots.take(ui.browser, ui.url, ARTIFACTS / "readme", ui.seen)
    assert [path.name for path in paths] == ["mlflow_runs.png", "mlflow_confusion.png", "mlflow_model.png"]
    for path in paths:
        with Image.open(path) as png:
            assert png.format == "PNG" and png.width == screenshots.VIEWPORT["width"]
            assert 300 < png.height <= screenshots.VIEWPORT["height"]
