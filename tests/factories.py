"""Builders for the test data each test makes for itself."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import Any

import polars as pl

from orderpipe.core.layout import Layout
from orderpipe.db.models import table_frames
from orderpipe.eco.tracking import PHASE_COLUMNS, PHASES_FILE

BASE_EVENT: dict[str, Any] = {
    "event_id": "evt-0001",
    "event_time": "2026-11-20T10:31:02.123456Z",
    "order_id": "ORD-00042",
    "customer": {"customer_id": "CUST-0007", "country": "FR"},
    "order": {
        "device": "mobile",
        "channel": "seo",
        "main_category": "fashion",
        "n_items": 3,
        "basket_value": 120.5,
        "shipping_fee": 0.0,
        "discount": None,
        "order_total": 120.5,
        "is_returned": 0,
    },
}


def raw_event(**changes: Any) -> dict[str, Any]:
    """A raw contract event; keys `customer.x` / `order.x` change nested fields, value ... drops."""
    event = copy.deepcopy(BASE_EVENT)
    for key, value in changes.items():
        target, _, leaf = key.rpartition("__")
        holder = event[target] if target else event
        if value is ...:
            holder.pop(leaf, None)
        else:
            holder[leaf] = value
    return event


def write_lines(path: Path, items: list[Any]) -> Path:
    """Write events (dicts, encoded) and raw strings (as they are) one per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for item in items:
            handle.write((item if isinstance(item, str) else json.dumps(item)) + "\n")
    return path


def layout_under(root: Path) -> Layout:
    """The layout of settings whose folders are all inside `root`."""
    return Layout(
        data_dir=root / "data",
        artifacts_dir=root / "artifacts",
        reports_dir=root / "reports",
        eco_output_dir=root / "reports" / "emissions",
    )


def clean_rows(*events: dict[str, Any]) -> pl.DataFrame:
    """Clean records (the contract's columns, no `line_number`) of valid raw events, in order."""
    from orderpipe.core.cleaning import clean_lines

    lines = pl.DataFrame(
        {
            "line_number": list(range(1, len(events) + 1)),
            "line": [json.dumps(event) for event in events],
        }
    )
    batch = clean_lines(lines)
    assert batch.rejected.height == 0, batch.rejected["reason"].to_list()
    return batch.clean.sort("line_number").drop("line_number")


def frames_of(count: int, start: int = 0) -> dict[str, pl.DataFrame]:
    """Table frames of `count` events, each with its own order and customer."""
    return table_frames(
        clean_rows(
            *[
                raw_event(
                    event_id=f"evt-{index}",
                    order_id=f"ORD-{index}",
                    customer__customer_id=f"CUST-{index}",
                )
                for index in range(start, start + count)
            ]
        )
    )


# CodeCarbon's emissions files: their columns, a task's row, and orderpipe's phases file.
HEADER = [
    "task_name",
    "timestamp",
    "project_name",
    "run_id",
    "duration",
    "emissions",
    "emissions_rate",
    "energy_consumed",
    "country_iso_code",
    "tracking_mode",
]


def task_row(
    task: str, run: str, ts: str, duration: float, energy: float, project: str = "orderpipe"
) -> list[str]:
    return [
        task,
        ts,
        project,
        run,
        str(duration),
        str(energy * 0.05),
        "0",
        str(energy),
        "FRA",
        "machine",
    ]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def phases_file(folder: Path, rows: list[tuple[str, str, int]]) -> None:
    write_csv(
        folder / PHASES_FILE,
        list(PHASE_COLUMNS),
        [[run, phase, str(n), "1", "", "", "machine", "FRA"] for run, phase, n in rows],
    )
