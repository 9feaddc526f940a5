"""Batch commands: generate, etl, ingest, export."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from orderpipe.cli.app import DatabaseUrlOption, JsonOption, app, run_service, settings_of
from orderpipe.cli.render import (
    emit,
    emit_table,
    finish_now,
    n,
    table,
    table_progress,
    what_was_read,
)
from orderpipe.core.layout import Layout

DEFAULT_START_DAY = datetime(2026, 1, 1)  # generate.DEFAULT_START (not imported: --help stays fast)


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
    seed: Annotated[int, typer.Option(min=0, help="Random seed: same seed, same bytes.")] = 42,
    start: Annotated[
        datetime,
        typer.Option(
            formats=["%Y-%m-%d"],
            show_default="2026-01-01",
            help="First day (UTC). Successive runs with successive days never reuse an id.",
        ),
    ] = DEFAULT_START_DAY,
    days: Annotated[int, typer.Option(min=1, help="Days covered, from --start.")] = 60,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Default: <data_dir>/raw/orders_events.jsonl"),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write synthetic raw order events as JSON Lines.

    Example: [bold]orderpipe generate --events 100000 --bad-lines 20 --seed 7[/]
    """
    from orderpipe.generate.dirt import Dirt
    from orderpipe.generate.writer import generate_events

    def call() -> Any:
        from datetime import UTC

        target = output or Layout.from_settings(settings_of(ctx)).raw
        dirt = Dirt(
            duplicates=duplicates,
            missing_rate=missing_rate,
            untidy_rate=untidy_rate,
            bad_lines=bad_lines,
        )
        with table_progress() as progress:
            return generate_events(
                target,
                events,
                seed=seed,
                dirt=dirt,
                start=start.replace(tzinfo=UTC),
                days=days,
                progress=progress,
            )

    result = run_service(ctx, call)
    emit_table(
        result,
        as_json,
        "generate",
        [
            ("events", n(result.events)),
            ("duplicate lines", n(result.duplicates)),
            ("bad lines", n(result.bad_lines)),
            ("lines written", n(result.lines)),
            (
                "days",
                f"{result.start:%Y-%m-%d} to {result.start + timedelta(result.days - 1):%Y-%m-%d}",
            ),
            ("seconds", f"{result.seconds:.2f}"),
            ("output", str(result.output)),
        ],
    )
    finish_now()  # the file is written: no interpreter teardown to wait for


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
        bool, typer.Option("--replace", help="Rebuild the dataset, do not merge.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Clean raw events (polars): types, dedupe, impute, features; quarantine bad lines.

    Merges into the table <data_dir>/processed/orders_events_cleaned (Delta Lake, one partition
    per event date; only the dates a run touches are rewritten), and writes
    <data_dir>/rejected/<input>.rejected.jsonl and <reports_dir>/etl_quality.json.
    `orderpipe export` writes the table as one CSV, JSON Lines or Parquet file.

    Example: [bold]orderpipe etl --input data/raw/orders_events.jsonl[/]
    """
    from orderpipe.etl.run import run_etl

    def call() -> Any:
        layout = Layout.from_settings(settings_of(ctx))
        with table_progress() as progress:
            return run_etl(input_path or layout.raw, layout, merge=not replace, progress=progress)

    result = run_service(ctx, call)

    def render(out: Console) -> None:
        rows = [
            ("lines read", n(result.lines)),
            ("clean events", n(result.clean)),
            ("duplicates dropped", n(result.duplicates)),
            ("quarantined", n(result.rejected)),
        ]
        rows += [(f"  {reason}", n(count)) for reason, count in result.rejected_by_reason.items()]
        rows += [
            ("dataset rows", n(result.dataset_rows)),
            ("new events", n(result.new_events)),
            ("changed events", n(result.changed_events)),
            ("seconds", f"{result.seconds:.2f}"),
            (
                "table version",
                f"{result.table_version}" + ("" if result.committed else " (unchanged)"),
            ),
            ("dataset", str(result.outputs["table"])),
        ]
        out.print(table("etl", rows))

    emit(result, as_json, render)
    finish_now()  # the table is committed: no teardown of polars and deltalake to wait for


@app.command()
def ingest(
    ctx: typer.Context,
    input_path: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            help="Clean dataset: etl's table (default) or a .parquet/.csv/.jsonl file.",
        ),
    ] = None,
    database_url: DatabaseUrlOption = None,
    chunk_size: Annotated[
        int | None,
        typer.Option(min=1, help="Rows per transaction; default: best for the database."),
    ] = None,
    full: Annotated[
        bool,
        typer.Option("--full", help="Read all of etl's table, not only what changed since."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Upsert the clean dataset into table_customers, table_orders and table_events.

    Bulk and idempotent: re-running leaves identical tables; older data never overwrites newer.
    From etl's table, only the days changed since the last ingest into that database are read.

    Example: [bold]orderpipe ingest --database-url mysql+pymysql://user:pw@127.0.0.1:3306/shop[/]
    """
    from orderpipe.ingest import run_ingest

    with table_progress() as on_progress:

        def call() -> Any:
            settings = settings_of(ctx, database_url=database_url, ingest_chunk_size=chunk_size)
            return run_ingest(
                input_path or Layout.from_settings(settings).table,
                settings.db_url,
                chunk_size=settings.ingest_chunk_size,
                local_infile=settings.mysql_local_infile,
                progress=on_progress,
                full=full,
            )

        result = run_service(ctx, call)
    emit_table(
        result,
        as_json,
        "ingest",
        [
            ("database", result.database),
            ("read", what_was_read(result)),
            ("method", result.method),
            ("events", n(result.events)),
            ("orders", n(result.orders)),
            ("customers", n(result.customers)),
            ("seconds", f"{result.seconds:.2f}"),
            ("events/s", n(result.events_per_second)),
        ],
    )
    finish_now()  # the rows are committed: no teardown of polars and SQLAlchemy to wait for


@app.command()
def export(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv, jsonl or parquet.")] = "csv",
    input_path: Annotated[
        Path | None,
        typer.Option("--input", "-i", help="Clean dataset; default: etl's table."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Default: <data_dir>/processed/orders_events_cleaned.<format>"
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write the clean table as one CSV, JSON Lines or Parquet file (streamed, atomic).

    Example: [bold]orderpipe export --format jsonl[/]
    """
    from orderpipe.table.export import export_dataset

    def call() -> Any:
        layout = Layout.from_settings(settings_of(ctx))
        target = output or layout.export(fmt)
        return export_dataset(input_path or layout.table, target, fmt)

    result = run_service(ctx, call)
    emit_table(
        result,
        as_json,
        "export",
        [
            ("rows", n(result.rows)),
            ("format", result.format),
            ("table version", "-" if result.table_version is None else str(result.table_version)),
            ("seconds", f"{result.seconds:.2f}"),
            ("output", str(result.output)),
        ],
    )
