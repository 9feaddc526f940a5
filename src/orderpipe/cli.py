"""The `orderpipe` command line: parse options, call one service, render its result.

No logic lives here. Heavy libraries are imported inside the commands so `--help` is instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from rich.progress import Progress

    from orderpipe.settings import Settings

T = TypeVar("T")

app = typer.Typer(
    name="orderpipe",
    help="E-commerce order pipeline: generate, etl, ingest, train, predict, stream, eco.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON object (the result) on stdout.")
]


@dataclasses.dataclass
class CliState:
    debug: bool = False
    settings: Settings | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # global options


@app.callback()
def main(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of failures.")] = False,
    log_format: Annotated[
        str | None, typer.Option("--log-format", help="text or json (ORDERPIPE_LOG_FORMAT).")
    ] = None,
) -> None:
    """orderpipe: generate -> etl -> ingest -> train -> predict, each step its own command.

    Settings come from ORDERPIPE_* environment variables and ./.env (see `orderpipe doctor`).
    """
    if log_format is not None and log_format not in ("text", "json"):
        raise typer.BadParameter("text or json", param_hint="--log-format")
    ctx.obj = CliState(debug=debug, overrides={"log_format": log_format} if log_format else {})


# ---------------------------------------------------------------- plumbing
def _state(ctx: typer.Context) -> CliState:
    return ctx.obj if isinstance(ctx.obj, CliState) else CliState()


def _consoles(as_json: bool) -> tuple[Console, Console]:
    """(human output, diagnostics): with --json both go to stderr, stdout keeps the JSON."""
    err = Console(stderr=True)
    return (err if as_json else Console()), err


def _fail(ctx: typer.Context, message: str, code: int = 1) -> typer.Exit:
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    if _state(ctx).debug:
        traceback.print_exc()
    return typer.Exit(code)


def _settings(ctx: typer.Context, **overrides: Any) -> Settings:
    from orderpipe.settings import load_settings

    state = _state(ctx)
    if state.settings is None or overrides:
        cleaned = {**state.overrides}
        cleaned.update({key: value for key, value in overrides.items() if value is not None})
        state.settings = load_settings(**cleaned)
        from orderpipe.logs import configure_logging

        configure_logging(state.settings.log_format, state.settings.log_level)
    return state.settings


def _run(ctx: typer.Context, call: Callable[[], T]) -> T:
    """Call a service; domain errors become one red line and exit 1."""
    from orderpipe.errors import OrderpipeError

    try:
        return call()
    except OrderpipeError as exc:
        raise _fail(ctx, str(exc)) from None
    except KeyboardInterrupt:
        raise _fail(ctx, "interrupted", 130) from None
    except typer.Exit:
        raise
    except Exception as exc:
        if _state(ctx).debug:
            raise
        message = f"unexpected {type(exc).__name__}: {exc} (--debug shows the traceback)"
        raise _fail(ctx, message) from None


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 6)
    return value


def _emit(result: Any, as_json: bool, render: Callable[[Console], None]) -> None:
    out, _ = _consoles(as_json)
    render(out)
    if as_json:
        sys.stdout.write(json.dumps(_jsonable(result)) + "\n")
        sys.stdout.flush()


def _emit_table(result: Any, as_json: bool, title: str, rows: list[tuple[str, str]]) -> None:
    """Render `rows` as a two-column table (or dump `result` with --json)."""
    _emit(result, as_json, lambda out: out.print(_table(title, rows)))


@contextmanager
def _progress(as_json: bool) -> Iterator[Progress]:
    """A progress display on stderr when it is a terminal; silent otherwise."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    err = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
        transient=True,
    ) as progress:
        yield progress


def _table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in rows:
        table.add_row(key, value)
    return table


def _n(value: float) -> str:
    return f"{value:,.0f}"


# ---------------------------------------------------------------- commands
@app.command()
def generate(
    ctx: typer.Context,
    events: Annotated[int, typer.Option("--events", "-n", min=1, help="Distinct events.")] = 4000,
    duplicates: Annotated[
        int | None,
        typer.Option(min=0, help="Extra lines re-sending an event (default: 2 % of --events)."),
    ] = None,
    bad_lines: Annotated[
        int, typer.Option(min=0, help="Malformed lines (invalid JSON, missing keys, wrong types).")
    ] = 0,
    missing_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of events with a missing channel.")
    ] = 0.05,
    untidy_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of text fields with stray spaces/case.")
    ] = 0.10,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bytes.")] = 42,
    days: Annotated[int, typer.Option(min=1, help="Days covered, from 2026-01-01.")] = 60,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Default: <data_dir>/raw/orders_events.jsonl",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write synthetic raw order events as JSON Lines.

    Example: [bold]orderpipe generate --events 100000 --bad-lines 20 --seed 7[/]
    """
    from orderpipe.generate import Dirt, generate_events

    def call() -> Any:
        settings = _settings(ctx)
        target = output or settings.data_dir / "raw" / "orders_events.jsonl"
        dirt = Dirt(
            duplicates=events // 50 if duplicates is None else duplicates,
            missing_rate=missing_rate,
            untidy_rate=untidy_rate,
            bad_lines=bad_lines,
        )
        return generate_events(target, events, seed=seed, dirt=dirt, days=days)

    result = _run(ctx, call)
    _emit_table(
        result,
        as_json,
        "generate",
        [
            ("events", _n(result.events)),
            ("duplicate lines", _n(result.duplicates)),
            ("bad lines", _n(result.bad_lines)),
            ("lines written", _n(result.lines)),
            ("seconds", f"{result.seconds:.2f}"),
            ("output", str(result.output)),
        ],
    )


@app.command()
def etl(
    ctx: typer.Context,
    input_path: Annotated[
        Path | None,
        typer.Option(
            "--input", "-i", help="Raw JSON Lines; default: <data_dir>/raw/orders_events.jsonl"
        ),
    ] = None,
    replace: Annotated[
        bool,
        typer.Option("--replace", help="Rebuild the dataset, do not merge."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Clean raw events (polars): types, dedupe, impute, features; quarantine bad lines.

    Writes <data_dir>/processed/orders_events_cleaned.{parquet,csv,jsonl},
    <data_dir>/rejected/<input>.rejected.jsonl and <reports_dir>/etl_quality.json.

    Example: [bold]orderpipe etl --input data/raw/orders_events.jsonl[/]
    """
    from orderpipe.etl import EtlPaths, run_etl

    def call() -> Any:
        settings = _settings(ctx)
        source = input_path or settings.data_dir / "raw" / "orders_events.jsonl"
        paths = EtlPaths.under(settings.data_dir, settings.reports_dir)
        return run_etl(source, paths, merge=not replace)

    result = _run(ctx, call)

    def render(out: Console) -> None:
        rows = [
            ("lines read", _n(result.lines)),
            ("clean events", _n(result.clean)),
            ("duplicates dropped", _n(result.duplicates)),
            ("quarantined", _n(result.rejected)),
        ]
        rows += [(f"  {reason}", _n(count)) for reason, count in result.rejected_by_reason.items()]
        rows += [
            ("dataset rows", _n(result.dataset_rows)),
            ("new events", _n(result.new_events)),
            ("changed events", _n(result.changed_events)),
            ("seconds", f"{result.seconds:.2f}"),
            ("dataset", str(result.outputs["parquet"])),
        ]
        out.print(_table("etl", rows))

    _emit(result, as_json, render)


@app.command()
def ingest(
    ctx: typer.Context,
    input_path: Annotated[
        Path | None,
        typer.Option("--input", "-i", help="Clean dataset (.parquet/.csv/.jsonl); default: etl's."),
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="Overrides ORDERPIPE_DATABASE_URL for this run.")
    ] = None,
    chunk_size: Annotated[
        int | None,
        typer.Option(min=1, help="Rows per transaction; default: best for the database."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Upsert the clean dataset into table_customers, table_orders and table_events.

    Bulk and idempotent: re-running leaves identical tables; older data never overwrites newer.

    Example: [bold]orderpipe ingest --database-url mysql+pymysql://user:pw@127.0.0.1:3306/shop[/]
    """
    from orderpipe.etl import EtlPaths
    from orderpipe.ingest import run_ingest

    with _progress(as_json) as progress:
        tasks: dict[str, Any] = {}

        def on_progress(table: str, done: int, total: int) -> None:
            if table not in tasks:
                tasks[table] = progress.add_task(table, total=total)
            progress.update(tasks[table], completed=done)

        def call() -> Any:
            settings = _settings(ctx, database_url=database_url, ingest_chunk_size=chunk_size)
            source = input_path or EtlPaths.under(settings.data_dir, settings.reports_dir).parquet
            return run_ingest(
                source,
                settings.url,
                chunk_size=settings.ingest_chunk_size,
                local_infile=settings.mysql_local_infile,
                progress=on_progress,
            )

        result = _run(ctx, call)
    _emit_table(
        result,
        as_json,
        "ingest",
        [
            ("database", result.database),
            ("method", result.method),
            ("events", _n(result.events)),
            ("orders", _n(result.orders)),
            ("customers", _n(result.customers)),
            ("seconds", f"{result.seconds:.2f}"),
            ("events/s", _n(result.events_per_second)),
        ],
    )


@app.command()
def train(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="classification, regression or all.")] = "all",
    input_path: Annotated[
        Path | None,
        typer.Option("--input", "-i", help="Clean Parquet; default: etl's dataset."),
    ] = None,
    truth: Annotated[
        Path | None,
        typer.Option(
            help="Generator truth file for the oracle metrics; default: found beside "
            "<data_dir>/raw/orders_events.jsonl when it exists."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the splits and estimators.")] = 42,
    as_json: JsonOption = False,
) -> None:
    """Train the return classifier and/or the basket-value regressor; save Pipeline + metadata.

    Writes <artifacts_dir>/<name>_model.joblib and <name>_model_meta.json.

    Example: [bold]orderpipe train classification[/]
    """
    from orderpipe.etl import EtlPaths
    from orderpipe.generate import truth_path_for
    from orderpipe.ml.train import MODEL_KINDS, run_train

    if model not in MODEL_KINDS:
        raise _fail(ctx, f"unknown model {model!r}: choose classification, regression or all", 2)

    def call() -> Any:
        settings = _settings(ctx)
        dataset = input_path or EtlPaths.under(settings.data_dir, settings.reports_dir).parquet
        truth_path = truth or truth_path_for(settings.data_dir / "raw" / "orders_events.jsonl")
        return run_train(model, dataset, settings.artifacts_dir, seed=seed, truth_path=truth_path)

    results = _run(ctx, call)

    def render(out: Console) -> None:
        for result in results:
            test = result.metrics["test"]
            rows = [
                ("estimator", result.estimator),
                ("model_version", result.model_version),
                ("rows", _n(result.rows)),
                ("seconds", f"{result.seconds:.1f}"),
            ]
            if result.name == "classification":
                rows += [
                    (key, f"{test[key]:.4f}")
                    for key in (
                        "roc_auc",
                        "pr_auc",
                        "log_loss",
                        "brier",
                        "f1",
                        "precision",
                        "recall",
                    )
                ]
                if "oracle" in result.metrics:
                    oracle = result.metrics["oracle"]
                    rows += [
                        ("oracle roc_auc", f"{oracle['roc_auc']:.4f}"),
                        ("oracle brier", f"{oracle['brier']:.4f}"),
                    ]
            else:
                base = result.metrics["median_baseline"]
                rows += [
                    (key, f"{test[key]:.3f} (median baseline {base[key]:.3f})")
                    for key in ("mae", "rmse", "r2")
                ]
            rows.append(("model", str(result.model_path)))
            out.print(_table(f"train {result.name}", rows))

    _emit({"models": results}, as_json, render)


@app.command()
def predict(
    ctx: typer.Context,
    input_path: Annotated[
        Path | None,
        typer.Option("--input", "-i", help="Clean dataset; default: etl's Parquet."),
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="Overrides ORDERPIPE_DATABASE_URL for this run.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Score the clean dataset with the saved classifier into table_predictions.

    Only events already in table_events are scored (run ingest first); the others are counted.

    Example: [bold]orderpipe predict --json[/]
    """
    from orderpipe.etl import EtlPaths
    from orderpipe.ml.predict import run_predict

    def call() -> Any:
        settings = _settings(ctx, database_url=database_url)
        source = input_path or EtlPaths.under(settings.data_dir, settings.reports_dir).parquet
        return run_predict(
            source,
            settings.url,
            settings.artifacts_dir,
            chunk_size=settings.ingest_chunk_size,
            local_infile=settings.mysql_local_infile,
        )

    result = _run(ctx, call)
    _emit_table(
        result,
        as_json,
        "predict",
        [
            ("database", result.database),
            ("model_version", result.model_version),
            ("events in dataset", _n(result.events)),
            ("scored", _n(result.scored)),
            ("not in table_events", _n(result.not_in_database)),
            ("scoring events/s", _n(result.scoring_events_per_second)),
            ("seconds", f"{result.seconds:.2f}"),
        ],
    )


stream_app = typer.Typer(
    help="Kafka streaming: produce events, consume them into the database, or both at once.",
    no_args_is_help=True,
)
app.add_typer(stream_app, name="stream")

BatchSize = Annotated[int, typer.Option(min=1, help="Messages per micro-batch.")]
BatchWait = Annotated[int, typer.Option(min=1, help="Longest wait for a batch, in ms.")]
SourceKind = Annotated[
    str, typer.Option("--source", help="clean (etl's JSON Lines) or raw (generator file).")
]


def _default_stream_source(settings: Settings, kind: str) -> Path:
    from orderpipe.etl import EtlPaths

    if kind == "raw":
        return settings.data_dir / "raw" / "orders_events.jsonl"
    return EtlPaths.under(settings.data_dir, settings.reports_dir).jsonl


def _producer_options(**values: Any) -> Any:
    from orderpipe.stream.producer import ProducerOptions

    return ProducerOptions(**values)


@stream_app.command("produce")
def stream_produce(
    ctx: typer.Context,
    input_path: Annotated[
        Path | None, typer.Option("--input", "-i", help="Default: etl's JSON Lines (clean).")
    ] = None,
    source: SourceKind = "clean",
    limit: Annotated[int | None, typer.Option(min=1, help="Send at most N events.")] = None,
    rate: Annotated[float | None, typer.Option(min=0.1, help="Events per second.")] = None,
    partitions: Annotated[int, typer.Option(min=1, help="For a topic created here.")] = 3,
    linger_ms: Annotated[int, typer.Option(min=0)] = 5,
    max_batch_size: Annotated[int, typer.Option(min=1024, help="Bytes per batch.")] = 262_144,
    compression: Annotated[
        str | None, typer.Option(help="gzip, snappy, lz4 or zstd (as the client supports).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Send events to the topic, keyed by order_id (creates the topic when missing).

    Example: [bold]orderpipe stream produce --source raw --rate 2000[/]
    """
    from orderpipe.stream.broker import kafka_endpoint
    from orderpipe.stream.producer import produce

    def call() -> Any:
        settings = _settings(ctx)
        path = input_path or _default_stream_source(settings, source)
        options = _producer_options(
            linger_ms=linger_ms,
            max_batch_size=max_batch_size,
            compression=compression,
            partitions=partitions,
            limit=limit,
            rate=rate,
        )
        with kafka_endpoint(settings.kafka_bootstrap_servers) as endpoint:
            return asyncio.run(
                produce(
                    endpoint.bootstrap,
                    settings.kafka_topic,
                    path,
                    kind=source,
                    embedded=endpoint.embedded,
                    options=options,
                )
            )

    result = _run(ctx, call)
    rows = [("topic", result.topic), ("sent", _n(result.sent)), ("skipped", _n(result.skipped))]
    rows += [(f"  {reason}", _n(count)) for reason, count in result.skipped_by_reason.items()]
    rows += [("events/s", _n(result.events_per_second)), ("seconds", f"{result.seconds:.2f}")]
    _emit_table(result, as_json, "stream produce", rows)


@stream_app.command("consume")
def stream_consume(
    ctx: typer.Context,
    batch_size: BatchSize = 20_000,
    batch_wait_ms: BatchWait = 100,
    max_events: Annotated[int | None, typer.Option(min=1, help="Stop after N messages.")] = None,
    idle_timeout: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            help="Stop after S seconds without messages (counted from the partition assignment).",
        ),
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="Overrides ORDERPIPE_DATABASE_URL for this run.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Consume micro-batches into the database with predictions; more processes = more throughput.

    Ctrl-C / SIGTERM finish the current batch, commit it, and exit 0.

    Example: [bold]orderpipe stream consume --idle-timeout 10[/]
    """
    from orderpipe.stream.broker import kafka_endpoint
    from orderpipe.stream.consumer import ConsumerOptions, StreamConsumer

    def call() -> Any:
        settings = _settings(ctx, database_url=database_url)
        options = ConsumerOptions(
            batch_size=batch_size,
            batch_wait_ms=batch_wait_ms,
            max_events=max_events,
            idle_timeout=idle_timeout,
        )
        with kafka_endpoint(settings.kafka_bootstrap_servers) as endpoint:
            consumer = StreamConsumer(
                endpoint.bootstrap,
                settings.kafka_topic,
                settings.kafka_group_id,
                settings.url,
                settings.artifacts_dir,
                embedded=endpoint.embedded,
                options=options,
            )
            return asyncio.run(_until_signal(consumer.run(), consumer.stop))

    result = _run(ctx, call)
    _emit_table(
        result,
        as_json,
        "stream consume",
        [
            ("consumed", _n(result.consumed)),
            ("stored", _n(result.stored)),
            ("dead-lettered", _n(result.dead_lettered)),
            ("batches", _n(result.batches)),
            ("database retries", _n(result.database_retries)),
            ("events/s", _n(result.events_per_second)),
            ("seconds", f"{result.seconds:.2f}"),
        ],
    )


@stream_app.command("run")
def stream_run(
    ctx: typer.Context,
    input_path: Annotated[
        Path | None, typer.Option("--input", "-i", help="Default: etl's JSON Lines (clean).")
    ] = None,
    source: SourceKind = "clean",
    limit: Annotated[int | None, typer.Option(min=1, help="Send at most N events.")] = None,
    rate: Annotated[float | None, typer.Option(min=0.1, help="Events per second.")] = None,
    batch_size: BatchSize = 20_000,
    batch_wait_ms: BatchWait = 100,
    partitions: Annotated[int, typer.Option(min=1)] = 3,
    database_url: Annotated[
        str | None, typer.Option(help="Overrides ORDERPIPE_DATABASE_URL for this run.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Producer and consumer together until every event is stored or dead-lettered.

    Example: [bold]orderpipe stream run --source raw[/]
    """
    from orderpipe.stream.consumer import ConsumerOptions
    from orderpipe.stream.pipeline import run_stream_with_settings

    def call() -> Any:
        settings = _settings(ctx, database_url=database_url)
        path = input_path or _default_stream_source(settings, source)
        return run_stream_with_settings(
            settings,
            path,
            kind=source,
            producer_options=_producer_options(partitions=partitions, limit=limit, rate=rate),
            consumer_options=ConsumerOptions(batch_size=batch_size, batch_wait_ms=batch_wait_ms),
        )

    result = _run(ctx, call)
    latency = result.latency_ms
    _emit_table(
        result,
        as_json,
        "stream run",
        [
            ("produced", _n(result.produced)),
            ("skipped", _n(result.skipped)),
            ("stored", _n(result.stored)),
            ("dead-lettered", _n(result.dead_lettered)),
            ("events/s (streaming)", _n(result.events_per_second)),
            ("seconds (start-up)", f"{result.seconds:.2f} ({result.startup_seconds:.2f})"),
            *[(f"latency {key} (ms)", f"{value:,.1f}") for key, value in latency.items()],
        ],
    )


async def _until_signal(work: Any, stop: Callable[[], None]) -> Any:
    """Run `work`; SIGINT/SIGTERM call `stop` so it can finish cleanly."""
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop)
    return await work


@app.command()
def broker(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(min=1, max=65535)] = 9092,
) -> None:
    """Run the embedded Kafka-compatible broker (tansu, in memory) in the foreground.

    Example: [bold]orderpipe broker --port 9092[/]  then
    ORDERPIPE_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 orderpipe stream consume
    """
    import time as _time

    from orderpipe.stream.broker import EmbeddedBroker

    embedded = EmbeddedBroker(port=port)

    def call() -> None:
        Console(stderr=True).print(f"embedded broker on {embedded.start()} (Ctrl-C stops it)")
        try:
            while embedded.process and embedded.process.poll() is None:
                _time.sleep(0.5)
        finally:
            embedded.stop()

    _run(ctx, call)


eco_app = typer.Typer(help="Eco-impact (CodeCarbon) of the pipeline.", no_args_is_help=True)
app.add_typer(eco_app, name="eco")


@eco_app.command("report")
def eco_report(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Merge every CodeCarbon file of the output folder into the eco report (MD, CSV, SVG).

    Example: [bold]orderpipe eco report[/]
    """
    from orderpipe.eco.report import run_eco_report

    def call() -> Any:
        settings = _settings(ctx)
        return run_eco_report(settings.eco_output_dir, settings.reports_dir)

    result = _run(ctx, call)
    _emit(result, as_json, lambda out: out.print(_eco_table(result)))


def _eco_table(report: Any) -> Table:
    table = Table(title=f"eco report ({report.runs} run(s))", title_justify="left")
    for column in ("phase", "seconds", "energy (kWh)", "CO2e (kg)", "share", "kWh/1k events"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for p in report.phases:
        per = p.energy_kwh_per_1000_events
        table.add_row(
            p.phase,
            f"{p.duration_s:.2f}",
            f"{p.energy_kwh:.2e}",
            f"{p.emissions_kg:.2e}",
            f"{p.share:.0%}",
            f"{per:.2e}" if per else "-",
        )
    return table


@app.command("run-all")
def run_all_command(
    ctx: typer.Context,
    events: Annotated[int, typer.Option("--events", "-n", min=1)] = 4000,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Start from empty outputs, models and tables.")
    ] = False,
    eco: Annotated[bool, typer.Option("--eco/--no-eco", help="Measure with CodeCarbon.")] = True,
    seed: Annotated[int, typer.Option()] = 42,
    as_json: JsonOption = False,
) -> None:
    """Every phase in order: generate, etl, ingest, train, predict, stream run, eco report.

    Uses the embedded defaults (SQLite, embedded broker) unless ORDERPIPE_DATABASE_URL and
    ORDERPIPE_KAFKA_BOOTSTRAP_SERVERS point elsewhere.

    Example: [bold]orderpipe run-all --events 4000 --fresh[/]
    """
    from orderpipe.pipeline import run_all

    _, err = _consoles(as_json)

    def on_phase(summary: Any) -> None:
        err.print(f"[green]ok[/] {summary.phase}: {summary.seconds:.2f} s", highlight=False)

    def call() -> Any:
        settings = _settings(ctx)
        if not eco:
            settings = settings.model_copy(update={"eco_enabled": False})
        return run_all(settings, events, fresh=fresh, seed=seed, on_phase=on_phase)

    result = _run(ctx, call)

    def render(out: Console) -> None:
        table = Table(
            title=f"run-all: {result.events:,} events in {result.seconds:.1f} s",
            title_justify="left",
        )
        for column in ("phase", "seconds", "events", "events/s", "energy (kWh)"):
            table.add_column(column, justify="left" if column == "phase" else "right")
        for p in result.phases:
            table.add_row(
                p.phase,
                f"{p.seconds:.2f}",
                _n(p.events or 0),
                _n(p.events_per_second or 0),
                f"{p.energy_kwh:.2e}" if p.energy_kwh is not None else "-",
            )
        out.print(table)
        if result.report:
            out.print(f"eco report: {result.report['markdown']}")

    _emit(result, as_json, render)


@app.command()
def doctor(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show the settings in effect (secrets masked) and check the database and Kafka.

    Exit code 1 when something is down, with the reason.

    Example: [bold]ORDERPIPE_DATABASE_URL=mysql+pymysql://u:p@127.0.0.1/db orderpipe doctor[/]
    """
    from orderpipe.doctor import run_doctor

    result = _run(ctx, lambda: run_doctor(_settings(ctx)))

    def render(out: Console) -> None:
        out.print(_table("settings", list(result.settings.items())))
        checks = Table(title="checks", title_justify="left")
        for column in ("check", "status", "detail"):
            checks.add_column(column)
        for check in result.checks:
            status = "[green]ok[/]" if check.ok else "[red]FAIL[/]"
            checks.add_row(check.name, status, check.detail)
        out.print(checks)
        out.print(_table("versions", list(result.versions.items())))

    _emit(result, as_json, render)
    if not result.ok:
        failed = "; ".join(f"{c.name}: {c.detail}" for c in result.checks if not c.ok)
        raise _fail(ctx, failed)


@app.command()
def bench(
    ctx: typer.Context,
    events: Annotated[int, typer.Option("--events", "-n", min=1)] = 100_000,
    seed: Annotated[int, typer.Option()] = 42,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="Also ingest into this MySQL/MariaDB database. Its orderpipe tables "
            "are DROPPED and recreated: use a database kept for benchmarks."
        ),
    ] = None,
    kafka_bootstrap: Annotated[
        str | None,
        typer.Option(help="With --database-url: also stream through this Kafka cluster."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Measure events/s and peak memory of every phase, each in its own process.

    Example: [bold]orderpipe bench --events 1000000 --json[/]
    """
    from orderpipe.bench import run_bench

    _, err = _consoles(as_json)

    def on_phase(figures: Any) -> None:
        err.print(
            f"[dim]{figures.phase}: {figures.seconds:.2f} s, "
            f"{figures.events_per_second:,.0f} events/s[/]",
            highlight=False,
        )

    result = _run(
        ctx,
        lambda: run_bench(
            events,
            seed=seed,
            database_url=database_url,
            kafka_bootstrap=kafka_bootstrap,
            on_phase=on_phase,
        ),
    )

    def render(out: Console) -> None:
        table = Table(
            title=f"bench: {result.events:,} events (seed {result.seed})", title_justify="left"
        )
        for column in ("phase", "events", "seconds", "events/s", "peak RSS (MB)", "p99 (ms)"):
            table.add_column(column, justify="left" if column == "phase" else "right")
        for p in result.phases:
            table.add_row(
                p.phase,
                _n(p.events),
                f"{p.seconds:.2f}",
                _n(p.events_per_second),
                f"{p.peak_rss_mb:,.0f}",
                f"{p.detail['latency_p99_ms']:,.0f}" if "latency_p99_ms" in p.detail else "",
            )
        out.print(table)

    _emit(result, as_json, render)


def run() -> None:
    """Entry point for `python -m orderpipe`."""
    app(prog_name="orderpipe")
