"""Streaming commands: stream produce | consume | run, and the embedded broker."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from orderpipe.cli.app import DatabaseUrlOption, JsonOption, app, run_service, settings_of
from orderpipe.cli.render import emit_table, n
from orderpipe.core.history import append_stream_run
from orderpipe.core.layout import Layout, StreamSource
from orderpipe.stream.broker import EmbeddedBroker

stream_app = typer.Typer(
    help="Kafka streaming: produce events, consume them into the database, or both at once.",
    no_args_is_help=True,
)
app.add_typer(stream_app, name="stream")

BatchSize = Annotated[int, typer.Option(min=1, help="Messages per micro-batch.")]
BatchWait = Annotated[int, typer.Option(min=1, help="Longest wait for a batch, in ms.")]
SourceKind = Annotated[
    StreamSource,
    typer.Option("--source", help="clean (etl's table) or raw (generator file)."),
]
InputOption = Annotated[
    Path | None,
    typer.Option(
        "--input",
        "-i",
        help="Default: etl's table (clean) or the raw file (raw); a JSON Lines file otherwise.",
    ),
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
    from orderpipe.stream.producer import ProducerOptions
    from orderpipe.stream.run import produce_with_settings

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
    database_wait: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds to wait for a database that is down at start (0: fail at once).",
        ),
    ] = 120.0,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve Prometheus metrics on http://ADDR:PORT/metrics while consuming.",
        ),
    ] = None,
    metrics_addr: Annotated[
        str, typer.Option(help="Address the metrics are served on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Consume micro-batches into the database with predictions; more processes = more throughput.

    Ctrl-C / SIGTERM finish the current batch, commit it, and exit 0. A fault retrying cannot
    fix (permission, missing table, a model that fails) stops it with exit 1 and nothing of
    the failing batch committed: fix it and restart.

    Example: [bold]orderpipe stream consume --idle-timeout 10[/]
    """
    from orderpipe.stream.lifecycle import ConsumerOptions
    from orderpipe.stream.run import consume_with_settings

    options = ConsumerOptions(
        batch_size=batch_size,
        batch_wait_ms=batch_wait_ms,
        max_events=max_events,
        idle_timeout=idle_timeout,
        database_wait=database_wait,
    )
    result = run_service(
        ctx,
        lambda: consume_with_settings(
            settings_of(ctx, database_url=database_url),
            options,
            metrics_port=metrics_port,
            metrics_addr=metrics_addr,
        ),
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
            ("events/s (while working)", n(result.events_per_second)),
            ("seconds busy (whole run)", f"{result.busy_seconds:.2f} ({result.seconds:.2f})"),
            *_latency_rows(result),
        ],
    )


def _latency_rows(result: Any) -> list[tuple[str, str]]:
    """p50/p95/p99/max, from produce to stored (on a backlog: its age) and from fetch to stored
    (the consumer's own time)."""
    return [
        (f"{label} {key} (ms)", f"{value:,.1f}")
        for label, figures in (
            ("produce -> stored", result.produce_to_stored_ms),
            ("fetch -> stored", result.fetch_to_stored_ms),
        )
        for key, value in figures.items()
    ]


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
    from orderpipe.stream.lifecycle import ConsumerOptions
    from orderpipe.stream.producer import ProducerOptions
    from orderpipe.stream.run import run_stream_with_settings

    def call() -> Any:
        settings = settings_of(ctx, database_url=database_url)
        layout = Layout.from_settings(settings)
        result = run_stream_with_settings(
            settings,
            input_path or layout.stream_source(source),
            kind=source.value,
            producer_options=ProducerOptions(partitions=partitions, limit=limit, rate=rate),
            consumer_options=ConsumerOptions(batch_size=batch_size, batch_wait_ms=batch_wait_ms),
        )
        append_stream_run(layout.runs_history, result)  # the report's stream section reads it
        return result

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
            (
                "seconds (before the first send)",
                f"{result.seconds:.2f} ({result.startup_seconds:.2f})",
            ),
            *_latency_rows(result),
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

    def announce(bootstrap: str) -> None:
        Console(stderr=True).print(f"embedded broker on {bootstrap} (Ctrl-C stops it)")

    run_service(ctx, lambda: EmbeddedBroker(port=port).serve(on_ready=announce))


# ---------------------------------------------------------------- operators: topics, status, DLQ
topic_app = typer.Typer(help="The stream's topic and its DLQ.", no_args_is_help=True)
stream_app.add_typer(topic_app, name="topic")


@topic_app.command("create")
def topic_create(
    ctx: typer.Context,
    partitions: Annotated[int, typer.Option(min=1, help="Partitions of each topic.")] = 3,
    replication_factor: Annotated[
        int, typer.Option(min=1, help="Copies of each partition (3 on a production cluster).")
    ] = 1,
    as_json: JsonOption = False,
) -> None:
    """Create the topic and its DLQ (those missing), without producing: consumers can then be
    started before any producer.

    Example: [bold]orderpipe stream topic create --partitions 12 --replication-factor 3[/]
    """
    from orderpipe.stream.topics import create_topics_with_settings

    result = run_service(
        ctx,
        lambda: create_topics_with_settings(settings_of(ctx), partitions, replication_factor),
    )
    rows = [
        (
            name,
            f"{result.partitions.get(name, '?')} partitions"
            + (", created" if name in result.created else ", existed"),
        )
        for name in (result.topic, result.dlq_topic)
    ]
    emit_table(result, as_json, "stream topic create", rows)


dlq_app = typer.Typer(
    help="The dead-letter topic (<topic>.dlq): what the consumer could not store, and why.",
    no_args_is_help=True,
)
stream_app.add_typer(dlq_app, name="dlq")


@stream_app.command("status")
def stream_status(
    ctx: typer.Context,
    dlq_scan: Annotated[
        int,
        typer.Option(
            min=0, help="Read at most N dead letters (the newest) for the top reasons; 0: none."
        ),
    ] = 100_000,
    as_json: JsonOption = False,
) -> None:
    """Lag of the consumer group per partition, and the DLQ's size and top reasons.

    Per partition of the topic: the group's committed offset, the end offset, the lag; then the
    size of <topic>.dlq and its ten most frequent reasons (the `error` header). Reads only: joins
    no group, commits nothing, creates no topic.

    Example: [bold]orderpipe stream status --dlq-scan 10000[/]
    """
    from rich.markup import escape

    from orderpipe.cli.render import columns_table, emit, table
    from orderpipe.stream.admin import status_with_settings

    result = run_service(ctx, lambda: status_with_settings(settings_of(ctx), dlq_scan=dlq_scan))

    def render(out: Console) -> None:
        out.print(
            f"[bold]stream status[/]: topic {escape(result.topic)}, group {escape(result.group)}"
        )
        if not result.topic_exists:
            out.print(table("", [("topic", "does not exist"), ("lag", "0")]))
        else:
            rows = [
                (
                    str(p.partition),
                    "none" if p.committed is None else n(p.committed),
                    n(p.end),
                    n(p.lag),
                )
                for p in result.partitions
            ]
            rows.append(("total", "", n(result.end_total), n(result.lag_total)))
            out.print(columns_table("", ("partition", "committed", "end", "lag"), rows))
            if not result.group_has_offsets:
                out.print("no committed offset: the group would start at the beginning")
        if not result.exact:
            out.print("end offsets approximate: the broker's last record could not be fetched")
        dlq = result.dlq
        rows = [("messages", n(dlq.messages) if dlq.exists else "0 (no such topic)")]
        if dlq.messages:
            newest = f" (--dlq-scan {n(dlq_scan)}: the newest)" if dlq.capped else ""
            rows.append(("scanned", f"{n(dlq.scanned)} of {n(dlq.messages)}{newest}"))
            # reasons come from message headers: text, never rich markup
            rows += [(f"  {escape(reason)}", n(count)) for reason, count in dlq.reasons.items()]
            if dlq.other_reasons:
                rows.append(("  (other reasons)", n(dlq.other_reasons)))
        out.print(table(f"dead letters: {escape(dlq.topic)}", rows))

    emit(result, as_json, render)


@dlq_app.command("replay")
def dlq_replay(
    ctx: typer.Context,
    reason: Annotated[
        str | None,
        typer.Option(
            help="Only dead letters whose error contains TEXT, ignoring case; the others are "
            "passed over and marked read like the replayed ones."
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Count what would be sent, by reason; send and commit nothing."
        ),
    ] = False,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Send at most N dead letters (the oldest first).")
    ] = None,
    from_beginning: Annotated[
        bool,
        typer.Option(
            "--from-beginning", help="Read the whole DLQ again, not only what no replay has read."
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Send dead letters back to their source topic, once the cause is fixed.

    Value and key go as they are to the topic named by the letter's source-topic header, oldest
    first. Remembers what it read: the group <group>.dlq-replay commits each batch once the
    brokers acknowledged its sends, so a second run sends only newer dead letters. Sending an
    event again is harmless: the consumer upserts by event_id. A letter that fails again returns
    to the DLQ as a new dead letter.

    Example: [bold]orderpipe stream dlq replay --reason "database refused" --dry-run[/]
    """
    from rich.markup import escape

    from orderpipe.stream.admin import replay_with_settings

    result = run_service(
        ctx,
        lambda: replay_with_settings(
            settings_of(ctx),
            reason=reason,
            dry_run=dry_run,
            limit=limit,
            from_beginning=from_beginning,
        ),
    )
    title = f"stream dlq replay{' (dry run)' if result.dry_run else ''}: {escape(result.dlq_topic)}"
    rows = [("group", result.group)]
    if not result.dlq_exists:
        rows.append(("dead-letter topic", "does not exist"))
    rows += [
        ("read", n(result.read)),
        (
            "matched" + (f" {escape(repr(result.reason_filter))}" if result.reason_filter else ""),
            n(result.matched),
        ),
        (
            "would send" if result.dry_run else "sent",
            n(result.matched if result.dry_run else result.sent),
        ),
        ("passed over", n(result.passed_over)),
    ]
    if result.empty:
        rows.append(("  without a value (nothing to send)", n(result.empty)))
    if result.by_reason:
        rows.append(("by reason", ""))
    # reasons and topics come from message headers: text, never rich markup
    rows += [(f"  {escape(name)}", n(count)) for name, count in result.by_reason.items()]
    rows += [(f"to {escape(name)}", n(count)) for name, count in result.sent_to.items()]
    if result.limited:
        rows.append(("stopped at --limit", "more dead letters left"))
    emit_table(result, as_json, title, rows)
