"""`reports/runs.jsonl`: one JSON line per run-all and per `stream run`, appended when it ends,
which the HTML report reads for the stream's throughput and latency over time.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STREAM_RUN = "stream run"


def append_entry(path: Path, entry: dict[str, Any]) -> None:
    """Add one run's line (with `finished_at` now when it has none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {"finished_at": datetime.now(UTC).isoformat(timespec="seconds"), **entry}
    with path.open("a+b") as handle:
        handle.seek(0, 2)
        if handle.tell():  # a line cut by a kill (or edited without one) gets its end first
            handle.seek(-1, 2)
            if handle.read(1) != b"\n":
                handle.write(b"\n")
        handle.write((json.dumps(line, default=str) + "\n").encode("utf-8"))


def append_stream_run(path: Path, result: Any) -> None:
    """The line of one `stream run` (a `StreamRunResult`)."""
    append_entry(
        path,
        {
            "command": STREAM_RUN,
            "events": result.produced,
            "stored": result.stored,
            "dead_lettered": result.dead_lettered,
            "seconds": round(result.seconds, 3),
            "events_per_second": round(result.events_per_second),
            "latency_ms": {k: round(v, 1) for k, v in result.produce_to_stored_ms.items()},
        },
    )


def read_entries(path: Path) -> list[dict[str, Any]]:
    """Every readable line, oldest first (a line cut by a kill or edited by hand is skipped)."""
    entries = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def stream_runs(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per stream run, from `stream run` lines and run-all's stream phase: when it
    finished, what ran it, the events, the streaming rate and the latency percentiles (ms)."""
    rows = []
    for entry in entries:
        if entry.get("command") == STREAM_RUN:
            figures = {
                "events": entry.get("events"),
                "events_per_second": entry.get("events_per_second"),
                **{f"latency_{k}_ms": v for k, v in (entry.get("latency_ms") or {}).items()},
            }
        else:
            stream = [p for p in entry.get("phases") or [] if p.get("phase") == "stream"]
            if not stream or not stream[0].get("figures"):
                continue
            figures = {
                "events": stream[0].get("events"),
                "events_per_second": stream[0]["figures"].get("streaming_events_per_second"),
                **{k: v for k, v in stream[0]["figures"].items() if k.startswith("latency_")},
            }
        rows.append(
            {
                "finished_at": str(entry.get("finished_at", "")),
                "source": entry.get("command", "run-all"),
                **figures,
            }
        )
    return rows
