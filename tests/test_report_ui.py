"""The report (``python -m clrsearch.report``) of the tiny studies (``conftest.tiny_studies``) in headless
Chromium: every embedded figure decodes and renders, and a screenshot of the page's top is taken as the README's
would be. Screenshots go to a temporary folder. Skipped when Chromium or Playwright is missing (see
tests/test_ui.py)."""

from pathlib import Path

import pytest
from PIL import Image

import screenshots
from clrsearch.report import Sources, write_report

pytestmark = [pytest.mark.ui, pytest.mark.slow]
pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")


@pytest.fixture(scope="module")
def report_page(request, tmp_path_factory):
    if not Path(screenshots.SETTINGS.chromium).is_file():
        pytest.skip(f"no Chromium at {screenshots.SETTINGS.chromium} (apt-get install chromium)")
    studies = request.getfixturevalue("tiny_studies")
    folder = tmp_path_factory.mktemp("report-ui")
    report = write_report(Sources(studies.store, storage=studies.storage), folder / "report.html", attach=False)
    with screenshots.chromium() as browser:
        page = browser.new_page(viewport=screenshots.SETTINGS.viewport)
        page.goto(report.path.as_uri())
        page.wait_for_load_state("load")
        yield page, report, folder


def test_every_figure_of_the_report_renders(report_page):
    page, report, _ = report_page
    sizes = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(sizes) == report.path.read_text().count("<img ") >= 7  # coarse, fine (2 each), final model (3)
    assert all(complete and width > 0 and height > 0 for complete, width, height in sizes), sizes


def test_a_screenshot_of_the_report_for_the_readme(report_page):
    page, _, folder = report_page
    path = folder / "report.png"
    page.screenshot(path=str(path))
    with Image.open(path) as png:
        assert png.format == "PNG"
        assert png.size == (screenshots.SETTINGS.viewport_width, screenshots.SETTINGS.viewport_height)
