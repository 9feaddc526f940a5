"""db/models.py: clean records -> the rows of each table (latest state per key, every event)."""

from __future__ import annotations

from datetime import datetime

import polars as pl
import pytest

from orderpipe.db.models import TABLES_IN_WRITE_ORDER, Base, table_frames
from tests.factories import clean_rows, raw_event


@pytest.fixture
def clean() -> pl.DataFrame:
    """Two customers and two orders that change: one arrives newest first, the other last."""
    return clean_rows(
        raw_event(
            event_id="e-late",
            event_time="2026-11-20T12:00:00Z",
            customer__country="BE",
            order__device="desktop",
        ),
        raw_event(
            event_id="e-early",
            event_time="2026-11-20T09:00:00Z",
            customer__country="FR",
            order__device="mobile",
        ),
        raw_event(
            event_id="e-other",
            event_time="2026-11-20T10:00:00Z",
            order_id="ORD-2",
            customer__customer_id="CUST-2",
            customer__country="DE",
        ),
        raw_event(
            event_id="e-other-late",
            event_time="2026-11-20T11:00:00Z",
            order_id="ORD-2",
            customer__customer_id="CUST-2",
            customer__country="CH",
            order__device="tablet",
        ),
    )


def test_there_is_one_frame_per_table_parents_first(clean: pl.DataFrame) -> None:
    assert tuple(table_frames(clean)) == TABLES_IN_WRITE_ORDER


def test_customers_keep_the_latest_row_per_customer_by_event_time(clean: pl.DataFrame) -> None:
    customers = table_frames(clean)["table_customers"].sort("customer_id")
    assert customers.select("customer_id", "country").rows() == [
        ("CUST-0007", "BE"),
        ("CUST-2", "CH"),
    ]


def test_orders_keep_the_latest_row_per_order_by_event_time(clean: pl.DataFrame) -> None:
    orders = table_frames(clean)["table_orders"].sort("order_id")
    assert orders.select("order_id", "device").rows() == [
        ("ORD-00042", "desktop"),
        ("ORD-2", "tablet"),
    ]


def test_events_keep_every_row(clean: pl.DataFrame) -> None:
    events = table_frames(clean)["table_events"]
    assert sorted(events["event_id"]) == ["e-early", "e-late", "e-other", "e-other-late"]


@pytest.mark.parametrize("name", TABLES_IN_WRITE_ORDER)
def test_each_frame_has_exactly_its_table_columns(clean: pl.DataFrame, name: str) -> None:
    frame = table_frames(clean)[name]
    assert frame.columns == list(Base.metadata.tables[name].columns.keys())


@pytest.mark.parametrize("name", ["table_customers", "table_orders"])
def test_updated_at_is_the_naive_event_time(clean: pl.DataFrame, name: str) -> None:
    frame = table_frames(clean)[name]
    assert frame.schema["updated_at"] == pl.Datetime("us", None)
    by_key = dict(frame.select(frame.columns[0], "updated_at").iter_rows())
    expected = {"table_customers": "CUST-0007", "table_orders": "ORD-00042"}[name]
    assert by_key[expected] == datetime(2026, 11, 20, 12, 0)


def test_event_time_of_events_is_naive_utc(clean: pl.DataFrame) -> None:
    events = table_frames(clean)["table_events"]
    assert events.schema["event_time"] == pl.Datetime("us", None)
    times = dict(events.select("event_id", "event_time").iter_rows())
    assert times["e-early"] == datetime(2026, 11, 20, 9, 0)


def test_an_empty_batch_gives_empty_frames(clean: pl.DataFrame) -> None:
    assert {
        name: frame.height for name, frame in table_frames(clean.clear()).items()
    } == dict.fromkeys(TABLES_IN_WRITE_ORDER, 0)
