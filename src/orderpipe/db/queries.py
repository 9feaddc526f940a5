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
    their upsert (a late, older duplicate loses, and must not bring its prediction).

    The stream's writer calls this on every batch: the rows come through the driver's cursor
    as they are (SQLite: text, MySQL/MariaDB: datetime), which costs a third of what typed
    SQLAlchemy rows cost at 20,000 ids.
    """
    import polars as pl

    ids = clean["event_id"].unique().to_list()
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    found: list[str] = []
    times: list[object] = []
    for start in range(0, len(ids), ID_CHUNK):
        chunk = ids[start : start + ID_CHUNK]
        query = (
            "SELECT event_id, event_time FROM table_events "
            f"WHERE event_id IN ({', '.join([marker] * len(chunk))})"
        )
        for event_id, event_time in conn.exec_driver_sql(query, tuple(chunk)).fetchall():
            found.append(event_id)
            times.append(event_time)
    stored = pl.Series(
        "_stored", times, dtype=pl.String if times and isinstance(times[0], str) else None
    )
    if stored.dtype == pl.String:  # SQLite keeps DATETIME as 'YYYY-MM-DD HH:MM:SS.ffffff'
        stored = stored.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="us")
    winners = pl.DataFrame(
        [pl.Series("event_id", found, dtype=pl.String), stored.cast(pl.Datetime("us"))]
    )
    naive = pl.col("event_time").dt.replace_time_zone(None)
    return (
        clean.with_columns(naive.alias("_time"))
        .join(winners, left_on=["event_id", "_time"], right_on=["event_id", "_stored"])
        .drop("_time")
    )
