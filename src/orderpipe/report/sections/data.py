"""The report's data section: what etl made of the lines it read (clean, duplicates, quarantined
by reason), the last run's counts, and the values it imputed or normalised.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from orderpipe.report import charts
from orderpipe.report.page import Chart, Section, Table, count_cell

if TYPE_CHECKING:
    from orderpipe.core.layout import Layout


def data_section(layout: Layout) -> Section:
    section = Section("data", "Data")
    path = layout.quality_report
    try:
        quality = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        section.notes.append(f"no readable etl quality report at {path}: run `orderpipe etl`")
        return section
    reasons = sorted(quality.get("rejected_by_reason", {}).items(), key=lambda kv: -kv[1])
    outcomes = [("clean", quality["clean"]), ("duplicate (older copy)", quality["duplicates"])]
    outcomes += [(f"quarantined: {reason}", count) for reason, count in reasons]
    colors = [charts.COLORS["good"], charts.COLORS["oracle"]] + [charts.COLORS["bad"]] * len(
        reasons
    )
    with charts.figure(6.4, 0.9 + 0.32 * len(outcomes)) as (fig, ax):
        charts.barh(ax, [label for label, _ in outcomes], [c for _, c in outcomes], colors)
        ax.set_xlabel("lines")
        ax.set_title(f"What became of the {quality['lines']:,} lines read")
        section.charts.append(Chart("Lines by outcome, quarantined by reason", charts.svg(fig)))
    dataset = quality.get("dataset", {})
    section.tables.append(
        Table(
            "Last etl run",
            ["lines read", "clean", "duplicates", "quarantined", "table rows", "table version"],
            [
                [
                    count_cell(quality["lines"]),
                    count_cell(quality["clean"]),
                    count_cell(quality["duplicates"]),
                    count_cell(quality["rejected"]),
                    count_cell(dataset.get("rows")),
                    str(dataset.get("table_version", "-")),
                ]
            ],
        )
    )
    rules = quality.get("imputation_rules", {})
    section.tables.append(
        Table(
            "Imputed values",
            ["column", "values imputed", "rule"],
            [[k, count_cell(v), rules.get(k, "")] for k, v in quality.get("imputed", {}).items()],
        )
    )
    section.tables.append(
        Table(
            "Text normalised (case, spaces, aliases)",
            ["column", "values changed"],
            [[k, count_cell(v)] for k, v in quality.get("normalised_text", {}).items()],
        )
    )
    return section
