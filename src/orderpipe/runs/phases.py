"""The pipeline's phases in order: what each one runs and what it counts.

`run-all` runs them one after another; `bench` runs each in a process of its own. Both go
through `run_phase`, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orderpipe.core.layout import Layout

# The services are imported here, not inside the phases, so no phase's figures (time, energy)
# include the import of its libraries. Only run-all and bench import this module.
from orderpipe.etl.run import run_etl
from orderpipe.generate.dirt import Dirt
from orderpipe.generate.writer import generate_events
from orderpipe.ingest import run_ingest
from orderpipe.ml.predict import run_predict
from orderpipe.ml.train import run_train
from orderpipe.stream.producer import ProducerOptions
from orderpipe.stream.run import run_stream_with_settings

if TYPE_CHECKING:
    from orderpipe.core.settings import Settings
    from orderpipe.eco.tracking import EcoTracker, PhaseRecord


@dataclass(frozen=True)
class PhaseOptions:
    """What a run of the phases is asked for, beyond the settings."""

    events: int = 4000
    seed: int = 42
    etl_merge: bool = True  # bench measures a rebuild: its folder holds nothing to merge with
    stream_rate: float | None = None  # events/s; None sends as fast as it can
    stream_limit: int | None = None


@dataclass(frozen=True)
class Phase:
    """One step of the pipeline."""

    name: str
    run: Callable[[Settings, PhaseOptions], Any]
    count: Callable[[Any], int]  # the events it handled (events/s, energy per 1,000 events)
    figures: Callable[[Any], dict[str, Any]] = lambda _result: {}  # extra figures for bench


def _generate(settings: Settings, options: PhaseOptions) -> Any:
    raw = Layout.from_settings(settings).raw
    return generate_events(raw, options.events, seed=options.seed, dirt=Dirt())


def _etl(settings: Settings, options: PhaseOptions) -> Any:
    layout = Layout.from_settings(settings)
    return run_etl(layout.raw, layout, merge=options.etl_merge)


def _ingest(settings: Settings, _options: PhaseOptions) -> Any:
    return run_ingest(
        Layout.from_settings(settings).table,
        settings.db_url,
        chunk_size=settings.ingest_chunk_size,
        local_infile=settings.mysql_local_infile,
    )


def _train(settings: Settings, options: PhaseOptions) -> Any:
    layout = Layout.from_settings(settings)
    return run_train(
        "all", layout.table, layout.artifacts_dir, seed=options.seed, truth_path=layout.truth
    )


def _train_figures(results: Any) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for result in results:
        test = result.metrics["test"]
        figures[f"{result.name}_seconds"] = round(result.seconds, 3)
        figures[f"{result.name}_estimator"] = result.estimator
        if result.name == "classification":
            figures.update(roc_auc=round(test["roc_auc"], 4), brier=round(test["brier"], 4))
            oracle = result.metrics.get("oracle")
            if oracle:
                figures["oracle_roc_auc"] = round(oracle["roc_auc"], 4)
                figures["oracle_brier"] = round(oracle["brier"], 4)
        else:
            base = result.metrics["median_baseline"]
            figures.update(r2=round(test["r2"], 4), median_baseline_r2=round(base["r2"], 4))
    return figures


def _predict(settings: Settings, _options: PhaseOptions) -> Any:
    layout = Layout.from_settings(settings)
    return run_predict(
        layout.table,
        settings.db_url,
        layout.artifacts_dir,
        chunk_size=settings.ingest_chunk_size,
        local_infile=settings.mysql_local_infile,
    )


def _stream(settings: Settings, options: PhaseOptions) -> Any:
    producer = ProducerOptions(rate=options.stream_rate, limit=options.stream_limit)
    return run_stream_with_settings(
        settings, Layout.from_settings(settings).table, producer_options=producer
    )


def _stream_figures(result: Any) -> dict[str, Any]:
    # bench's own figure is the whole call (broker and consumer start included), as a user
    # waits for it; the rate once the consumer is ready is reported beside it, labelled
    return {
        "startup_seconds": round(result.startup_seconds, 3),
        "streaming_events_per_second": round(result.events_per_second),
        # latency_*: produce to stored; fetch_to_stored_*: the consumer's own share
        **{f"latency_{k}_ms": round(v, 1) for k, v in result.produce_to_stored_ms.items()},
        **{f"fetch_to_stored_{k}_ms": round(v, 1) for k, v in result.fetch_to_stored_ms.items()},
    }


PHASES: tuple[Phase, ...] = (
    Phase("generate", _generate, lambda r: r.lines),
    Phase("etl", _etl, lambda r: r.lines, lambda r: {"clean": r.clean, "rejected": r.rejected}),
    Phase("ingest", _ingest, lambda r: r.events, lambda r: {"method": r.method}),
    Phase("train", _train, lambda r: r[0].rows, _train_figures),
    Phase(
        "predict",
        _predict,
        lambda r: r.scored,
        lambda r: {"scoring_events_per_second": round(r.scoring_events_per_second)},
    ),
    Phase(
        "stream",
        _stream,
        lambda r: r.produced,
        _stream_figures,
    ),
)
PHASES_BY_NAME = {phase.name: phase for phase in PHASES}


def run_phase(
    phase: Phase, settings: Settings, options: PhaseOptions, tracker: EcoTracker
) -> tuple[Any, PhaseRecord]:
    """Run one phase as one eco-measured task; returns its result and its measurement."""
    with tracker.phase(phase.name) as record:
        result = phase.run(settings, options)
        record.events = phase.count(result)
    return result, record
