"""The original report regenerated from what is tracked, and what clrsearch adds to it: one HTML file.

    python -m clrsearch.report [--out report.html] [--no-mlflow]

:mod:`.read` reads the MLflow store, the registry and the Optuna storage (never
training anything), :mod:`.sections` builds each section beside the original
report's numbers and says what is missing with the command that makes it,
:mod:`.page` writes the page, every figure embedded as a PNG.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from ..errors import redact
from ..tracking import git_commit
from . import sections
from .page import render
from .read import REPORT_ARTIFACT, Sources, Tracked

__all__ = ["REPORT_ARTIFACT", "Report", "Sources", "write_report"]


@dataclass(frozen=True)
class Report:
    """A written report: its file, its sections by id with their status, and the run it was logged to."""

    path: Path
    status: dict  # section id -> "present" | "partial" | "missing"
    missing: list  # of page.Missing
    run_id: str | None  # the fine study run holding it as an artifact (None: not logged)


def write_report(sources: Sources, out, attach: bool = True) -> Report:
    """Write the report of ``sources`` to ``out`` (the file is named ``report.html`` when it is logged), and with
    ``attach`` log it as an artifact of the latest finished run of the fine study, when there is one."""
    out = Path(out)
    with Tracked(sources) as tracked:
        parts = sections.build(tracked)
        written = datetime.datetime.now().isoformat(timespec="seconds")
        line = (f"MLflow store {redact(sources.tracking_uri)}, experiment {sources.experiment}; Optuna storage "
                f"{redact(sources.storage)}, studies {sources.coarse_study!r} and {sources.fine_study!r}; model "
                f"{sources.registered_name}@{sources.alias}. Written {written} by clrsearch at {git_commit()}.")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(parts, line), encoding="utf-8")
        run = tracked.study_run(sources.fine_study) if attach else None
        if run is not None:
            tracked.attach(run, out)
    every = [s for _, part in parts for s in part]
    return Report(out, {s.id: s.status for s in every}, [m for s in every for m in s.missing],
                  None if run is None else run.info.run_id)
