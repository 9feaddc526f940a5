"""Ingest: the clean dataset -> table_customers, table_orders, table_events (bulk, idempotent).

Chunked, one transaction per chunk; MySQL/MariaDB use LOAD DATA LOCAL INFILE when allowed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from orderpipe import schema
from orderpipe.db.upsert import Progress
from orderpipe.errors import OrderpipeError


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


def read_clean_dataset(path: Path) -> pl.DataFrame:
    """The clean records from etl's Parquet, CSV or JSON Lines, typed as the contract."""
    if not path.is_file():
        raise OrderpipeError(f"clean dataset not found: {path} (run `orderpipe etl` first)")
    try:
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
        elif path.suffix == ".csv":
            frame = pl.read_csv(path, schema_overrides={"event_time": pl.String})
        elif path.suffix in (".jsonl", ".ndjson", ".json"):
            frame = pl.read_ndjson(path, schema_overrides={"event_time": pl.String})
        else:
            raise OrderpipeError(f"{path}: expected a .parquet, .csv or .jsonl clean dataset")
        missing = [name for name in schema.CLEAN_COLUMNS if name not in frame.columns]
        if missing:
            raise OrderpipeError(f"{path} is not a clean dataset: missing {', '.join(missing)}")
        if frame.schema["event_time"] == pl.String:
            frame = frame.with_columns(
                pl.col("event_time").str.to_datetime(
                    "%Y-%m-%dT%H:%M:%S%.fZ", time_unit="us", time_zone="UTC"
                )
            )
        return frame.select(schema.CLEAN_COLUMNS).cast(dict(schema.CLEAN_SCHEMA))
    except pl.exceptions.PolarsError as exc:
        raise OrderpipeError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None


def table_frames(clean: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Rows for each table: the latest state per customer and per order, every event."""
    naive = clean.with_columns(pl.col("event_time").dt.replace_time_zone(None)).sort(
        "event_time", maintain_order=True
    )
    customers = naive.unique("customer_id", keep="last", maintain_order=True).select(
        "customer_id", "country", pl.col("event_time").alias("updated_at")
    )
    orders = naive.unique("order_id", keep="last", maintain_order=True).select(
        "order_id",
        "customer_id",
        "device",
        "channel",
        "main_category",
        "n_items",
        "basket_value",
        "shipping_fee",
        "discount",
        "order_total",
        "is_returned",
        "price_average_per_item",
        pl.col("event_time").alias("updated_at"),
    )
    events = naive.select(
        "event_id",
        "event_time",
        "event_year",
        "event_month",
        "event_day",
        "event_hour",
        "order_id",
        "customer_id",
    )
    return {"table_customers": customers, "table_orders": orders, "table_events": events}


def ingest_dataset(
    clean: pl.DataFrame,
    database_url: str,
    *,
    chunk_size: int | None = None,
    local_infile: bool = True,
    source: Path = Path("-"),
    progress: Progress | None = None,
) -> IngestResult:
    """Upsert the clean records into the three tables, parents first, a transaction per chunk."""
    from orderpipe.db.engine import make_engine
    from orderpipe.db.upsert import bulk_upsert
    from orderpipe.settings import mask_url

    began = time.perf_counter()
    frames = table_frames(clean)
    engine = make_engine(database_url, local_infile=local_infile)
    try:
        method, size = bulk_upsert(
            engine, frames, chunk_size=chunk_size, local_infile=local_infile, progress=progress
        )
    finally:
        engine.dispose()
    seconds = time.perf_counter() - began
    return IngestResult(
        source=source,
        database=mask_url(database_url),
        method=method,
        chunk_size=size,
        events=frames["table_events"].height,
        customers=frames["table_customers"].height,
        orders=frames["table_orders"].height,
        seconds=seconds,
        events_per_second=frames["table_events"].height / seconds if seconds else 0.0,
    )


def run_ingest(
    source: Path,
    database_url: str,
    *,
    chunk_size: int | None = None,
    local_infile: bool = True,
    progress: Progress | None = None,
) -> IngestResult:
    """Read the clean dataset at `source` and ingest it."""
    return ingest_dataset(
        read_clean_dataset(source),
        database_url,
        chunk_size=chunk_size,
        local_infile=local_infile,
        source=source,
        progress=progress,
    )
