"""`orderpipe report`: one self-contained HTML page (data, models, drift, stream, energy) that
opens offline in any browser: inline SVG charts and CSS, no script, nothing fetched.

matplotlib is imported only here (through `charts`), so every other command starts without it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from orderpipe.errors import OrderpipeError

log = logging.getLogger("orderpipe.report")

if TYPE_CHECKING:
    from orderpipe.report.sections import Section, Table
    from orderpipe.settings import Settings


@dataclass(frozen=True)
class ReportResult:
    """Where the page is, and per section its charts, tables and notes."""

    output: Path
    charts: dict[str, int]
    tables: dict[str, int]
    notes: dict[str, list[str]] = field(default_factory=dict)
    bytes: int = 0
    seconds: float = 0.0


def run_report(
    settings: Settings, *, progress: Callable[[str, int, int | None], None] | None = None
) -> ReportResult:
    """Build every section from what the pipeline left and write `reports/report.html`;
    `progress(name, done, total)` hears of each section done."""
    from orderpipe.fileio import disk_full_as_error, write_text_atomic
    from orderpipe.layout import Layout
    from orderpipe.report import charts
    from orderpipe.report.sections import (
        data_section,
        drift_section,
        energy_section,
        models_section,
        stream_section,
    )

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
    from orderpipe.report.sections import Section

    try:
        return build()
    except OrderpipeError as exc:
        return Section(key, key.capitalize(), notes=[str(exc)])
    except Exception as exc:  # a bug or an unreadable source must not cost the other sections
        log.debug("the %s section failed", key, exc_info=True)
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return Section(key, key.capitalize(), notes=[f"this section could not be built ({reason})"])


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;
background:#fafafa}
header{background:#1f3b57;color:#fff;padding:18px 32px}
header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;opacity:.85;font-size:13px}
nav{padding:8px 32px;background:#e8eef4;font-size:14px}
nav a{margin-right:18px;color:#1f3b57;text-decoration:none;font-weight:600}
section{padding:8px 32px 20px;border-bottom:1px solid #ddd}
h2{font-size:19px;margin:18px 0 8px;color:#1f3b57}
.charts{display:flex;flex-wrap:wrap;gap:14px}
figure{margin:0;background:#fff;border:1px solid #e2e2e2;border-radius:6px;padding:8px}
figcaption{font-size:12px;color:#555;margin-bottom:4px}
figure svg{display:block;max-width:100%;height:auto}
.tables{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start;margin-top:12px}
table{border-collapse:collapse;font-size:12.5px;background:#fff}
caption{text-align:left;font-weight:600;padding:4px 0;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f0f3f6}
td.text,th:first-child{text-align:left}
p.note{font-size:13px;color:#444;margin:6px 0}
"""


def render_page(sections: list[Section], settings: Settings) -> str:
    """The whole page as one string: inline CSS, inline SVG, no external reference."""
    from orderpipe import __version__

    generated = datetime.now(UTC).isoformat(timespec="seconds")
    nav = "".join(f'<a href="#{s.key}">{escape(s.title)}</a>' for s in sections)
    body = "".join(_section(s) for s in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>orderpipe report</title><style>{_STYLE}</style></head><body>"
        "<header><h1>orderpipe report</h1>"
        f"<p>generated {escape(generated)} by orderpipe {escape(__version__)} · database "
        f"{escape(settings.masked_database_url())} · Kafka "
        f"{escape(settings.kafka_bootstrap_servers)}</p></header>"
        f"<nav>{nav}</nav>{body}</body></html>\n"
    )


def _section(section: Section) -> str:
    notes = "".join(f'<p class="note">{escape(note)}</p>' for note in section.notes)
    figures = "".join(
        f"<figure><figcaption>{escape(chart.title)}</figcaption>{chart.svg}</figure>"
        for chart in section.charts
    )
    tables = "".join(_table(table) for table in section.tables)
    return (
        f'<section id="{section.key}"><h2>{escape(section.title)}</h2>{notes}'
        f'<div class="charts">{figures}</div><div class="tables">{tables}</div></section>'
    )


_FIGURE = re.compile(r"^[-+]?[\d.,]+(e[-+]?\d+)?%?$|^-$")


def _cell(cell: str) -> str:
    """Figures right-aligned, words left-aligned."""
    kind = "" if _FIGURE.match(cell) else ' class="text"'
    return f"<td{kind}>{escape(cell)}</td>"


def _table(table: Table) -> str:
    head = "".join(f"<th>{escape(column)}</th>" for column in table.columns)
    rows = "".join("<tr>" + "".join(_cell(cell) for cell in row) + "</tr>" for row in table.rows)
    return f"<table><caption>{escape(table.title)}</caption><tr>{head}</tr>{rows}</table>"
