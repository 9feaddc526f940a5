"""Reads of the contract tables that services need (the writes are in `db.writer`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl
    from sqlalchemy import Connection
    from sqlalchemy.engine import URL

ID_CHUNK = 5000  # ids per IN (...) list (SQLite allows 32,766 variables since 3.32)


def stored_event_ids(url: str | URL) -> pl.Series:
    """Every event_id in table_events (empty when the table does not exist yet)."""
    import polars as pl
    from sqlalchemy import inspect, text

    from orderpipe.db.engine import database_errors, make_engine

    engine = make_engine(url)
    try:
        with database_errors(url), engine.connect() as conn:
            if "table_events" not in inspect(conn).get_table_names():
                return pl.Series("event_id", [], dtype=pl.String)
            ids = conn.execute(text("SELECT event_id FROM table_events")).scalars().all()
    finally:
        engine.dispose()
    return pl.Series("event_id", ids, dtype=pl.String)


def events_as_stored(conn: Connection, clean: pl.DataFrame) -> pl.DataFrame:
    """The rows of `clean` whose event is stored with the same event_time: the ones that won
    their upsert (a late, older duplicate loses, and must not bring its prediction)."""
    import polars as pl
    from sqlalchemy import select

    from orderpipe.db.models import Event

    ids = clean["event_id"].unique().to_list()
    stored: list[tuple[str, object]] = []
    for start in range(0, len(ids), ID_CHUNK):
        query = select(Event.event_id, Event.event_time).where(
            Event.event_id.in_(ids[start : start + ID_CHUNK])
        )
        stored += [tuple(row) for row in conn.execute(query)]
    winners = pl.DataFrame(
        stored, schema={"event_id": pl.String, "_stored": pl.Datetime("us")}, orient="row"
    )
    naive = pl.col("event_time").dt.replace_time_zone(None)
    return (
        clean.with_columns(naive.alias("_time"))
        .join(winners, left_on=["event_id", "_time"], right_on=["event_id", "_stored"])
        .drop("_time")
    )
