"""Reads of the contract tables that services need (the writes are in `db.writer`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl
    from sqlalchemy.engine import URL


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
