"""Streaming commands: stream produce | consume | run, and the embedded broker."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from orderpipe.cli.app import DatabaseUrlOption, JsonOption, app, run_service, settings_of
from orderpipe.cli.render import emit_table, n
from orderpipe.layout import StreamSource

stream_app = typer.Typer(
    help="Kafka streaming: produce events, consume them into the database, or both at once.",
    no_args_is_help=True,
)
app.add_typer(stream_app, name="stream")

BatchSize = Annotated[int, typer.Option(min=1, help="Messages per micro-batch.")]
BatchWait = Annotated[int, typer.Option(min=1, help="Longest wait for a batch, in ms.")]
SourceKind = Annotated[
    StreamSource,
    typer.Option("--source", help="clean (etl's JSON Lines) or raw (generator file)."),
]
InputOption = Annotated[
    Path | None, typer.Option("--input", "-i", help="Default: etl's JSON Lines (clean).")
]
LimitOption = Annotated[int | None, typer.Option(min=1, help="Send at most N events.")]
RateOption = Annotated[float | None, typer.Option(min=0.1, help="Events per second.")]


@stream_app.command("produce")
def stream_produce(
    ctx: typer.Context,
    input_path: InputOption = None,
    source: SourceKind = StreamSource.clean,
    limit: LimitOption = None,
    rate: RateOption = None,
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
    from orderpipe.layout import Layout
    from orderpipe.stream.pipeline import produce_with_settings
    from orderpipe.stream.producer import ProducerOptions

    def call() -> Any:
        settings = settings_of(ctx)
        options = ProducerOptions(
            linger_ms=linger_ms,
            max_batch_size=max_batch_size,
            compression=compression,
            partitions=partitions,
            limit=limit,
            rate=rate,
        )
        path = input_path or Layout.from_settings(settings).stream_source(source)
        return produce_with_settings(settings, path, kind=source.value, options=options)

    result = run_service(ctx, call)
    rows = [("topic", result.topic), ("sent", n(result.sent)), ("skipped", n(result.skipped))]
    rows += [(f"  {reason}", n(count)) for reason, count in result.skipped_by_reason.items()]
    rows += [("events/s", n(result.events_per_second)), ("seconds", f"{result.seconds:.2f}")]
    emit_table(result, as_json, "stream produce", rows)


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
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Consume micro-batches into the database with predictions; more processes = more throughput.

    Ctrl-C / SIGTERM finish the current batch, commit it, and exit 0.

    Example: [bold]orderpipe stream consume --idle-timeout 10[/]
    """
    from orderpipe.stream.consumer import ConsumerOptions
    from orderpipe.stream.pipeline import consume_with_settings

    options = ConsumerOptions(
        batch_size=batch_size,
        batch_wait_ms=batch_wait_ms,
        max_events=max_events,
        idle_timeout=idle_timeout,
    )
    result = run_service(
        ctx, lambda: consume_with_settings(settings_of(ctx, database_url=database_url), options)
    )
    emit_table(
        result,
        as_json,
        "stream consume",
        [
            ("consumed", n(result.consumed)),
            ("stored", n(result.stored)),
            ("dead-lettered", n(result.dead_lettered)),
            ("batches", n(result.batches)),
            ("database retries", n(result.database_retries)),
            ("events/s", n(result.events_per_second)),
            ("seconds", f"{result.seconds:.2f}"),
        ],
    )


@stream_app.command("run")
def stream_run(
    ctx: typer.Context,
    input_path: InputOption = None,
    source: SourceKind = StreamSource.clean,
    limit: LimitOption = None,
    rate: RateOption = None,
    batch_size: BatchSize = 20_000,
    batch_wait_ms: BatchWait = 100,
    partitions: Annotated[int, typer.Option(min=1)] = 3,
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Producer and consumer together until every event is stored or dead-lettered.

    Example: [bold]orderpipe stream run --source raw[/]
    """
    from orderpipe.layout import Layout
    from orderpipe.stream.consumer import ConsumerOptions
    from orderpipe.stream.pipeline import run_stream_with_settings
    from orderpipe.stream.producer import ProducerOptions

    def call() -> Any:
        settings = settings_of(ctx, database_url=database_url)
        return run_stream_with_settings(
            settings,
            input_path or Layout.from_settings(settings).stream_source(source),
            kind=source.value,
            producer_options=ProducerOptions(partitions=partitions, limit=limit, rate=rate),
            consumer_options=ConsumerOptions(batch_size=batch_size, batch_wait_ms=batch_wait_ms),
        )

    result = run_service(ctx, call)
    emit_table(
        result,
        as_json,
        "stream run",
        [
            ("produced", n(result.produced)),
            ("skipped", n(result.skipped)),
            ("stored", n(result.stored)),
            ("dead-lettered", n(result.dead_lettered)),
            ("events/s (streaming)", n(result.events_per_second)),
            ("seconds (start-up)", f"{result.seconds:.2f} ({result.startup_seconds:.2f})"),
            *[(f"latency {key} (ms)", f"{value:,.1f}") for key, value in result.latency_ms.items()],
        ],
    )


@app.command()
def broker(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(min=1, max=65535)] = 9092,
) -> None:
    """Run the embedded Kafka-compatible broker (tansu, in memory) in the foreground.

    Example: [bold]orderpipe broker --port 9092[/]  then
    ORDERPIPE_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 orderpipe stream consume
    """
    from orderpipe.stream.broker import EmbeddedBroker

    def announce(bootstrap: str) -> None:
        Console(stderr=True).print(f"embedded broker on {bootstrap} (Ctrl-C stops it)")

    run_service(ctx, lambda: EmbeddedBroker(port=port).serve(on_ready=announce))
