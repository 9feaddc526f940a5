"""`orderpipe report`: builds every section from what the pipeline left and writes the page to
`reports/report.html`; a section that fails becomes a note, not a missing page.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from orderpipe.core.errors import OrderpipeError, first_line
from orderpipe.core.fileio import disk_full_as_error, write_text_atomic
from orderpipe.core.layout import Layout
from orderpipe.core.progress import Progress
from orderpipe.report import charts
from orderpipe.report.page import Section, render_page
from orderpipe.report.sections.data import data_section
from orderpipe.report.sections.drift import drift_section
from orderpipe.report.sections.energy import energy_section
from orderpipe.report.sections.models import models_section
from orderpipe.report.sections.stream import stream_section

log = logging.getLogger("orderpipe.report")

if TYPE_CHECKING:
    from orderpipe.core.settings import Settings


@dataclass(frozen=True)
class ReportResult:
    """Where the page is, and per section its charts, tables and notes."""

    output: Path
    charts: dict[str, int]
    tables: dict[str, int]
    notes: dict[str, list[str]] = field(default_factory=dict)
    bytes: int = 0
    seconds: float = 0.0


def run_report(settings: Settings, *, progress: Progress | None = None) -> ReportResult:
    """Build every section from what the pipeline left and write `reports/report.html`;
    `progress(name, done, total)` hears of each section done."""
    began = time.perf_counter()
    layout = Layout.from_settings(settings)
    charts.start()
    builders: list[Callable[[], Section]] = [
        lambda: data_section(layout),
        lambda: models_section(layout),
        lambda: drift_section(layout, settings),
        lambda: stream_section(layout, settings),
        lambda: energy_section(layout),
    ]
    sections = []
    for key, build in zip(SECTIONS, builders, strict=True):
        sections.append(_built(key, build))
        if progress:
            progress("report sections", len(sections), len(builders))
    page = render_page(sections, settings)
    output = layout.html_report
    with disk_full_as_error("the HTML report", output, outcome="the report was not changed"):
        write_text_atomic(output, page)
    return ReportResult(
        output=output,
        charts={s.key: len(s.charts) for s in sections},
        tables={s.key: len(s.tables) for s in sections},
        notes={s.key: s.notes for s in sections if s.notes},
        bytes=len(page.encode("utf-8")),
        seconds=time.perf_counter() - began,
    )


SECTIONS = ("data", "models", "drift", "stream", "energy")


def _built(key: str, build: Callable[[], Section]) -> Section:
    """The section, or, when building it failed, the section with one note saying why: a
    page with four sections says more than no page (`--debug` logs the traceback)."""
    try:
        return build()
    except OrderpipeError as exc:
        return Section(key, key.capitalize(), notes=[str(exc)])
    except Exception as exc:  # a bug or an unreadable source must not cost the other sections
        log.debug("the %s section failed", key, exc_info=True)
        reason = first_line(exc, named=True)
        return Section(key, key.capitalize(), notes=[f"this section could not be built ({reason})"])
