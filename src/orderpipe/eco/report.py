"""The eco report: merge CodeCarbon's per-task files (backups included), aggregate per phase.

Writes reports/eco_report.md, reports/eco_report.csv and an SVG chart of energy per phase.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orderpipe.core.crashpoints import crash_point
from orderpipe.core.errors import OrderpipeError
from orderpipe.core.fileio import disk_full_as_error, remove_leftovers, staged_paths
from orderpipe.eco.tracking import PHASES_FILE

if TYPE_CHECKING:
    from orderpipe.core.layout import Layout

log = logging.getLogger("orderpipe.eco")
NEEDED = ("task_name", "run_id", "timestamp", "duration", "energy_consumed", "emissions")


@dataclass(frozen=True)
class PhaseFootprint:
    phase: str
    runs: int
    duration_s: float
    energy_kwh: float
    emissions_kg: float
    share: float
    events: int | None
    energy_kwh_per_1000_events: float | None
    emissions_kg_per_1000_events: float | None


@dataclass(frozen=True)
class EcoReport:
    phases: list[PhaseFootprint]
    runs: int
    total_energy_kwh: float
    total_emissions_kg: float
    total_duration_s: float
    methods: list[str]
    countries: list[str]
    carbon_intensity_kg_per_kwh: float | None
    skipped_rows: int
    per_run: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, Path] = field(default_factory=dict)


def read_task_rows(folder: Path) -> tuple[list[dict[str, str]], int]:
    """CodeCarbon task rows from every `emissions_base_*.csv*` file, duplicates removed."""
    files = sorted(folder.glob("emissions_base_*.csv*")) if folder.is_dir() else []
    seen: set[tuple[str, str, str]] = set()
    rows: list[dict[str, str]] = []
    skipped = 0
    for path in files:
        with path.open(newline="", encoding="utf-8", errors="replace") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header or any(name not in header for name in NEEDED):
                log.warning("%s: not a CodeCarbon task file, skipped", path)
                continue
            for number, values in enumerate(reader, start=2):
                row = dict(zip(header, values, strict=False))
                problem = _row_problem(row, len(values), len(header))
                if problem:
                    log.warning("%s line %d: %s, skipped", path, number, problem)
                    skipped += 1
                    continue
                key = (row["run_id"], row["task_name"], row["timestamp"])
                if key not in seen:
                    seen.add(key)
                    rows.append(row)
    return rows, skipped


def _row_problem(row: dict[str, str], width: int, expected: int) -> str | None:
    if width != expected:
        return f"{width} fields instead of {expected}"
    if row.get("project_name", "orderpipe") != "orderpipe":
        return f"foreign project {row.get('project_name')!r}"
    try:
        for name in ("duration", "energy_consumed", "emissions"):
            if float(row[name]) < 0:
                return f"negative {name}"
    except ValueError:
        return "a number is not a number"
    if not row["task_name"] or not row["run_id"]:
        return "no task name or run id"
    return None


def read_events(folder: Path) -> dict[tuple[str, str], int]:
    """Events per (run_id, phase) from orderpipe's own phase file."""
    path = folder / PHASES_FILE
    events: dict[tuple[str, str], int] = defaultdict(int)
    if not path.is_file():
        return events
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row.get("events"):
                try:
                    events[(row["run_id"], row["phase"])] += int(row["events"])
                except ValueError:
                    continue
    return events


def build_report(folder: Path) -> EcoReport:
    """Aggregate per phase (all runs in the folder)."""
    rows, skipped = read_task_rows(folder)
    if not rows:
        raise OrderpipeError(
            f"no CodeCarbon measurements in {folder}: run `orderpipe run-all` "
            "with ORDERPIPE_ECO_ENABLED=true first"
        )
    events = read_events(folder)
    by_phase: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    run_ids: dict[str, set[str]] = defaultdict(set)
    phase_events: dict[str, int | None] = {}
    for row in rows:
        phase = row["task_name"]
        totals = by_phase[phase]
        totals["duration"] += float(row["duration"])
        totals["energy"] += float(row["energy_consumed"])
        totals["emissions"] += float(row["emissions"])
        counted = events.get((row["run_id"], phase))
        if counted is not None:  # per-1,000-event figures use only runs that counted events
            totals["energy_counted"] += float(row["energy_consumed"])
            totals["emissions_counted"] += float(row["emissions"])
        if row["run_id"] not in run_ids[phase]:
            run_ids[phase].add(row["run_id"])
            if counted is not None:
                phase_events[phase] = (phase_events.get(phase) or 0) + counted
    total_energy = sum(t["energy"] for t in by_phase.values())
    total_emissions = sum(t["emissions"] for t in by_phase.values())
    phases = []
    for phase, totals in by_phase.items():
        n = phase_events.get(phase)
        phases.append(
            PhaseFootprint(
                phase=phase,
                runs=len(run_ids[phase]),
                duration_s=totals["duration"],
                energy_kwh=totals["energy"],
                emissions_kg=totals["emissions"],
                share=totals["energy"] / total_energy if total_energy else 0.0,
                events=n,
                energy_kwh_per_1000_events=totals["energy_counted"] * 1000 / n if n else None,
                emissions_kg_per_1000_events=totals["emissions_counted"] * 1000 / n if n else None,
            )
        )
    runs: dict[str, dict[str, Any]] = {}
    for row in rows:
        run = runs.setdefault(
            row["run_id"],
            {
                "run_id": row["run_id"],
                "started": row["timestamp"],
                "duration_s": 0.0,
                "energy_kwh": 0.0,
                "emissions_kg": 0.0,
            },
        )
        run["started"] = min(run["started"], row["timestamp"])
        run["duration_s"] += float(row["duration"])
        run["energy_kwh"] += float(row["energy_consumed"])
        run["emissions_kg"] += float(row["emissions"])
    return EcoReport(
        per_run=sorted(runs.values(), key=lambda run: run["started"]),
        phases=phases,
        runs=len({row["run_id"] for row in rows}),
        total_energy_kwh=total_energy,
        total_emissions_kg=total_emissions,
        total_duration_s=sum(t["duration"] for t in by_phase.values()),
        methods=sorted({row.get("tracking_mode", "") for row in rows} - {""}),
        countries=sorted({row.get("country_iso_code", "") for row in rows} - {""}),
        carbon_intensity_kg_per_kwh=total_emissions / total_energy if total_energy else None,
        skipped_rows=skipped,
    )


def write_report(report: EcoReport, layout: Layout) -> EcoReport:
    """Write the Markdown, CSV and SVG files; returns the report with their paths.

    All three are written beside their targets first, then renamed into place back to back:
    a full disk changes none of them; only a kill between the renames (`eco.chart-moved`,
    `eco.csv-moved`) leaves some newer than the others, until the next `eco report`.
    """
    md, csv_path, svg = layout.eco_report_files
    lines = [
        "phase,runs,duration_s,energy_kwh,emissions_kg,share,events,"
        "energy_kwh_per_1000_events,emissions_kg_per_1000_events"
    ]
    for p in report.phases:
        lines.append(
            ",".join(
                str(v if v is not None else "")
                for v in (
                    p.phase,
                    p.runs,
                    f"{p.duration_s:.3f}",
                    f"{p.energy_kwh:.9f}",
                    f"{p.emissions_kg:.9f}",
                    f"{p.share:.4f}",
                    p.events,
                    _fmt(p.energy_kwh_per_1000_events),
                    _fmt(p.emissions_kg_per_1000_events),
                )
            )
        )
    texts = {
        svg: energy_chart(report),
        csv_path: "\n".join(lines) + "\n",
        md: markdown(report, svg.name),
    }

    def moved(target: Path) -> None:
        crash_point(f"eco.{'chart' if target == svg else target.suffix[1:]}-moved")

    with staged_paths(*texts, moved=moved) as staged:
        for tmp, text in zip(staged, texts.values(), strict=True):
            tmp.write_text(text, encoding="utf-8")
    return EcoReport(
        **{**report.__dict__, "outputs": {"markdown": md, "csv": csv_path, "chart": svg}}
    )


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.9f}"


def markdown(report: EcoReport, chart_name: str) -> str:
    out = [
        "# orderpipe eco-impact report",
        "",
        f"Runs: {report.runs}. Measurement: CodeCarbon offline mode, method "
        f"{', '.join(report.methods) or 'unknown'} (on a CPU without RAPL, CodeCarbon estimates "
        f"power from load and RAM size), country {', '.join(report.countries) or 'unknown'}, "
        f"carbon intensity {report.carbon_intensity_kg_per_kwh or 0:.3f} kg CO2e/kWh.",
        "",
        "| phase | runs | duration (s) | energy (kWh) | emissions (kg CO2e) | share | events "
        "| kWh / 1,000 events | kg CO2e / 1,000 events |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in report.phases:
        out.append(
            f"| {p.phase} | {p.runs} | {p.duration_s:.2f} | {p.energy_kwh:.3e} | "
            f"{p.emissions_kg:.3e} | {p.share:.1%} | {p.events if p.events is not None else '-'}"
            f" | {_sci(p.energy_kwh_per_1000_events)} | {_sci(p.emissions_kg_per_1000_events)} |"
        )
    out += [
        f"| **total** | | {report.total_duration_s:.2f} | {report.total_energy_kwh:.3e} | "
        f"{report.total_emissions_kg:.3e} | 100% | | | |",
        "",
        f"![energy per phase]({chart_name})",
        "",
        "## Runs",
        "",
        "| started (UTC) | run id | duration (s) | energy (kWh) | emissions (kg CO2e) |",
        "|---|---|---|---|---|",
        *[
            f"| {run['started']} | {str(run['run_id'])[:8]} | {run['duration_s']:.2f} | "
            f"{run['energy_kwh']:.3e} | {run['emissions_kg']:.3e} |"
            for run in report.per_run
        ],
        "",
    ]
    if report.skipped_rows:
        out.append(f"{report.skipped_rows} corrupt or foreign rows were skipped (see the log).")
    return "\n".join(out) + "\n"


def _sci(value: float | None) -> str:
    return "-" if value is None else f"{value:.3e}"


def energy_chart(report: EcoReport) -> str:
    """A horizontal bar chart of energy per phase, as a standalone SVG."""
    width, bar_h, left = 640, 26, 150
    height = 40 + bar_h * len(report.phases)
    top = max((p.energy_kwh for p in report.phases), default=0.0) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        '<text x="10" y="18" font-weight="bold">Energy per phase (kWh)</text>',
    ]
    for i, p in enumerate(report.phases):
        y = 30 + i * bar_h
        length = (width - left - 110) * p.energy_kwh / top
        parts.append(f'<text x="10" y="{y + 15}">{escape(p.phase)}</text>')
        parts.append(
            f'<rect x="{left}" y="{y + 3}" width="{length:.1f}" height="{bar_h - 8}" '
            'fill="#4c9a5a"/>'
        )
        parts.append(f'<text x="{left + length + 6:.1f}" y="{y + 15}">{p.energy_kwh:.2e}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def run_eco_report(layout: Layout) -> EcoReport:
    """Build the report from every CodeCarbon file of the eco folder and write it."""
    names = {path.name for path in layout.eco_report_files}
    remove_leftovers(layout.reports_dir, names)  # of reports killed before they could
    report = build_report(layout.eco_output_dir)
    with disk_full_as_error("the eco report", layout.reports_dir):
        return write_report(report, layout)
