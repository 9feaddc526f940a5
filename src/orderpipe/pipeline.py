"""run-all: generate -> etl -> ingest -> train -> predict -> stream run -> eco report.

Each phase is one eco-measured task of one tracker; a failing phase stops the run with its
reason, and what the earlier phases wrote stays valid (every output is written atomically).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orderpipe.errors import OrderpipeError
from orderpipe.settings import Settings

log = logging.getLogger("orderpipe.pipeline")


@dataclass(frozen=True)
class PhaseSummary:
    phase: str
    seconds: float
    events: int | None
    events_per_second: float | None
    energy_kwh: float | None


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

    for folder in ("raw", "processed", "rejected"):
        shutil.rmtree(settings.data_dir / folder, ignore_errors=True)
    for pattern in ("*_model.joblib", "*_model_meta.json"):
        for path in settings.artifacts_dir.glob(pattern):
            path.unlink()
    engine = make_engine(settings.url)
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
    from orderpipe.etl import EtlPaths, run_etl
    from orderpipe.generate import Dirt, generate_events, truth_path_for
    from orderpipe.ingest import run_ingest
    from orderpipe.ml.predict import run_predict
    from orderpipe.ml.train import run_train
    from orderpipe.settings import mask_url
    from orderpipe.stream.pipeline import run_stream_with_settings

    began = time.perf_counter()
    if fresh:
        fresh_start(settings)
    raw = settings.data_dir / "raw" / "orders_events.jsonl"
    paths = EtlPaths.under(settings.data_dir, settings.reports_dir)
    tracker = EcoTracker(
        enabled=settings.eco_enabled,
        output_dir=settings.eco_output_dir,
        country_iso_code=settings.eco_country_iso_code,
    )
    summaries: list[PhaseSummary] = []

    def measured(name: str, work: Callable[[], Any], count: Callable[[Any], int]) -> Any:
        try:
            with tracker.phase(name) as record:
                result = work()
                record.events = count(result)
        except OrderpipeError as exc:
            raise OrderpipeError(f"run-all stopped in phase {name}: {exc}") from None
        summary = PhaseSummary(
            phase=name,
            seconds=record.duration_s,
            events=record.events,
            events_per_second=record.events / record.duration_s if record.events else None,
            energy_kwh=record.energy_kwh,
        )
        summaries.append(summary)
        log.info(
            "phase %s done in %.2f s",
            name,
            record.duration_s,
            extra={
                "phase": name,
                "counts": {"events": record.events, "energy_kwh": record.energy_kwh},
            },
        )
        if on_phase:
            on_phase(summary)
        return result

    try:
        measured(
            "generate",
            lambda: generate_events(raw, events, seed=seed, dirt=Dirt(duplicates=events // 50)),
            lambda r: r.lines,
        )
        measured("etl", lambda: run_etl(raw, paths), lambda r: r.lines)
        measured(
            "ingest",
            lambda: run_ingest(
                paths.parquet,
                settings.url,
                chunk_size=settings.ingest_chunk_size,
                local_infile=settings.mysql_local_infile,
            ),
            lambda r: r.events,
        )
        measured(
            "train",
            lambda: run_train(
                "all",
                paths.parquet,
                settings.artifacts_dir,
                seed=seed,
                truth_path=truth_path_for(raw),
            ),
            lambda r: r[0].rows,
        )
        measured(
            "predict",
            lambda: run_predict(
                paths.parquet,
                settings.url,
                settings.artifacts_dir,
                local_infile=settings.mysql_local_infile,
            ),
            lambda r: r.scored,
        )

        measured(
            "stream", lambda: run_stream_with_settings(settings, paths.jsonl), lambda r: r.produced
        )
    finally:
        tracker.close()
    report: dict[str, Path] = {}
    if settings.eco_enabled:
        report = run_eco_report(settings.eco_output_dir, settings.reports_dir).outputs
    result = RunAllResult(
        events=events,
        database=mask_url(settings.url),
        kafka=settings.kafka_bootstrap_servers,
        phases=summaries,
        seconds=time.perf_counter() - began,
        eco_enabled=settings.eco_enabled,
        report=report,
    )
    _append_history(settings.reports_dir / "runs.jsonl", result)
    return result


def _append_history(path: Path, result: RunAllResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
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
            }
            for p in result.phases
        ],
    }
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")
