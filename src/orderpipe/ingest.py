"""Ingest: the clean dataset -> table_customers, table_orders, table_events (bulk, idempotent).

Chunked, one transaction per chunk, through the one write path (`db.writer.TableWriter`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl
    from sqlalchemy.engine import URL

    from orderpipe.db.writer import Progress


@dataclass(frozen=True)
class IngestResult:
    """What one ingest wrote."""

    source: Path
    database: str
    method: str
    chunk_size: int
    events: int
    customers: int
    orders: int
    seconds: float
    events_per_second: float


def ingest_dataset(
    clean: pl.DataFrame,
    database_url: str | URL,
    *,
    chunk_size: int | None = None,
    local_infile: bool = True,
    source: Path = Path("-"),
    progress: Progress | None = None,
) -> IngestResult:
    """Upsert the clean records into the three tables, parents first, a transaction per chunk."""
    from orderpipe.db.engine import database_errors, masked
    from orderpipe.db.models import table_frames
    from orderpipe.db.writer import TableWriter

    began = time.perf_counter()
    frames = table_frames(clean)
    with database_errors(database_url), TableWriter(database_url, local_infile=local_infile) as w:
        w.write_chunked(frames, chunk_size=chunk_size, progress=progress)
        method, size = w.method, w.chunk_size(chunk_size)
    seconds = time.perf_counter() - began
    events = frames["table_events"].height
    return IngestResult(
        source=source,
        database=masked(database_url),
        method=method,
        chunk_size=size,
        events=events,
        customers=frames["table_customers"].height,
        orders=frames["table_orders"].height,
        seconds=seconds,
        events_per_second=events / seconds if seconds else 0.0,
    )


def run_ingest(
    source: Path,
    database_url: str | URL,
    *,
    chunk_size: int | None = None,
    local_infile: bool = True,
    progress: Progress | None = None,
) -> IngestResult:
    """Read the clean dataset at `source` and ingest it."""
    from orderpipe.dataset import read_clean_dataset

    return ingest_dataset(
        read_clean_dataset(source),
        database_url,
        chunk_size=chunk_size,
        local_infile=local_infile,
        source=source,
        progress=progress,
    )
