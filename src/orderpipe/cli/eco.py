"""Eco-impact commands: eco report."""

from __future__ import annotations

from typing import Any

import typer

from orderpipe.cli.app import JsonOption, app, run_service, settings_of
from orderpipe.cli.render import columns_table, emit
from orderpipe.core.layout import Layout

eco_app = typer.Typer(help="Eco-impact (CodeCarbon) of the pipeline.", no_args_is_help=True)
app.add_typer(eco_app, name="eco")


@eco_app.command("report")
def eco_report(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Merge every CodeCarbon file of the output folder into the eco report (MD, CSV, SVG).

    Example: [bold]orderpipe eco report[/]
    """
    from orderpipe.eco.report import run_eco_report

    def call() -> Any:
        return run_eco_report(Layout.from_settings(settings_of(ctx)))

    result = run_service(ctx, call)
    emit(result, as_json, lambda out: out.print(eco_table(result)))


def eco_table(report: Any) -> Any:
    """Per phase: seconds, energy, CO2e, share, energy per 1,000 events."""
    rows = []
    for p in report.phases:
        per = p.energy_kwh_per_1000_events
        rows.append(
            (
                p.phase,
                f"{p.duration_s:.2f}",
                f"{p.energy_kwh:.2e}",
                f"{p.emissions_kg:.2e}",
                f"{p.share:.0%}",
                f"{per:.2e}" if per else "-",
            )
        )
    columns = ("phase", "seconds", "energy (kWh)", "CO2e (kg)", "share", "kWh/1k events")
    return columns_table(f"eco report ({report.runs} run(s))", columns, rows)
