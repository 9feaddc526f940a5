"""reports/runs.jsonl: the stream runs the report charts, from run-all and `stream run` lines."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from orderpipe.core.history import append_entry, append_stream_run, read_entries, stream_runs


def test_stream_runs_come_from_run_all_and_stream_run_lines(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "runs.jsonl"
    append_entry(
        path,
        {
            "command": "run-all",
            "events": 100,
            "phases": [
                {"phase": "etl", "events": 100, "figures": {}},
                {
                    "phase": "stream",
                    "events": 100,
                    "figures": {"streaming_events_per_second": 900, "latency_p99_ms": 12.5},
                },
            ],
        },
    )
    append_entry(path, {"events": 5, "phases": [{"phase": "stream", "events": 5}]})  # older line
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"cut by a kill": ')  # no end of line
    result = SimpleNamespace(
        produced=50,
        stored=49,
        dead_lettered=1,
        seconds=2.0,
        events_per_second=25.4,
        produce_to_stored_ms={"p50": 3.21, "p99": 9.87},
    )
    append_stream_run(path, result)
    entries = read_entries(path)
    assert len(entries) == 3  # the cut line is skipped
    rows = stream_runs(entries)
    assert [(r["source"], r["events"], r["events_per_second"]) for r in rows] == [
        ("run-all", 100, 900),
        ("stream run", 50, 25),
    ]
    assert rows[0]["latency_p99_ms"] == 12.5 and rows[1]["latency_p50_ms"] == 3.2
    assert all(json.loads(line)["finished_at"] for line in path.read_text().splitlines()[:2])


def test_no_history_is_no_stream_run(tmp_path: Path) -> None:
    assert stream_runs(read_entries(tmp_path / "missing.jsonl")) == []
