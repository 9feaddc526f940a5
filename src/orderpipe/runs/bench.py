"""`orderpipe bench`: throughput and peak memory of each phase of `phases.PHASES`.

Every measurement runs the phase in a fresh (spawned) process, so its peak RSS is its own.
"""

from __future__ import annotations

import multiprocessing
import queue
import resource
import tempfile
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orderpipe.core.errors import OrderpipeError
from orderpipe.runs.phases import PhaseOptions

if TYPE_CHECKING:
    from orderpipe.core.settings import Settings

LATENCY_RATE = 2000.0  # events/s of the paced stream run that measures latency


@dataclass(frozen=True)
class PhaseFigures:
    """One phase's measurement."""

    phase: str
    events: int
    seconds: float
    events_per_second: float
    peak_rss_mb: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchResult:
    """All phases, in the order they ran."""

    events: int
    seed: int
    phases: list[PhaseFigures]


@dataclass(frozen=True)
class Measurement:
    """One line of the plan: a phase on some settings, with some options."""

    label: str
    phase: str
    settings: Settings
    options: PhaseOptions
    drop_tables: bool = False  # a measurement of a shared database starts from empty tables


def measure_phase(
    phase_name: str, settings: Settings, options: PhaseOptions, drop_tables: bool
) -> dict[str, Any]:
    """Run one phase as run-all does (eco task included when enabled); in the child process."""
    from orderpipe.eco.tracking import EcoTracker
    from orderpipe.runs.phases import PHASES_BY_NAME, run_phase

    if drop_tables:
        from orderpipe.db.engine import drop_tables as drop
        from orderpipe.db.engine import make_engine

        engine = make_engine(settings.db_url)
        try:
            drop(engine)
        finally:
            engine.dispose()
    phase = PHASES_BY_NAME[phase_name]
    tracker = EcoTracker.from_settings(settings)
    if settings.eco_enabled:
        tracker.start()  # the one-off start-up cost stays out of the phase figure
    try:
        result, record = run_phase(phase, settings, options, tracker)
    finally:
        tracker.close()
    return {"events": record.events, "seconds": record.duration_s, **phase.figures(result)}


def _child(target: Callable[..., dict[str, Any]], args: tuple[Any, ...], results: Any) -> None:
    try:
        started = time.perf_counter()
        detail = target(*args)
        seconds = detail.pop("seconds", time.perf_counter() - started)
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        results.put(("ok", seconds, peak_kb / 1024, detail))
    except BaseException as exc:
        results.put(("error", 0.0, 0.0, {"error": f"{type(exc).__name__}: {exc}"}))


def _measure(label: str, target: Callable[..., dict[str, Any]], *args: Any) -> PhaseFigures:
    """Run `target(*args)` in a spawned process; a process that dies without a result (the OOM
    killer, a crash) is a one-line error, never a hang."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_child, args=(target, args, results))
    process.start()
    try:
        while True:
            try:
                status, seconds, peak_mb, detail = results.get(timeout=0.5)
                break
            except queue.Empty:
                if process.is_alive():
                    continue
                try:  # it may have put its result just before it ended
                    status, seconds, peak_mb, detail = results.get(timeout=0.5)
                    break
                except queue.Empty:
                    code = process.exitcode
                    hint = " (killed: out of memory?)" if code == -9 else ""
                    raise OrderpipeError(
                        f"bench phase {label}: its process ended with code {code} "
                        f"before reporting{hint}"
                    ) from None
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join()
    if status != "ok":
        raise OrderpipeError(f"bench phase {label} failed: {detail['error']}")
    events = int(detail.pop("events"))
    return PhaseFigures(
        phase=label,
        events=events,
        seconds=round(seconds, 3),
        events_per_second=round(events / seconds) if seconds else 0.0,
        peak_rss_mb=round(peak_mb, 1),
        detail=detail,
    )


# What each phase reads: a phase is measured only after those it needs.
NEEDS: dict[str, tuple[str, ...]] = {
    "generate": (),
    "etl": ("generate",),
    "ingest": ("etl",),
    "train": ("etl",),
    "predict": ("ingest", "train"),
    "stream": ("etl", "train"),
}


def with_prerequisites(phases: Collection[str]) -> set[str]:
    """The phases asked for and every phase they need, however far back."""
    unknown = sorted(set(phases) - set(NEEDS))
    if unknown:
        raise OrderpipeError(f"unknown phase {', '.join(unknown)}: choose among {', '.join(NEEDS)}")
    wanted: set[str] = set()
    todo = list(phases)
    while todo:
        phase = todo.pop()
        if phase not in wanted:
            wanted.add(phase)
            todo.extend(NEEDS[phase])
    return wanted


def bench_plan(
    settings: Settings,
    root: Path,
    options: PhaseOptions,
    database_url: str | None = None,
    kafka_bootstrap: str | None = None,
) -> list[Measurement]:
    """Every measurement, on the user's settings with bench's own folders and databases."""
    from pydantic import SecretStr
    from sqlalchemy.engine import make_url

    base = settings.model_copy(
        update={
            "database_url": SecretStr(f"sqlite:///{root}/bench.db"),
            "data_dir": root / "data",
            "artifacts_dir": root / "artifacts",
            "reports_dir": root / "reports",
            "eco_output_dir": root / "emissions",
            "eco_enabled": False,
            "kafka_bootstrap_servers": "embedded",
        }
    )

    def on(database: str | None = None, **changes: Any) -> Settings:
        """The bench settings with another database and other changes."""
        if database is not None:
            changes["database_url"] = SecretStr(database)
        return base.model_copy(update=changes)

    def streaming(database: str, bootstrap: str = "embedded", **changes: Any) -> Settings:
        topic = f"bench-{uuid.uuid4().hex[:8]}"  # a topic of its own: nothing left over counts
        return on(
            database,
            kafka_bootstrap_servers=bootstrap,
            kafka_topic=topic,
            kafka_group_id=topic,
            **changes,
        )

    paced = PhaseOptions(
        events=options.events,
        seed=options.seed,
        stream_rate=LATENCY_RATE,
        stream_limit=min(20_000, int(LATENCY_RATE * 10)),
    )
    plan = [
        Measurement("generate", "generate", base, options),
        Measurement("etl", "etl", base, options),
        Measurement("etl-eco-on", "etl", on(eco_enabled=True), options),
        Measurement("ingest-sqlite", "ingest", base, options),
        Measurement("train", "train", base, options),
        Measurement("predict-sqlite", "predict", base, options),
        Measurement(
            "stream-embedded-sqlite", "stream", streaming(f"sqlite:///{root}/s.db"), options
        ),
        Measurement(
            "stream-eco-on",
            "stream",
            streaming(f"sqlite:///{root}/e.db", eco_enabled=True),
            options,
        ),
        Measurement("stream-latency-2000/s", "stream", streaming(f"sqlite:///{root}/l.db"), paced),
    ]
    if database_url and make_url(database_url).get_backend_name() != "sqlite":
        backend = make_url(database_url).get_backend_name()
        server = on(database_url)
        plan += [
            Measurement(f"ingest-{backend}", "ingest", server, options, drop_tables=True),
            Measurement(f"predict-{backend}", "predict", server, options),
        ]
        if kafka_bootstrap:
            stream = streaming(database_url, kafka_bootstrap)
            plan.append(Measurement(f"stream-kafka-{backend}", "stream", stream, options))
    return plan


def run_bench(
    settings: Settings,
    events: int,
    *,
    seed: int = 42,
    database_url: str | None = None,
    kafka_bootstrap: str | None = None,
    workdir: Path | None = None,
    on_phase: Callable[[PhaseFigures], None] | None = None,
    phases: Collection[str] | None = None,
) -> BenchResult:
    """Time every phase (or `phases` and those they need) on SQLite and the embedded broker,
    plus `database_url` (and Kafka).

    The orderpipe tables of `database_url` are dropped and recreated: point it at a database
    kept for benchmarks.
    """
    if events < 1:
        raise OrderpipeError("--events must be at least 1")
    wanted = with_prerequisites(phases) if phases else set(NEEDS)
    options = PhaseOptions(events=events, seed=seed, etl_merge=False)
    measured: list[PhaseFigures] = []
    with tempfile.TemporaryDirectory(prefix="orderpipe-bench-", dir=workdir) as tmp:
        plan = bench_plan(settings, Path(tmp), options, database_url, kafka_bootstrap)
        for step in [step for step in plan if step.phase in wanted]:
            args = (step.phase, step.settings, step.options, step.drop_tables)
            figures = _measure(step.label, measure_phase, *args)
            measured.append(figures)
            if on_phase:
                on_phase(figures)
    return BenchResult(events=events, seed=seed, phases=measured)
