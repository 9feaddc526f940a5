"""run-all: every phase of `phases.PHASES` in order, each one eco-measured task, then the report.

A failing phase stops the run with its reason, and what the earlier phases wrote stays valid
(every output is written atomically).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orderpipe.core.errors import OrderpipeError, Terminated
from orderpipe.core.history import append_entry
from orderpipe.core.layout import Layout
from orderpipe.core.settings import Settings

log = logging.getLogger("orderpipe.runs.run_all")


@dataclass(frozen=True)
class PhaseSummary:
    phase: str
    seconds: float
    events: int | None
    events_per_second: float | None
    energy_kwh: float | None
    figures: dict[str, Any] = field(default_factory=dict)  # the phase's own (bench's figures)


@dataclass(frozen=True)
class RunAllResult:
    events: int
    database: str
    kafka: str
    phases: list[PhaseSummary]
    seconds: float
    eco_enabled: bool
    report: dict[str, Path] = field(default_factory=dict)


def fresh_start(settings: Settings) -> None:
    """Remove the outputs and tables of earlier runs (never anything else)."""
    from orderpipe.db.engine import drop_tables, make_engine

    for path in Layout.from_settings(settings).outputs_of_runs():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    engine = make_engine(settings.db_url)
    try:
        drop_tables(engine)
    finally:
        engine.dispose()


def run_all(
    settings: Settings,
    events: int = 4000,
    *,
    fresh: bool = False,
    seed: int = 42,
    on_phase: Callable[[PhaseSummary], None] | None = None,
) -> RunAllResult:
    """Every phase in order on the configured database and Kafka (embedded by default)."""
    from orderpipe.eco.report import run_eco_report
    from orderpipe.eco.tracking import EcoTracker
    from orderpipe.runs.phases import PHASES, PhaseOptions, run_phase

    began = time.perf_counter()
    if fresh:
        fresh_start(settings)
    options = PhaseOptions(events=events, seed=seed)
    tracker = EcoTracker.from_settings(settings)
    summaries: list[PhaseSummary] = []
    try:
        for phase in PHASES:
            try:
                outcome, record = run_phase(phase, settings, options, tracker)
            except OrderpipeError as exc:
                again = Terminated if isinstance(exc, Terminated) else OrderpipeError  # exit 143
                raise again(f"run-all stopped in phase {phase.name}: {exc}") from None
            summary = PhaseSummary(
                phase=phase.name,
                seconds=record.duration_s,
                events=record.events,
                events_per_second=record.events / record.duration_s if record.events else None,
                energy_kwh=record.energy_kwh,
                figures=phase.figures(outcome),
            )
            summaries.append(summary)
            log.info(
                "phase %s done in %.2f s",
                phase.name,
                record.duration_s,
                extra={
                    "phase": phase.name,
                    "counts": {"events": record.events, "energy_kwh": record.energy_kwh},
                },
            )
            if on_phase:
                on_phase(summary)
    finally:
        tracker.close()
    report: dict[str, Path] = {}
    if settings.eco_enabled:
        report = run_eco_report(Layout.from_settings(settings)).outputs
    result = RunAllResult(
        events=events,
        database=settings.masked_database_url(),
        kafka=settings.kafka_bootstrap_servers,
        phases=summaries,
        seconds=time.perf_counter() - began,
        eco_enabled=settings.eco_enabled,
        report=report,
    )
    _append_history(Layout.from_settings(settings).runs_history, result)
    from orderpipe.report.build import run_report

    log.info("writing %s", Layout.from_settings(settings).html_report)
    try:
        page = run_report(settings)
    except OrderpipeError as exc:
        raise OrderpipeError(f"run-all stopped writing its report: {exc}") from None
    return dataclasses.replace(result, report={**result.report, "html": page.output})


def _append_history(path: Path, result: RunAllResult) -> None:

    entry = {
        "command": "run-all",
        "events": result.events,
        "database": result.database,
        "kafka": result.kafka,
        "seconds": round(result.seconds, 3),
        "eco_enabled": result.eco_enabled,
        "phases": [
            {
                "phase": p.phase,
                "seconds": round(p.seconds, 3),
                "events": p.events,
                "energy_kwh": p.energy_kwh,
                "figures": p.figures,
            }
            for p in result.phases
        ],
    }
    append_entry(path, entry)
