"""`orderpipe bench`: throughput and peak memory of each phase on generated data.

Every phase runs in a fresh process (spawned), so its peak RSS is its own.
"""

from __future__ import annotations

import multiprocessing
import resource
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orderpipe.errors import OrderpipeError


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


def _generate(workdir: str, events: int, seed: int) -> dict[str, Any]:
    from orderpipe.generate import Dirt, generate_events

    result = generate_events(
        Path(workdir) / "raw.jsonl", events, seed=seed, dirt=Dirt(duplicates=events // 50)
    )
    return {"events": result.events, "lines": result.lines}


@contextmanager
def _eco(workdir: str, enabled: bool, phase: str) -> Iterator[Any]:
    """Wrap a phase in a CodeCarbon task, as run-all does; the tracker starts outside the timing."""
    from orderpipe.eco.tracking import EcoTracker

    tracker = EcoTracker(
        enabled=enabled, output_dir=Path(workdir) / "emissions", country_iso_code="FRA"
    )
    if enabled:
        tracker.start()  # the one-off start-up cost stays out of the phase figure
    try:
        with tracker.phase(phase) as record:
            yield record
    finally:
        tracker.close()


def _etl(workdir: str, eco: bool = False) -> dict[str, Any]:
    from orderpipe.etl import EtlPaths, run_etl

    paths = EtlPaths.under(Path(workdir) / "data", Path(workdir) / "reports")
    with _eco(workdir, eco, "etl") as record:
        result = run_etl(Path(workdir) / "raw.jsonl", paths, merge=False)
    return {
        "events": result.clean,
        "lines": result.lines,
        "rejected": result.rejected,
        "seconds": record.duration_s,
    }


def _ingest(workdir: str, url: str) -> dict[str, Any]:
    from orderpipe.db.engine import drop_tables, make_engine
    from orderpipe.etl import EtlPaths
    from orderpipe.ingest import ingest_dataset, read_clean_dataset

    engine = make_engine(url)
    drop_tables(engine)  # a measurement starts from empty tables
    engine.dispose()
    clean = read_clean_dataset(
        EtlPaths.under(Path(workdir) / "data", Path(workdir) / "reports").parquet
    )
    started = time.perf_counter()
    result = ingest_dataset(clean, url)
    return {
        "events": result.events,
        "method": result.method,
        "seconds": time.perf_counter() - started,
    }


def _train(workdir: str) -> dict[str, Any]:
    from orderpipe.etl import EtlPaths
    from orderpipe.generate import truth_path_for
    from orderpipe.ml.train import run_train

    paths = EtlPaths.under(Path(workdir) / "data", Path(workdir) / "reports")
    results = run_train(
        "all",
        paths.parquet,
        Path(workdir) / "artifacts",
        truth_path=truth_path_for(Path(workdir) / "raw.jsonl"),
    )
    detail: dict[str, Any] = {"events": results[0].rows}
    for result in results:
        test = result.metrics["test"]
        detail[f"{result.name}_seconds"] = round(result.seconds, 3)
        detail[f"{result.name}_estimator"] = result.estimator
        if result.name == "classification":
            detail["roc_auc"] = round(test["roc_auc"], 4)
            detail["brier"] = round(test["brier"], 4)
            if "oracle" in result.metrics:
                detail["oracle_roc_auc"] = round(result.metrics["oracle"]["roc_auc"], 4)
                detail["oracle_brier"] = round(result.metrics["oracle"]["brier"], 4)
        else:
            detail["r2"] = round(test["r2"], 4)
            detail["median_baseline_r2"] = round(result.metrics["median_baseline"]["r2"], 4)
    return detail


def _score(workdir: str) -> dict[str, Any]:
    """Batch scoring alone (no database): one predict_proba per chunk of the clean dataset."""
    from datetime import UTC, datetime

    from orderpipe.etl import EtlPaths
    from orderpipe.ingest import read_clean_dataset
    from orderpipe.ml.model import load_model
    from orderpipe.ml.predict import SCORE_CHUNK, score_batch

    model = load_model(Path(workdir) / "artifacts", "classification")
    clean = read_clean_dataset(
        EtlPaths.under(Path(workdir) / "data", Path(workdir) / "reports").parquet
    )
    started = time.perf_counter()
    now = datetime.now(UTC)
    for offset in range(0, clean.height, SCORE_CHUNK):
        score_batch(model, clean.slice(offset, SCORE_CHUNK), now)
    return {"events": clean.height, "seconds": time.perf_counter() - started}


def _predict(workdir: str, url: str) -> dict[str, Any]:
    from orderpipe.etl import EtlPaths
    from orderpipe.ml.predict import run_predict

    paths = EtlPaths.under(Path(workdir) / "data", Path(workdir) / "reports")
    result = run_predict(paths.parquet, url, Path(workdir) / "artifacts")
    return {"events": result.scored, "seconds": result.seconds}


def _stream(
    workdir: str, url: str, bootstrap: str, rate: float | None, eco: bool = False
) -> dict[str, Any]:
    """`stream run` of the clean JSON Lines; `rate` paces it (latency) or not (throughput)."""
    import asyncio
    import uuid

    from orderpipe.etl import EtlPaths
    from orderpipe.stream.broker import kafka_endpoint
    from orderpipe.stream.pipeline import run_stream
    from orderpipe.stream.producer import ProducerOptions

    paths = EtlPaths.under(Path(workdir) / "data", Path(workdir) / "reports")
    limit = min(20_000, int(rate * 10)) if rate else None
    with kafka_endpoint(bootstrap) as endpoint, _eco(workdir, eco, "stream"):
        result = asyncio.run(
            run_stream(
                endpoint.bootstrap,
                f"bench-{uuid.uuid4().hex[:8]}",
                f"bench-{uuid.uuid4().hex[:8]}",
                paths.jsonl,
                url,
                Path(workdir) / "artifacts",
                embedded=endpoint.embedded,
                producer_options=ProducerOptions(rate=rate, limit=limit),
            )
        )
    streaming = result.seconds - result.startup_seconds
    return {
        "events": result.stored,
        "seconds": streaming,
        "startup_seconds": round(result.startup_seconds, 3),
        **{f"latency_{k}_ms": round(v, 1) for k, v in result.latency_ms.items()},
    }


PHASES: dict[str, Callable[..., dict[str, Any]]] = {
    "stream": _stream,
    "generate": _generate,
    "etl": _etl,
    "ingest": _ingest,
    "train": _train,
    "score": _score,
    "predict": _predict,
}


def _child(name: str, args: tuple[Any, ...], queue: Any) -> None:
    try:
        started = time.perf_counter()
        detail = PHASES[name](*args)
        seconds = detail.pop("seconds", time.perf_counter() - started)
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        queue.put(("ok", seconds, peak_kb / 1024, detail))
    except BaseException as exc:
        queue.put(("error", 0.0, 0.0, {"error": f"{type(exc).__name__}: {exc}"}))


def _measure(label: str, name: str, *args: Any) -> PhaseFigures:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(name, args, queue))
    process.start()
    status, seconds, peak_mb, detail = queue.get()
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


def run_bench(
    events: int,
    *,
    seed: int = 42,
    database_url: str | None = None,
    kafka_bootstrap: str | None = None,
    workdir: Path | None = None,
    on_phase: Callable[[PhaseFigures], None] | None = None,
) -> BenchResult:
    """Time every phase on SQLite and the embedded broker, plus `database_url` (and Kafka).

    The orderpipe tables of `database_url` are dropped and recreated: point it at a database
    kept for benchmarks.
    """
    if events < 1:
        raise OrderpipeError("--events must be at least 1")
    phases: list[PhaseFigures] = []
    with tempfile.TemporaryDirectory(prefix="orderpipe-bench-", dir=workdir) as tmp:
        plan: list[tuple[str, str, tuple[Any, ...]]] = [
            ("generate", "generate", (tmp, events, seed)),
            ("etl", "etl", (tmp,)),
            ("etl-eco-on", "etl", (tmp, True)),
            ("ingest-sqlite", "ingest", (tmp, f"sqlite:///{tmp}/bench.db")),
            ("train", "train", (tmp,)),
            ("score", "score", (tmp,)),
            ("predict-sqlite", "predict", (tmp, f"sqlite:///{tmp}/bench.db")),
            (
                "stream-embedded-sqlite",
                "stream",
                (tmp, f"sqlite:///{tmp}/stream.db", "embedded", None),
            ),
            (
                "stream-eco-on",
                "stream",
                (tmp, f"sqlite:///{tmp}/stream-eco.db", "embedded", None, True),
            ),
            (
                "stream-latency-2000/s",
                "stream",
                (tmp, f"sqlite:///{tmp}/latency.db", "embedded", 2000.0),
            ),
        ]
        if database_url and not database_url.startswith("sqlite"):
            from sqlalchemy.engine import make_url

            backend = make_url(database_url).get_backend_name()
            plan.append((f"ingest-{backend}", "ingest", (tmp, database_url)))
            plan.append((f"predict-{backend}", "predict", (tmp, database_url)))
            if kafka_bootstrap:
                plan.append(
                    (
                        f"stream-kafka-{backend}",
                        "stream",
                        (tmp, database_url, kafka_bootstrap, None),
                    )
                )
        for label, name, args in plan:
            figures = _measure(label, name, *args)
            phases.append(figures)
            if on_phase:
                on_phase(figures)
    return BenchResult(events=events, seed=seed, phases=phases)
