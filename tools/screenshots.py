"""Screenshots of the MLflow UI and optuna-dashboard over a study's stores, for the README.

    python tools/screenshots.py [--tracking-uri URI] [--storage URL] [--out docs/images] [--chromium PATH]

Starts ``mlflow server`` over the tracking store (``$MLFLOW_TRACKING_URI``,
else ``mlflow.db`` in the working directory, artifacts in ``mlruns/`` beside
it) and ``optuna-dashboard`` over the Optuna storage (default
``sqlite:///studies/clrsearch.db``), each on a free loopback port, drives
headless Chromium through Playwright and writes

    mlflow_runs.png       the runs table, the latest study run expanded: its trial runs with their
                          datasets, durations, parameters and scores
    mlflow_study.png      that study run's page: its description (the summary table), duration, datasets
    mlflow_confusion.png  the validation confusion matrix of a seed of that study's best trial
    mlflow_model.png      the registered model clrsearch-cifar10, its versions' tags and the alias champion
    mlflow_version.png    the champion version's page: its description and tags
    mlflow_report.png     the study run's report.html (python -m clrsearch.report) in MLflow's artifact view
    optuna_history.png    the study's page in optuna-dashboard: the history of its trials
    optuna_trial.png      the trial closest to the best there: its value and user attributes (verdict, p_vs_best)

and with ``--report HTML`` only ``report.png``, the first screen of the report of
``python -m clrsearch.report``.

The browser is Debian's ``chromium`` package; Playwright only drives it (``pip
install playwright``, no browser download); optuna-dashboard is the
``dashboard`` extra. The server and browser helpers here are also those of the
UI tests, tests/test_ui.py and tests/test_dashboard.py. Sizes, waits and what
the runs table shows are the fields of :class:`ScreenshotSettings`.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient

from clrsearch import tracking
from clrsearch.cli.args import ArgumentParser, entry_point
from clrsearch.config import DEFAULT_STORAGE
from clrsearch.errors import UsageError


@dataclass(frozen=True)
class ScreenshotSettings:
    """The browser, the waits, and what the README's pictures show; ``SETTINGS`` is the one in use."""

    chromium: str = "/usr/bin/chromium"  # path of the browser executable (Debian's chromium package)
    chromium_flags: tuple = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                             "--disable-component-update", "--disable-sync", "--no-first-run")  # its command line
    viewport_width: int = 1280  # CSS pixels (one device pixel each), width of every page and screenshot
    viewport_height: int = 800  # CSS pixels, height of every page, the tallest a screenshot gets
    wait_ms: int = 20_000  # milliseconds, longest wait for an expected element of a page
    server_start_s: float = 90.0  # seconds, longest wait for a new server's /health
    dashboard_server: str = "wsgiref"  # optuna-dashboard's --server: one process, nothing written outside it
    margin: int = 16  # CSS pixels of page kept below the last element a screenshot must show
    dashboard_viewport_height: int = 900  # CSS pixels, height of optuna-dashboard's pages: a trial's attributes
    # Columns of the README's runs table, each toggled in the column menu: Source and Models (shown by
    # default) off, which leaves room to the Dataset and Duration columns, and what each trial scored;
    # the parameters the study searched (Tour.searched) are toggled on as well.
    doc_columns: tuple = ("Source", "Models", "mean_val_accuracy", "std_val_accuracy")
    # (column, CSS pixels) added to (or, negative, taken from) columns of the README's runs table, so that
    # "trial-41 lam=0.0022" fits and a dataset's name and digest leave room to the parameters.
    widening: tuple = (("Run Name", 40), ("Created", -25), ("Dataset", -35))

    @property
    def viewport(self) -> dict:
        """The viewport as Playwright takes it: ``{"width": ..., "height": ...}``."""
        return {"width": self.viewport_width, "height": self.viewport_height}

    @property
    def dashboard_viewport(self) -> dict:
        """The viewport of optuna-dashboard's pages, as Playwright takes it."""
        return {"width": self.viewport_width, "height": self.dashboard_viewport_height}


SETTINGS = ScreenshotSettings()

# The UI's own settings in the browser's local storage, set before its scripts run: the
# model-training view of the sidebar and run pages, and the assistant panel not opened by itself.
UI_SETTINGS = {"mlflow.workflowType_v1": '"machine_learning"',
               "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
               "mlflow.assistant.panelOpen_v1": "false"}
ASSISTANT_CLOSE = '[data-component-id="mlflow.assistant.chat_panel.close"]'
DASHBOARD_HISTORY = "plot-history"  # element id of optuna-dashboard's history plot (Plotly) on a study's page


# --- the server ---------------------------------------------------------------------------------

def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(store_uri: str, artifact_root, log_path=None, timeout: float | None = None):
    """``mlflow server`` over ``store_uri`` on a free loopback port, for the block.

    The server and its workers form their own process group, ended with the
    block. Its output goes to ``log_path`` (a temporary file when None).

    Parameters
    ----------
    store_uri : str, backend (and registry) store, e.g. ``sqlite:////abs/path/mlflow.db``
    artifact_root : path, artifact folder of experiments the server creates
    log_path : path, optional
    timeout : float, seconds to wait for ``/health`` (default ``SETTINGS.server_start_s``)

    Yields
    ------
    str, the server's base URL, e.g. ``http://127.0.0.1:41234``

    Raises
    ------
    RuntimeError
        The server exited or did not answer in time; the message ends with its last output.
    """
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store_uri,
               "--default-artifact-root", str(Path(artifact_root).resolve()),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    with _serving("mlflow server", command, port, "/health", env, log_path, timeout) as url:
        yield url


@contextlib.contextmanager
def optuna_dashboard(storage: str, log_path=None, timeout: float | None = None):
    """``optuna-dashboard`` over the Optuna storage ``storage`` on a free loopback port, for the block.

    Needs the ``dashboard`` extra (``pip install 'clrsearch[dashboard]'``). The
    server (``SETTINGS.dashboard_server``) is its own process group, ended with
    the block; its output goes to ``log_path`` (a temporary file when None).

    Yields
    ------
    str, the dashboard's base URL; its pages are under ``/dashboard``

    Raises
    ------
    UsageError
        optuna-dashboard is not installed.
    RuntimeError
        The server exited or did not answer in time; the message ends with its last output.
    """
    executable = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent) + os.pathsep
                              + os.environ.get("PATH", ""))
    if executable is None:
        raise UsageError("optuna-dashboard is not installed: pip install optuna-dashboard "
                         "(or pip install -e '.[dashboard]')")
    port = free_port()
    command = [executable, storage, "--host", "127.0.0.1", "--port", str(port),
               "--server", SETTINGS.dashboard_server]
    with _serving("optuna-dashboard", command, port, "/api/meta", {}, log_path, timeout) as url:
        yield url


@contextlib.contextmanager
def _serving(name: str, command: list, port: int, health: str, env: dict, log_path, timeout):
    """Run ``command``, a server on ``port`` of 127.0.0.1, until the block ends; yield its URL once
    ``health`` answers 200. ``env`` is added to this process's environment."""
    timeout = SETTINGS.server_start_s if timeout is None else timeout
    url = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        if log_path is None:
            log_path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="clrsearch-"))) / "server.log"
        log = stack.enter_context(open(log_path, "wb"))
        server = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, **env}, start_new_session=True)
        stack.callback(_stop, server)
        _wait_for(name, url + health, server, timeout, Path(log_path))
        yield url


def _wait_for(name: str, url: str, server: subprocess.Popen, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"{name} exited with status {server.returncode}:\n{_tail(log_path)}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} at {url} did not answer within {timeout:g} s:\n{_tail(log_path)}")
        time.sleep(0.2)  # polling interval: the server has no other way to say it is ready


def _stop(server: subprocess.Popen) -> None:
    """End the server's process group: SIGTERM, then SIGKILL after 10 s."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, sig)
        try:
            server.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


# --- the browser --------------------------------------------------------------------------------

@contextlib.contextmanager
def chromium(executable=None):
    """A headless Chromium driven by Playwright, for the block; ``executable`` defaults to ``SETTINGS.chromium``.

    Raises
    ------
    UsageError
        Playwright is not installed or there is no browser at ``executable``.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise UsageError("Playwright is not installed: pip install playwright "
                         "(or pip install -e '.[test]'); no browser download is needed") from None
    executable = SETTINGS.chromium if executable is None else executable
    if not Path(executable).is_file():
        raise UsageError(f"no Chromium at {executable}: apt-get install chromium, or give --chromium PATH")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), headless=True,
                                             args=list(SETTINGS.chromium_flags))
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser, viewport=None):
    """A page of a fresh browser context, with the UI settings of ``UI_SETTINGS``; ``SETTINGS.viewport`` by default."""
    page = browser.new_page(viewport=viewport or SETTINGS.viewport)
    page.set_default_timeout(SETTINGS.wait_ms)
    page.add_init_script("for (const [key, value] of Object.entries(%s)) "
                         "{ if (localStorage.getItem(key) === null) localStorage.setItem(key, value); }"
                         % json.dumps(UI_SETTINGS))
    return page


def close_assistant(page) -> None:
    """Close the assistant side panel, should it be open."""
    button = page.locator(ASSISTANT_CLOSE)
    if button.is_visible():
        button.click()
        button.wait_for(state="hidden")


def collapse_sidebar(page) -> None:
    """Fold the navigation sidebar to its icons, which leaves the page more width."""
    page.get_by_role("button", name="Toggle sidebar").click()
    page.get_by_text("Model registry", exact=True).wait_for(state="hidden")


def save(page, path, *shown) -> Path:
    """Screenshot of the viewport's width, from the top down to just below the lowest element of ``shown``.

    ``shown`` are locators; every visible element each one matches counts.
    """
    boxes = [element.bounding_box() for locator in shown for element in locator.all()]
    bottom = max(box["y"] + box["height"] for box in boxes if box is not None)
    size = page.viewport_size
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), clip={"x": 0, "y": 0, "width": size["width"],
                                          "height": min(size["height"], bottom + SETTINGS.margin)})
    return path


# --- the pages ----------------------------------------------------------------------------------

def run_link(page, name: str):
    """The link of the run called ``name`` in the runs table."""
    return page.get_by_role("link", name=name, exact=True)


def open_runs(page, url: str, experiment_id: str, run_name: str):
    """The experiment's runs table, once it lists the top-level run ``run_name``; returns its link."""
    page.goto(f"{url}/#/experiments/{experiment_id}/runs")
    link = run_link(page, run_name)
    link.wait_for()
    close_assistant(page)
    return link


def expand_run(page, run_name: str) -> None:
    """Click the expander of the run ``run_name``, which shows its nested runs under it."""
    row = page.get_by_role("row").filter(has=run_link(page, run_name))
    row.get_by_role("button").first.click()


def choose_columns(page, names) -> None:
    """Toggle the columns ``names`` (attributes, metrics or params; the first match) in the column menu."""
    page.get_by_role("button", name="Columns").click()
    search = page.get_by_placeholder("Search columns")
    for name in names:
        search.fill(name)
        page.get_by_test_id("column-selector-tree").locator(".du-bois-light-tree-title").filter(
            has_text=re.compile(f"^{re.escape(name)}$")).first.click()
    page.keyboard.press("Escape")
    search.wait_for(state="hidden")


def widen_column(page, column: str, pixels: int) -> None:
    """Drag the right edge of the runs table's column headed ``column`` by ``pixels`` (negative: narrower)."""
    header = page.locator(".ag-header-cell").filter(has=page.get_by_text(column, exact=True)).first
    header.locator(".ag-header-cell-resize").wait_for()
    box = header.bounding_box()
    # The resize handle straddles the edge; its right half lies under the next column's header.
    x, y = box["x"] + box["width"] - 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    # Past the drag threshold first, or the grid takes it for a click (a sort).
    page.mouse.move(x + (10 if pixels > 0 else -10), y)
    page.mouse.move(x + pixels, y)
    page.mouse.up()


def open_artifact(page, url: str, experiment_id: str, run_id: str, path: str):
    """The run's artifacts page showing the image ``path``; returns the image once it has loaded."""
    page.goto(f"{url}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{path}")
    image = page.get_by_role("img", name=Path(path).name, exact=True).first
    image.wait_for()
    page.wait_for_function("image => image.complete && image.naturalWidth > 0", arg=image.element_handle(),
                           timeout=SETTINGS.wait_ms)
    close_assistant(page)
    return image


def open_model(page, url: str, name: str, version: str, alias: str | None = None):
    """The registered model's page; returns the row of ``version`` in its versions table once it shows ``alias``."""
    page.goto(f"{url}/#/models/{name}")
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=f"Version {version}", exact=True))
    row.wait_for()
    if alias:
        alias_tag(row, alias).wait_for()
    close_assistant(page)
    return row


def alias_tag(row, alias: str):
    """The tag "@ alias" in a row of the versions table."""
    return row.get_by_text(re.compile(rf"^@\s*{re.escape(alias)}$"))


def open_run(page, url: str, experiment_id: str, run_id: str):
    """The run's overview page, its description unfolded; returns the link that folds it again."""
    page.goto(f"{url}/#/experiments/{experiment_id}/runs/{run_id}")
    page.get_by_text("Show more", exact=True).click()
    fold = page.get_by_text("Show less", exact=True)
    fold.wait_for()
    close_assistant(page)
    return fold


def datasets(page):
    """The datasets listed on a run's page, each shown as "name (digest)", the digest 8 or more hex digits."""
    return page.get_by_text(re.compile(r"^\S+ \([0-9a-f]{8,}\)$"))


def open_version(page, url: str, name: str, version: str):
    """The page of a registered model's version; returns its tags' rows once they show."""
    page.goto(f"{url}/#/models/{name}/versions/{version}")
    page.get_by_role("heading", name=f"Version {version}", exact=True).wait_for()
    rows = page.get_by_role("row")
    rows.first.wait_for()
    close_assistant(page)
    return rows


def open_studies(page, url: str, names):
    """optuna-dashboard's study list, once it shows the studies ``names``; returns their cards' titles in order."""
    page.goto(f"{url}/dashboard")
    titles = [study_title(page, name) for name in names]
    for title in titles:
        title.wait_for()
    return titles


def study_title(page, name: str):
    """The title "<id>. <name>" of the study ``name``'s card in optuna-dashboard's study list."""
    return page.get_by_text(re.compile(rf"^\d+\. {re.escape(name)}$"))


def history_points(page):
    """The points of optuna-dashboard's history plot of the open study, one per trial shown."""
    return page.locator(f"#{DASHBOARD_HISTORY} .scatterlayer .point")


def open_study(page, url: str, name: str):
    """The page of the study ``name``, opened from optuna-dashboard's study list; returns the history plot
    once its points show."""
    (title,) = open_studies(page, url, [name])
    title.click()
    history_points(page).first.wait_for()
    return page.locator(f"#{DASHBOARD_HISTORY}")


def open_trial(page, number: int):
    """The trial ``number`` of the study open in optuna-dashboard, on its trials page; returns its user
    attributes' values, unfolded."""
    page.goto(f"{page.url.split('?')[0].removesuffix('/')}/trials?numbers={number}")
    page.get_by_role("heading", name=re.compile(rf"^Trial {number} \(trial_id=\d+\)$")).wait_for()
    attributes = page.get_by_text("User Attributes", exact=True).locator("xpath=following-sibling::*[1]")
    attributes.wait_for()
    # The dashboard shows them in a box of fixed height that scrolls; unfolded, all of them show at once.
    attributes.evaluate("box => { box.style.maxHeight = 'none'; }")
    return attributes


def history_trace(page, study_name: str) -> dict:
    """The trial numbers and values of the history plot's objective trace: ``{"x": [...], "y": [...]}``."""
    return page.evaluate("([id, name]) => { const t = document.getElementById(id).data.find(t => t.name === name);"
                         " return t ? {x: Array.from(t.x), y: Array.from(t.y)} : null; }",
                         [DASHBOARD_HISTORY, f"Objective 0 of {study_name}"])


# --- what to show -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tour:
    """The runs and the model version the screenshots show."""

    experiment_id: str
    study_run: str  # name of the latest finished study run
    study_run_id: str  # its id
    study_name: str  # its Optuna study
    trial_runs: tuple  # names of its trial runs, by trial number
    searched: tuple  # names of the parameters whose values differ between its trial runs, sorted
    seed_run_id: str  # first seed of its best trial (highest mean validation accuracy)
    challenger: int  # Optuna number of the trial closest to the best (tied or worse; the best if none)
    model_version: str  # the version the alias points to


def tour(client=None, experiment: str = tracking.EXPERIMENT, registered_name: str = tracking.REGISTERED_NAME,
         alias: str = tracking.ALIAS) -> Tour:
    """Pick from the store what the screenshots show.

    Parameters
    ----------
    client : MlflowClient, optional
        Client of the server shown (tracking and registry); by default that of
        ``$MLFLOW_TRACKING_URI``.
    experiment, registered_name, alias : str, optional
        What to look for, the package's own names by default.

    Raises
    ------
    UsageError
        No experiment, finished study run with trials, or model alias to show.
    """
    hint = "run python -m clrsearch.coarse and python -m clrsearch.fine first"
    exp_id = tracking.find_experiment_id(experiment, client)
    if exp_id is None:
        raise UsageError(f"no MLflow experiment {experiment!r} in the store; {hint}")
    study = tracking.latest_study_run(exp_id, client)
    if study is None:
        raise UsageError(f"no finished study run in experiment {experiment!r}; {hint}")
    trials = tracking.child_runs(exp_id, study.info.run_id, "trial", client)
    scored = [t for t in trials if "mean_val_accuracy" in t.data.metrics]
    if not scored:
        raise UsageError(f"study run {study.info.run_name!r} has no scored trial runs; {hint}")

    def accuracy(trial):
        return trial.data.metrics["mean_val_accuracy"]

    best = max(scored, key=accuracy)
    others = [t for t in scored if t.data.tags.get("verdict") in ("tied", "worse")]
    challenger = max(others, key=accuracy) if others else best
    seeds = sorted(tracking.child_runs(exp_id, best.info.run_id, "seed", client),
                   key=lambda s: int(s.data.tags["seed"]))
    if not seeds:
        raise UsageError(f"trial run {best.info.run_name!r} has no seed runs; {hint}")
    version = tracking.aliased_version(registered_name, alias, client)
    if version is None:
        raise UsageError(f"no registered model {registered_name}@{alias} in the store; "
                         f"run python -m clrsearch.fine first")
    names = tuple(t.info.run_name for t in sorted(trials, key=lambda t: int(t.data.tags["trial"])))
    params = {name for t in trials for name in t.data.params}
    searched = tuple(sorted(name for name in params if len({t.data.params.get(name) for t in trials}) > 1))
    return Tour(exp_id, study.info.run_name, study.info.run_id, study.data.tags["study_name"], names, searched,
                seeds[0].info.run_id, int(challenger.data.tags["trial"]), str(version))


def take(browser, url: str, out, seen: Tour) -> list:
    """The MLflow UI's screenshots of ``seen``, written to ``out``, the runs table with the README's columns.

    Returns
    -------
    list of the five PNG paths (runs, study run, confusion matrix, model, model version)
    """
    out = Path(out)
    page = new_page(browser)
    open_runs(page, url, seen.experiment_id, seen.study_run)
    collapse_sidebar(page)
    choose_columns(page, SETTINGS.doc_columns + seen.searched)
    for column, pixels in SETTINGS.widening:
        widen_column(page, column, pixels)
    expand_run(page, seen.study_run)
    run_link(page, seen.trial_runs[-1]).wait_for()  # the latest trial, near the top of the nested runs
    page.mouse.move(0, 0)  # no hover highlight on a row
    page.evaluate("document.activeElement.blur()")  # nor the focus frame of the clicked cell
    paths = [save(page, out / "mlflow_runs.png", page.get_by_role("row"))]
    fold = open_run(page, url, seen.experiment_id, seen.study_run_id)
    paths.append(save(page, out / "mlflow_study.png", fold, datasets(page).first))
    image = open_artifact(page, url, seen.experiment_id, seen.seed_run_id, "confusion_val.png")
    paths.append(save(page, out / "mlflow_confusion.png", image))
    row = open_model(page, url, tracking.REGISTERED_NAME, seen.model_version, tracking.ALIAS)
    paths.append(save(page, out / "mlflow_model.png", row))
    rows = open_version(page, url, tracking.REGISTERED_NAME, seen.model_version)
    paths.append(save(page, out / "mlflow_version.png", rows))
    if open_report(page, url, seen.experiment_id, seen.study_run_id):
        page.screenshot(path=str(out / "mlflow_report.png"))
        paths.append(out / "mlflow_report.png")
    page.context.close()
    return paths


REPORT_TITLE = "clrsearch: the report, regenerated from what is tracked"


def open_report(page, url: str, experiment_id: str, run_id: str) -> bool:
    """The study run's artifact view of ``report.html`` (python -m clrsearch.report), once a frame shows the
    report; False when the run has none."""
    if "report.html" not in {a.path for a in MlflowClient(tracking_uri=url).list_artifacts(run_id)}:
        return False
    page.goto(f"{url}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/report.html")
    deadline = time.monotonic() + SETTINGS.wait_ms / 1000
    while time.monotonic() < deadline:
        if any(REPORT_TITLE in frame.content() for frame in page.frames if frame != page.main_frame):
            close_assistant(page)
            return True
        page.wait_for_timeout(250)
    raise RuntimeError("the MLflow UI shows no frame holding report.html")


def take_dashboard(browser, url: str, out, seen: Tour) -> list:
    """optuna-dashboard's screenshots of the study of ``seen``, written to ``out``.

    Returns
    -------
    list of the two PNG paths (the study's history, its challenger trial)
    """
    out = Path(out)
    page = new_page(browser, SETTINGS.dashboard_viewport)
    plot = open_study(page, url, seen.study_name)
    page.mouse.move(0, 0)  # no hover label on a point
    paths = [save(page, out / "optuna_history.png", plot)]
    attributes = open_trial(page, seen.challenger)
    paths.append(save(page, out / "optuna_trial.png", attributes))
    page.context.close()
    return paths


def server_for(tracking_uri: str):
    """``mlflow_server`` over the store ``tracking_uri``, artifacts in ``mlruns/`` beside an SQLite file.

    Raises
    ------
    UsageError
        A server's URI instead of a store's, or no SQLite file at the path.
    """
    if tracking_uri.startswith(("http://", "https://")):
        raise UsageError(f"{tracking_uri} is a server; give the store it serves, e.g. sqlite:///mlflow.db")
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise UsageError(f"no MLflow store at {db}; run python -m clrsearch.coarse and "
                             f"python -m clrsearch.fine first, or give --tracking-uri")
        return mlflow_server(f"sqlite:///{db.resolve()}", db.resolve().parent / "mlruns")
    return mlflow_server(tracking_uri, Path("mlruns"))


def dashboard_for(storage: str):
    """``optuna_dashboard`` over the Optuna storage ``storage``.

    Raises
    ------
    UsageError
        No SQLite file at the path of an SQLite storage.
    """
    if storage.startswith("sqlite:///"):
        db = Path(storage.removeprefix("sqlite:///"))
        if not db.is_file():
            raise UsageError(f"no Optuna storage at {db}; run python -m clrsearch.coarse and "
                             f"python -m clrsearch.fine first, or give --storage")
        return optuna_dashboard(f"sqlite:///{db.resolve()}")
    return optuna_dashboard(storage)


@contextlib.contextmanager
def reading_from(url: str):
    """Within the block, this process reads MLflow's tracking and registry stores through the server at ``url``."""
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    before = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, url))
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def take_report(browser, html, out) -> Path:
    """``report.png``: the report's first screen, its figures loaded."""
    page = new_page(browser)
    page.goto(Path(html).absolute().as_uri())
    page.wait_for_function("Array.from(document.images).every(img => img.complete)")
    path = Path(out) / "report.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    return path


@entry_point
def main(argv=None):
    parser = ArgumentParser(prog="python tools/screenshots.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db",
                        help="store to show (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    parser.add_argument("--storage", default=DEFAULT_STORAGE,
                        help=f"Optuna storage of the studies (default {DEFAULT_STORAGE})")
    parser.add_argument("--out", default="docs/images", help="folder of the PNG files (default docs/images)")
    parser.add_argument("--chromium", default=SETTINGS.chromium,
                        help=f"Chromium executable (default {SETTINGS.chromium})")
    parser.add_argument("--report", metavar="HTML",
                        help="instead: the top of the report written by python -m clrsearch.report, as report.png")
    args = parser.parse_args(argv)

    if args.report:
        with chromium(args.chromium) as browser:
            path = take_report(browser, args.report, args.out)
        print(f"{path}  ({path.stat().st_size / 1000:.0f} kB)")
        return 0
    try:
        with chromium(args.chromium) as browser, server_for(args.tracking_uri) as url, reading_from(url), \
                dashboard_for(args.storage) as dashboard:
            seen = tour()
            paths = take(browser, url, args.out, seen) + take_dashboard(browser, dashboard, args.out, seen)
    except RuntimeError as error:  # the server did not start
        raise UsageError(str(error)) from None
    for path in paths:
        print(f"{path}  ({path.stat().st_size / 1000:.0f} kB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
