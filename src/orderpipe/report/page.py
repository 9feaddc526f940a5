"""The report's page: the Chart, Table and Section types the sections fill, their cells' text,
and the whole page rendered as one HTML string (inline CSS and SVG, nothing fetched).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any

from orderpipe import __version__

if TYPE_CHECKING:
    from orderpipe.core.settings import Settings


@dataclass(frozen=True)
class Chart:
    title: str
    svg: str


@dataclass(frozen=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    key: str
    title: str
    charts: list[Chart] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def count_cell(value: Any) -> str:
    """A whole number with thousands separators, "-" for None."""
    return "-" if value is None else f"{value:,.0f}"


def number_cell(value: Any, digits: int = 4) -> str:
    """A number with `digits` decimals, "-" for None."""
    return "-" if value is None else f"{value:.{digits}f}"


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
