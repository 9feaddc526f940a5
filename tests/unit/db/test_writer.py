"""db/writer.py: table frames -> upserts, one transaction per write, a fresh connection after
a failure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from orderpipe.db.models import table_frames
from orderpipe.db.writer import TableWriter
from tests.factories import clean_rows, raw_event


def frames_of(count: int) -> dict[str, pl.DataFrame]:
    """Table frames of `count` events, each with its own order and customer."""
    return table_frames(
        clean_rows(
            *[
                raw_event(
                    event_id=f"evt-{index}",
                    order_id=f"ORD-{index}",
                    customer__customer_id=f"CUST-{index}",
                )
                for index in range(count)
            ]
        )
    )


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/writer.db"


@pytest.fixture
def writer(url: str) -> Iterator[TableWriter]:
    with TableWriter(url) as table_writer:
        yield table_writer


def _count(url: str, table: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        count = conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
    engine.dispose()
    return count


def _with_a_broken_orders_frame(frames: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    # device is NOT NULL: the database refuses the orders after it accepted the customers.
    broken = frames["table_orders"].with_columns(pl.lit(None, dtype=pl.String).alias("device"))
    return {"table_customers": frames["table_customers"], "table_orders": broken}


def test_write_upserts_every_frame_and_counts_the_rows(writer: TableWriter, url: str) -> None:
    assert writer.write(frames_of(3)) == 9
    for table in ("table_customers", "table_orders", "table_events"):
        assert _count(url, table) == 3


def test_write_is_one_transaction_a_failing_table_leaves_the_others_unchanged(
    writer: TableWriter, url: str
) -> None:
    with pytest.raises(IntegrityError):
        writer.write(_with_a_broken_orders_frame(frames_of(3)))
    assert _count(url, "table_customers") == 0
    assert _count(url, "table_orders") == 0


def test_a_writer_writes_again_after_a_failed_write_on_a_new_connection(
    writer: TableWriter, url: str
) -> None:
    writer.write(frames_of(1))
    failed_connection = writer._conn  # a connection that failed may be broken: never reused
    with pytest.raises(IntegrityError):
        writer.write(_with_a_broken_orders_frame(frames_of(2)))
    assert writer.write(frames_of(2)) == 6
    assert writer._conn is not None and writer._conn is not failed_connection
    assert _count(url, "table_customers") == 2
    assert _count(url, "table_events") == 2


def test_write_chunked_reports_progress_per_table_up_to_its_total(writer: TableWriter) -> None:
    frames = frames_of(5)
    frames = {"table_customers": frames["table_customers"], "table_events": frames["table_events"]}
    calls: list[tuple[str, int, int]] = []
    written = writer.write_chunked(frames, chunk_size=2, progress=lambda *call: calls.append(call))
    assert written == 10
    assert calls == [
        ("table_customers", 2, 5),
        ("table_customers", 4, 5),
        ("table_customers", 5, 5),
        ("table_events", 2, 5),
        ("table_events", 4, 5),
        ("table_events", 5, 5),
    ]


def test_write_chunked_commits_each_chunk(writer: TableWriter, url: str) -> None:
    frames = frames_of(4)
    broken = frames["table_orders"].with_columns(
        pl.when(pl.col("order_id") == "ORD-3")
        .then(None)
        .otherwise(pl.col("device"))
        .alias("device")
    )
    with pytest.raises(IntegrityError):
        writer.write_chunked(
            {"table_customers": frames["table_customers"], "table_orders": broken}, chunk_size=2
        )
    assert _count(url, "table_customers") == 4
    assert _count(url, "table_orders") == 2  # the first chunk, committed before the failure
