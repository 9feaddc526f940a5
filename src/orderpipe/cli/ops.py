"""Operations commands: run-all, report, doctor, bench."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

from orderpipe.cli.app import DatabaseUrlOption, JsonOption, app, fail, run_service, settings_of
from orderpipe.cli.render import (
    columns_table,
    consoles,
    emit,
    finish_now,
    n,
    table,
    table_progress,
)


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
    """Every phase in order: generate, etl, ingest, train, predict, stream run; then the eco
    report and reports/report.html.

    Uses the embedded defaults (SQLite, embedded broker) unless ORDERPIPE_DATABASE_URL and
    ORDERPIPE_KAFKA_BOOTSTRAP_SERVERS point elsewhere.

    Example: [bold]orderpipe run-all --events 4000 --fresh[/]
    """
    from orderpipe.runs.run_all import run_all

    _, err = consoles(as_json)

    def on_phase(summary: Any) -> None:
        err.print(f"[green]ok[/] {summary.phase}: {summary.seconds:.2f} s", highlight=False)

    def call() -> Any:
        settings = settings_of(ctx) if eco else settings_of(ctx, eco_enabled=False)
        return run_all(settings, events, fresh=fresh, seed=seed, on_phase=on_phase)

    result = run_service(ctx, call)

    def render(out: Console) -> None:
        rows = [
            (
                p.phase,
                f"{p.seconds:.2f}",
                n(p.events or 0),
                n(p.events_per_second or 0),
                f"{p.energy_kwh:.2e}" if p.energy_kwh is not None else "-",
            )
            for p in result.phases
        ]
        title = f"run-all: {result.events:,} events in {result.seconds:.1f} s"
        columns = ("phase", "seconds", "events", "events/s", "energy (kWh)")
        out.print(columns_table(title, columns, rows))
        if "markdown" in result.report:
            out.print(f"eco report: {result.report['markdown']}")
        if "html" in result.report:
            out.print(f"report: {result.report['html']}")

    emit(result, as_json, render)


@app.command("report")
def report_command(
    ctx: typer.Context,
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write reports/report.html: data quality, model curves and importances, drift of the
    inputs, stream throughput and latency, energy. One file that opens offline.

    Example: [bold]orderpipe report && xdg-open reports/report.html[/]
    """
    from orderpipe.report.build import run_report

    def call() -> Any:
        settings = settings_of(ctx, database_url=database_url)
        with table_progress() as on_progress:
            return run_report(settings, progress=on_progress)

    result = run_service(ctx, call)

    def render(out: Console) -> None:
        rows = [
            (key, str(result.charts[key]), str(result.tables[key]), " ".join(notes))
            for key in result.charts
            for notes in [result.notes.get(key, [])]
        ]
        title = f"report: {result.output} ({result.bytes / 1024:,.0f} KiB, {result.seconds:.1f} s)"
        out.print(columns_table(title, ("section", "charts", "tables", "notes"), rows))

    emit(result, as_json, render)
    finish_now()  # the page is written: no teardown of matplotlib and scikit-learn to wait for


@app.command()
def doctor(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show the settings in effect (secrets masked), check the database and Kafka, and list
    what runs left behind: temporary files of dead runs, a database behind its clean table.

    Exit code 1 when something is down, with the reason (what runs left behind is a note).

    Example: [bold]ORDERPIPE_DATABASE_URL=mysql+pymysql://u:p@127.0.0.1/db orderpipe doctor[/]
    """
    from orderpipe.runs.doctor import Check, run_doctor

    result = run_service(ctx, lambda: run_doctor(settings_of(ctx)))

    def render(out: Console) -> None:
        out.print(table("settings", list(result.settings.items())))

        def status(check: Check) -> str:
            if not check.ok:
                return "[red]FAIL[/]"
            return "[yellow]note[/]" if check.note else "[green]ok[/]"

        checks = [(check.name, status(check), check.detail) for check in result.checks]
        out.print(columns_table("checks", ("check", "status", "detail"), checks))
        out.print(table("versions", list(result.versions.items())))

    emit(result, as_json, render)
    if not result.ok:
        fail(ctx, "; ".join(f"{c.name}: {c.detail}" for c in result.checks if not c.ok))


@app.command()
def bench(
    ctx: typer.Context,
    events: Annotated[int, typer.Option("--events", "-n", min=1)] = 100_000,
    seed: Annotated[int, typer.Option()] = 42,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="Also ingest into this MySQL/MariaDB or PostgreSQL database. Its orderpipe tables "
            "are DROPPED and recreated: use a database kept for benchmarks."
        ),
    ] = None,
    kafka_bootstrap: Annotated[
        str | None,
        typer.Option(help="With --database-url: also stream through this Kafka cluster."),
    ] = None,
    phases: Annotated[
        str | None,
        typer.Option(
            help="Measure only these phases (comma-separated: generate, etl, ingest, train, "
            "predict, stream) and those they need."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Measure events/s and peak memory of every phase, each in its own process.

    Example: [bold]orderpipe bench --events 10000000 --phases predict --json[/]
    """
    from orderpipe.runs.bench import run_bench

    _, err = consoles(as_json)

    def on_phase(figures: Any) -> None:
        err.print(
            f"[dim]{figures.phase}: {figures.seconds:.2f} s, "
            f"{figures.events_per_second:,.0f} events/s[/]",
            highlight=False,
        )

    result = run_service(
        ctx,
        lambda: run_bench(
            settings_of(ctx),
            events,
            seed=seed,
            database_url=database_url,
            kafka_bootstrap=kafka_bootstrap,
            on_phase=on_phase,
            phases=[p.strip() for p in phases.split(",") if p.strip()] if phases else None,
        ),
    )

    def render(out: Console) -> None:
        rows = [
            (
                p.phase,
                n(p.events),
                f"{p.seconds:.2f}",
                n(p.events_per_second),
                f"{p.peak_rss_mb:,.0f}",
                f"{p.detail['latency_p99_ms']:,.0f}" if "latency_p99_ms" in p.detail else "",
            )
            for p in result.phases
        ]
        title = f"bench: {result.events:,} events (seed {result.seed})"
        columns = ("phase", "events", "seconds", "events/s", "peak RSS (MB)", "p99 (ms)")
        out.print(columns_table(title, columns, rows))

    emit(result, as_json, render)
