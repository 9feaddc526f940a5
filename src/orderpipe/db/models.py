"""The four contract tables as SQLAlchemy ORM declarative classes, and the clean records' rows
for each of them.

Timestamps are naive UTC with microseconds (DATETIME(6) on MySQL/MariaDB); amounts are doubles.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import DateTime, Double, ForeignKey, Integer, SmallInteger, String
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from orderpipe.core.schema import CLEAN_SCHEMA, COLUMN_LENGTHS, MAX_ID_LENGTH

if TYPE_CHECKING:
    import polars as pl

UtcDateTime = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
ID = MAX_ID_LENGTH
# Ids compare byte by byte, as on SQLite and as polars dedupes them:
# - PostgreSQL (collation "C"): a database's default collation (often a language's, through
#   the C library) made every key comparison of its indexes, sorts and joins a call to strcoll
#   (1M events, ingest: 13.9 -> 11.5 s). Their order is the same for ASCII ids.
# - MySQL/MariaDB (utf8mb4_bin): the default, utf8mb4_general_ci, took "evt-a" and "EVT-A"
#   (or "é" and "e") for one key, so two events SQLite stores as two became one row; and
#   binary comparisons are cheaper (stream run on MariaDB: ~4 % faster).
MYSQL_ID_COLLATION = "utf8mb4_bin"
Id = (
    String(ID)
    .with_variant(String(ID, collation="C"), "postgresql")
    .with_variant(String(ID, collation=MYSQL_ID_COLLATION), "mysql", "mariadb")
)
# SQLite: customers and orders are stored in primary-key order (WITHOUT ROWID), as InnoDB stores
# every table: no second B-tree, and their keys come roughly in order (an order id carries its
# day). Events and predictions stay rowid tables: their keys are random event ids, so a clustered
# table put each row in a random page of wide rows, while a rowid table appends the row and only
# its narrow key index takes random inserts (ingest of 4M events: 42k -> 52k events/s).
CLUSTERED = {"sqlite_with_rowid": False}


class Base(DeclarativeBase):
    """Declarative base of orderpipe's tables."""


class Customer(Base):
    __tablename__ = "table_customers"
    __table_args__ = CLUSTERED

    customer_id: Mapped[str] = mapped_column(Id, primary_key=True)
    country: Mapped[str] = mapped_column(String(COLUMN_LENGTHS["country"]))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Order(Base):
    __tablename__ = "table_orders"
    __table_args__ = CLUSTERED

    order_id: Mapped[str] = mapped_column(Id, primary_key=True)
    customer_id: Mapped[str] = mapped_column(
        Id, ForeignKey("table_customers.customer_id"), index=True
    )
    device: Mapped[str] = mapped_column(String(COLUMN_LENGTHS["device"]))
    channel: Mapped[str] = mapped_column(String(COLUMN_LENGTHS["channel"]))
    main_category: Mapped[str] = mapped_column(String(COLUMN_LENGTHS["main_category"]))
    n_items: Mapped[int] = mapped_column(Integer)
    basket_value: Mapped[float] = mapped_column(Double)
    shipping_fee: Mapped[float] = mapped_column(Double)
    discount: Mapped[float] = mapped_column(Double)
    order_total: Mapped[float] = mapped_column(Double)
    is_returned: Mapped[int] = mapped_column(SmallInteger)
    price_average_per_item: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Event(Base):
    __tablename__ = "table_events"  # a rowid table on SQLite (see CLUSTERED)

    event_id: Mapped[str] = mapped_column(Id, primary_key=True)
    event_time: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    event_year: Mapped[int] = mapped_column(SmallInteger)
    event_month: Mapped[int] = mapped_column(SmallInteger)
    event_day: Mapped[int] = mapped_column(SmallInteger)
    event_hour: Mapped[int] = mapped_column(SmallInteger)
    order_id: Mapped[str] = mapped_column(Id, ForeignKey("table_orders.order_id"), index=True)
    # No index of its own: customer lookups go through table_orders.customer_id.
    customer_id: Mapped[str] = mapped_column(Id, ForeignKey("table_customers.customer_id"))


class Prediction(Base):
    __tablename__ = "table_predictions"  # a rowid table on SQLite (see CLUSTERED)

    event_id: Mapped[str] = mapped_column(Id, ForeignKey("table_events.event_id"), primary_key=True)
    order_id: Mapped[str] = mapped_column(Id)
    customer_id: Mapped[str] = mapped_column(Id)
    return_proba: Mapped[float] = mapped_column(Double)
    model_version: Mapped[str] = mapped_column(String(32))
    predicted_at: Mapped[datetime] = mapped_column(UtcDateTime)


class StateBase(DeclarativeBase):
    """orderpipe's own bookkeeping tables, beside the contract tables."""


class IngestWatermark(StateBase):
    """Which version of etl's table was last ingested into this database: the next ingest reads
    only the data files added since (`orderpipe ingest --full` reads everything)."""

    __tablename__ = "orderpipe_ingest_watermark"

    source_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the Delta table's id
    source_path: Mapped[str] = mapped_column(String(1024))
    table_version: Mapped[int] = mapped_column(Integer)
    ingested_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PredictWatermark(StateBase):
    """Which version of etl's table `orderpipe predict` last scored in this database, and with
    which model: the next predict with the same model scores only the rows of the data files
    added since (a new model, or `orderpipe predict --full`, goes through every event)."""

    __tablename__ = "orderpipe_predict_watermark"

    source_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the Delta table's id
    model_version: Mapped[str] = mapped_column(String(32))
    table_version: Mapped[int] = mapped_column(Integer)
    predicted_at: Mapped[datetime] = mapped_column(UtcDateTime)


# Which column says how recent a row is: an upsert never replaces a row with an older one.
RECENCY_COLUMN = {
    Customer.__table__: "updated_at",
    Order.__table__: "updated_at",
    Event.__table__: "event_time",
    Prediction.__table__: "predicted_at",
}

# SQLite indexes that a load into empty tables builds at its end, by one sort, rather than row
# by row: their keys come in random order (customers of orders made in time order), so each
# row's entry lands in a random page.
DEFERRED_INDEXES = tuple(i for i in Order.__table__.indexes if "customer_id" in i.columns)

TABLES_IN_WRITE_ORDER = ("table_customers", "table_orders", "table_events")  # parents first


def table_frames(
    clean: pl.DataFrame, tables: tuple[str, ...] = TABLES_IN_WRITE_ORDER
) -> dict[str, pl.DataFrame]:
    """Rows for each of `tables` from clean records: the latest state per customer and per
    order, every event. Columns come from the table definitions; `updated_at` is the event's
    time."""
    import polars as pl

    naive = clean.with_columns(pl.col("event_time").dt.replace_time_zone(None)).sort(
        "event_time", maintain_order=True
    )
    keys = dict(zip(TABLES_IN_WRITE_ORDER, ("customer_id", "order_id", None), strict=True))
    frames: dict[str, pl.DataFrame] = {}
    for name in tables:
        key = keys[name]
        rows = naive if key is None else naive.unique(key, keep="last", maintain_order=True)
        frames[name] = rows.select(
            pl.col("event_time").alias(column) if column == "updated_at" else pl.col(column)
            for column in Base.metadata.tables[name].columns.keys()  # noqa: SIM118
        )
    return frames


def latest_customers(parts: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """table_customers rows from parts of clean records read one after the other: a customer's
    latest state over all of them (a customer met on many days is written once)."""
    import polars as pl

    latest = [table_frames(part, ("table_customers",))["table_customers"] for part in parts]
    if not latest:
        return table_frames(pl.DataFrame(schema=CLEAN_SCHEMA), ("table_customers",))[
            "table_customers"
        ]
    return (
        pl.concat(latest)
        .sort("updated_at", maintain_order=True)
        .unique("customer_id", keep="last", maintain_order=True)
    )
