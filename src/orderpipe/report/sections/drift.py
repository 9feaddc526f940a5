"""The report's drift section: the classifier's inputs in the most recent events it scored, read
from the tables, against its training profile (PSI per input).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import polars as pl

from orderpipe.core.errors import OrderpipeError
from orderpipe.db.queries import scored_inputs
from orderpipe.report import charts
from orderpipe.report.page import Chart, Section, Table

if TYPE_CHECKING:
    from orderpipe.core.layout import Layout
    from orderpipe.core.settings import Settings

DRIFT_ROWS = 100_000  # the most recent scored events the drift is measured on


def drift_section(layout: Layout, settings: Settings) -> Section:
    from orderpipe.ml.drift import PSI_FLAG, drift_table
    from orderpipe.ml.model import load_model

    section = Section("drift", "Drift")
    try:
        model = load_model(layout.artifacts_dir, "classification")
    except OrderpipeError as exc:
        section.notes.append(str(exc))
        return section
    profile = model.meta.get("training_profile")
    if not profile:
        section.notes.append(
            f"model {model.version}'s metadata has no training profile: run "
            "`orderpipe train classification`"
        )
        return section
    through = model.meta.get("data_through")
    try:
        scored, newer = scored_inputs(
            settings.db_url,
            model.version,
            model.spec.inputs,
            datetime.fromisoformat(through) if through else None,
            limit=DRIFT_ROWS,
        )
    except OrderpipeError as exc:
        section.notes.append(f"the scored events could not be read: {exc}")
        return section
    if scored.height == 0:
        section.notes.append(
            f"no event scored by model {model.version} in the database yet: run "
            "`orderpipe ingest`, then `orderpipe predict` (or `orderpipe stream run`)"
        )
        return section
    table = drift_table(profile, scored, model.spec, model.pipeline).sort("psi", descending=True)
    flagged = table.filter(pl.col("flagged")).height
    if newer:
        what = f"the {scored.height:,} most recent events newer than its training data ({through})"
    else:
        what = (
            f"the {scored.height:,} most recent events it scored; none is newer than its "
            f"training data ({through}), so these are mostly the events it was trained on and "
            "a PSI near 0 is expected"
        )
    section.notes.append(
        f"Model {model.version}'s inputs in {what}, against the rows it was fitted on: "
        f"{flagged} feature(s) above PSI {PSI_FLAG}."
    )
    with charts.figure(5.6, 0.8 + 0.28 * table.height) as (fig, ax):
        values = table["psi"].fill_nan(0.0).to_list()
        colors = [charts.COLORS["bad"] if v > PSI_FLAG else charts.COLORS["model"] for v in values]
        charts.barh(ax, table["feature"].to_list(), values, colors)
        ax.axvline(PSI_FLAG, color=charts.COLORS["bad"], linestyle=":", linewidth=1)
        ax.set_xlabel("population stability index")
        ax.set_title("Scored events vs training data")
        section.charts.append(Chart("Drift of each model input", charts.svg(fig)))
    section.tables.append(
        Table(
            "Population stability index per input",
            ["feature", "PSI", f"above {PSI_FLAG}"],
            [
                [row["feature"], f"{row['psi']:.4f}", "yes" if row["flagged"] else ""]
                for row in table.iter_rows(named=True)
            ],
        )
    )
    return section
