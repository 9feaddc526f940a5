"""The report's energy section: what CodeCarbon measured of each phase over the eco runs, per
phase, per 1,000 events and per run over time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orderpipe.core.errors import OrderpipeError
from orderpipe.eco.report import build_report
from orderpipe.report import charts
from orderpipe.report.page import Chart, Section, Table

if TYPE_CHECKING:
    from orderpipe.core.layout import Layout


def energy_section(layout: Layout) -> Section:
    section = Section("energy", "Energy")
    try:
        report = build_report(layout.eco_output_dir)
    except OrderpipeError as exc:
        section.notes.append(str(exc))
        return section
    phases = sorted(report.phases, key=lambda p: -p.energy_kwh)
    per_1000 = [p for p in phases if p.energy_kwh_per_1000_events is not None]
    with charts.figure(7.6, 0.9 + 0.3 * len(phases), ncols=2) as (fig, (left, right)):
        charts.barh(left, [p.phase for p in phases], [p.energy_kwh for p in phases], "#8c564b")
        left.set_title(f"Energy by phase, {report.runs} run(s) (kWh)")
        charts.barh(
            right,
            [p.phase for p in per_1000],
            [p.energy_kwh_per_1000_events or 0 for p in per_1000],
            "#bcbd22",
        )
        right.set_title("kWh per 1,000 events")
        section.charts.append(Chart("Energy by phase", charts.svg(fig)))
    runs = report.per_run
    with charts.figure(7.6, 3.0) as (fig, ax):
        ax.plot(
            [r["started"][:19].replace("T", " ") for r in runs],
            [r["energy_kwh"] for r in runs],
            "-o",
            color="#8c564b",
        )
        ax.set_ylabel("kWh")
        ax.set_ylim(bottom=0)
        ax.set_title("Energy per run, over time")
        ax.tick_params(axis="x", rotation=30, labelsize=7)
        section.charts.append(Chart("Energy per run", charts.svg(fig)))
    intensity = report.carbon_intensity_kg_per_kwh
    section.notes.append(
        f"{report.total_energy_kwh:.3e} kWh and {report.total_emissions_kg * 1000:.3f} g CO2e "
        f"in {report.runs} run(s), measured by CodeCarbon ({', '.join(report.methods) or '-'})"
        + (f", {intensity * 1000:.0f} g CO2e/kWh" if intensity else "")
        + f" in {', '.join(report.countries) or '-'}."
    )
    section.tables.append(
        Table(
            "Per phase",
            ["phase", "runs", "seconds", "kWh", "g CO2e", "share", "kWh / 1,000 events"],
            [
                [
                    p.phase,
                    str(p.runs),
                    f"{p.duration_s:.1f}",
                    f"{p.energy_kwh:.3e}",
                    f"{p.emissions_kg * 1000:.4f}",
                    f"{p.share:.0%}",
                    "-"
                    if p.energy_kwh_per_1000_events is None
                    else f"{p.energy_kwh_per_1000_events:.3e}",
                ]
                for p in phases
            ],
        )
    )
    return section
