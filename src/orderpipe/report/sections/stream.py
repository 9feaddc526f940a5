"""The report's stream section: throughput and latency of the last stream runs recorded in
`reports/runs.jsonl`, and the dead letters counted on the configured broker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orderpipe.core.errors import OrderpipeError
from orderpipe.core.history import read_entries, stream_runs
from orderpipe.report import charts
from orderpipe.report.page import Chart, Section, Table, count_cell, number_cell
from orderpipe.stream.dead_letters import read_dead_letters
from orderpipe.stream.messages import dlq_topic

if TYPE_CHECKING:
    from orderpipe.core.layout import Layout
    from orderpipe.core.settings import Settings

STREAM_RUNS = 12  # the last stream runs shown


def stream_section(layout: Layout, settings: Settings) -> Section:
    section = Section("stream", "Stream")
    runs = stream_runs(read_entries(layout.runs_history))[-STREAM_RUNS:]
    if not runs:
        section.notes.append(
            f"no stream run in {layout.runs_history}: run `orderpipe run-all` or "
            "`orderpipe stream run`"
        )
    else:
        _stream_charts(section, runs)
    note, table = _dead_letters(settings)
    section.notes.append(note)
    if table is not None:
        section.tables.append(table)
    return section


def _stream_charts(section: Section, runs: list[dict[str, Any]]) -> None:
    labels = [f"{i + 1}" for i in range(len(runs))]
    with charts.figure(7.6, 3.2, ncols=2) as (fig, (left, right)):
        left.bar(labels, [r.get("events_per_second") or 0 for r in runs], color="#1f77b4")
        left.set_title("Throughput (events/s while streaming)")
        left.set_xlabel("run (oldest first)")
        for key, style in (("p50", "-o"), ("p95", "-s"), ("p99", "-^")):
            right.plot(labels, [r.get(f"latency_{key}_ms") for r in runs], style, label=key)
        right.set_title("Latency, produce to stored (ms)")
        right.set_xlabel("run (oldest first)")
        right.legend()
        section.charts.append(Chart(f"The last {len(runs)} stream runs", charts.svg(fig)))
    section.tables.append(
        Table(
            "Stream runs",
            ["run", "finished", "by", "events", "events/s", "p50 ms", "p95 ms", "p99 ms", "max ms"],
            [
                [
                    label,
                    r["finished_at"],
                    r["source"],
                    count_cell(r.get("events")),
                    count_cell(r.get("events_per_second")),
                    *[
                        number_cell(r.get(f"latency_{k}_ms"), 1)
                        for k in ("p50", "p95", "p99", "max")
                    ],
                ]
                for label, r in zip(labels, runs, strict=True)
            ],
        )
    )


def _dead_letters(settings: Settings) -> tuple[str, Table | None]:
    """A note on the DLQ and its counts by reason from the configured broker (None when there
    are none to count: the note says why)."""
    dlq = dlq_topic(settings.kafka_topic)
    if settings.kafka_bootstrap_servers == "embedded":
        return (
            f"dead letters: the embedded broker lives for one command, so {dlq} is gone; "
            "point ORDERPIPE_KAFKA_BOOTSTRAP_SERVERS at a running broker to count them"
        ), None
    try:
        summary = read_dead_letters(settings)
    except OrderpipeError as exc:
        return f"dead letters: {settings.kafka_bootstrap_servers} did not answer ({exc})", None
    if not summary.exists or summary.messages == 0:
        return f"dead letters: {dlq} is empty", None
    rows = [[reason, count_cell(count)] for reason, count in summary.reasons.items()]
    if summary.other_reasons:
        rows.append(["(other reasons)", count_cell(summary.other_reasons)])
    scanned = f", the newest {summary.scanned:,} read" if summary.capped else ""
    table = Table(f"{dlq}: {summary.messages:,} letters{scanned}", ["reason", "letters"], rows)
    return f"dead letters: {summary.messages:,} in {dlq}", table
