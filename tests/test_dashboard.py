"""optuna-dashboard in headless Chromium, over the storage of a tiny coarse and fine study (``conftest.tiny_studies``).

``optuna-dashboard`` (the ``dashboard`` extra) runs on a loopback port;
Debian's ``chromium`` is driven through Playwright. The study list shows the
coarse and the fine study, and opening either from it shows its history: one
point per finished trial, at the trial's number and value, and its best trial.
A trial's page shows all its user attributes (verdict, p_vs_best, ...), and
the README's pictures of the dashboard are taken. What the pages should show
is read from the storage with Optuna itself; the two studies have different
numbers of trials, so that the wrong study cannot pass for the right one.
Screenshots and the dashboard's log go to a temporary folder. Skipped when
Chromium, Playwright or optuna-dashboard is missing.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

import screenshots

pytestmark = [pytest.mark.ui, pytest.mark.slow]
expect = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)").expect
pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed (pip install -e '.[dashboard]')")
FINE_TRIALS = 2  # the grid of conftest.tiny_studies, lambda 0 and 0.01


@dataclass
class Dashboard:
    url: str  # of the dashboard
    browser: object  # playwright Browser
    page: object  # playwright Page
    seen: screenshots.Tour  # what the README's pictures show, read from the MLflow store
    storage: str  # Optuna storage URL the studies are in
    coarse_trials: int  # in the coarse study
    artifacts: Path  # screenshots and the dashboard's log


@pytest.fixture(scope="module")
def dashboard(request, tmp_path_factory):
    if not Path(screenshots.SETTINGS.chromium).is_file():
        pytest.skip(f"no Chromium at {screenshots.SETTINGS.chromium} (apt-get install chromium)")
    studies = request.getfixturevalue("tiny_studies")  # only once Chromium is there
    artifacts = tmp_path_factory.mktemp("dashboard-artifacts")
    with screenshots.optuna_dashboard(studies.storage, log_path=artifacts / "dashboard.log") as url, \
            screenshots.chromium() as browser:
        seen = screenshots.tour(MlflowClient(studies.store, registry_uri=studies.store))
        yield Dashboard(url, browser, screenshots.new_page(browser), seen, studies.storage, studies.coarse_trials,
                        artifacts)


def finished(storage: str, name: str) -> list:
    """The complete trials of the study ``name``, in number order."""
    study = optuna.load_study(study_name=name, storage=storage)
    return sorted(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: t.number)


def study_id(storage: str, name: str) -> int:
    """The storage's id of the study ``name``, which the dashboard shows and puts in its URLs."""
    return optuna.storages.get_storage(storage).get_study_id_from_name(name)


def test_the_studies_have_different_numbers_of_trials(dashboard):
    assert [len(finished(dashboard.storage, name)) for name in ("coarse", "fine")] == [dashboard.coarse_trials,
                                                                                       FINE_TRIALS]
    assert dashboard.coarse_trials != FINE_TRIALS


def test_study_list_shows_the_coarse_and_the_fine_study(dashboard):
    page = dashboard.page
    names = optuna.get_all_study_names(storage=dashboard.storage)
    assert sorted(names) == ["coarse", "fine"]
    titles = screenshots.open_studies(page, dashboard.url, names)
    for name, title in zip(names, titles):
        expect(title).to_have_text(f"{study_id(dashboard.storage, name)}. {name}")
    expect(page.get_by_text("Direction: MAXIMIZE", exact=True)).to_have_count(2)
    screenshots.save(page, dashboard.artifacts / "studies.png", *titles)


@pytest.mark.parametrize("name", ["coarse", "fine"])
def test_opening_a_study_shows_its_history_and_best_trial(dashboard, name):
    page = dashboard.page
    study = optuna.load_study(study_name=name, storage=dashboard.storage)
    trials = finished(dashboard.storage, name)
    (title,) = screenshots.open_studies(page, dashboard.url, [name])
    title.click()

    number = study_id(dashboard.storage, name)
    expect(page).to_have_url(f"{dashboard.url}/dashboard/studies/{number}")
    expect(page.get_by_text(f"{name} (id={number})", exact=True)).to_be_visible()
    expect(screenshots.history_points(page)).to_have_count(len(trials))
    trace = screenshots.history_trace(page, name)
    assert trace is not None, f"no objective trace of {name!r} in the history plot"
    assert trace["x"] == [trial.number for trial in trials]
    assert trace["y"] == pytest.approx([trial.value for trial in trials])
    expect(page.get_by_role("heading", name=f"Best Trial (number={study.best_trial.number})", exact=True)
           ).to_be_visible()
    screenshots.save(page, dashboard.artifacts / f"{name}.png", screenshots.history_points(page))


def test_trial_page_shows_all_user_attributes_of_the_trial_closest_to_the_best(dashboard):
    page, seen = dashboard.page, dashboard.seen
    assert seen.study_name == "fine"
    trial = optuna.load_study(study_name="fine", storage=dashboard.storage).trials[seen.challenger]
    assert trial.user_attrs["verdict"] in ("tied", "worse")
    screenshots.open_study(page, dashboard.url, "fine")
    attributes = screenshots.open_trial(page, seen.challenger)
    for key in ("verdict", "p_vs_best", "replicates"):
        value = trial.user_attrs[key]
        shown = value if isinstance(value, str) else json.dumps(value)  # strings as they are, the rest as JSON
        expect(attributes.get_by_text(f"{key} {shown}", exact=True)).to_be_visible()
    assert attributes.evaluate("box => box.scrollHeight <= box.clientHeight")  # nothing hidden below


def test_readme_screenshots_show_the_history_and_a_trial(dashboard):
    paths = screenshots.take_dashboard(dashboard.browser, dashboard.url, dashboard.artifacts / "readme",
                                       dashboard.seen)
    assert [path.name for path in paths] == ["optuna_history.png", "optuna_trial.png"]
    for path in paths:
        with Image.open(path) as png:
            assert png.format == "PNG" and png.width == screenshots.SETTINGS.viewport_width
            assert 300 < png.height <= screenshots.SETTINGS.dashboard_viewport_height
