"""Reads of the contract tables that services need (the writes are in `db.writer`)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orderpipe.core.errors import OrderpipeError, first_line

if TYPE_CHECKING:
    from datetime import datetime

    import polars as pl
    from sqlalchemy import Connection, Engine
    from sqlalchemy.engine import URL

ID_CHUNK = 5000  # ids per IN (...) list (SQLite allows 32,766 variables since 3.32)
STORED_TIME = "%Y-%m-%d %H:%M:%S%.f"  # a DATETIME as the database prints it
GROUP_CONCAT_BYTES = 64 * 1024 * 1024  # >> ID_CHUNK ids with their times (~300 KB)


# MySQL/MariaDB: a plain SELECT in a write transaction reads the snapshot of its first read
# (REPEATABLE READ), which can predate a newer version that another consumer committed before
# this transaction's upsert lost to it; a locking read sees the latest committed rows (those
# the upsert touched are locked by this transaction already, so it waits for nothing new).
LATEST = " LOCK IN SHARE MODE"


def events_as_stored(conn: Connection, clean: pl.DataFrame) -> pl.DataFrame:
    """The rows of `clean` whose event is stored with the same event_time: the ones that won
    their upsert (a late, older duplicate loses, and must not bring its prediction).

    The stream's writer calls this on every batch, so the stored times come back cheaply:
    through the driver's cursor as they are on SQLite (a third of the cost of typed rows), and
    on MySQL/MariaDB as one GROUP_CONCAT text per chunk of ids (a row per event read packet by
    packet cost twice as much).
    """
    import polars as pl

    ids = clean["event_id"].unique().to_list()
    # ids holding a separator are read as rows (the ETL lets inner whitespace through)
    mysql = conn.dialect.name in ("mysql", "mariadb")
    mysql = mysql and not clean["event_id"].str.contains(r"[\t\n]").any()
    chunks = [ids[start : start + ID_CHUNK] for start in range(0, len(ids), ID_CHUNK)]
    stored = _stored_times_concatenated(conn, chunks) if mysql and chunks else None
    if stored is None:
        stored = _stored_times(conn, chunks)
    naive = pl.col("event_time").dt.replace_time_zone(None)
    return (
        clean.with_columns(naive.alias("_time"))
        .join(stored, left_on=["event_id", "_time"], right_on=["event_id", "_stored"])
        .drop("_time")
    )


def _stored_times(conn: Connection, chunks: list[list[str]]) -> pl.DataFrame:
    """(event_id, _stored) rows through the driver's cursor (SQLite: text, MySQL: datetime)."""
    import polars as pl

    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    latest = LATEST if conn.dialect.name in ("mysql", "mariadb") else ""
    found: list[str] = []
    times: list[object] = []
    for chunk in chunks:
        query = (
            "SELECT event_id, event_time FROM table_events "
            f"WHERE event_id IN ({', '.join([marker] * len(chunk))}){latest}"
        )
        for event_id, event_time in conn.exec_driver_sql(query, tuple(chunk)).fetchall():
            found.append(event_id)
            times.append(event_time)
    text = bool(times) and isinstance(times[0], str)
    stored = pl.Series("_stored", times, dtype=pl.String if text else None)
    if text:  # SQLite keeps DATETIME as 'YYYY-MM-DD HH:MM:SS.ffffff'
        stored = stored.str.to_datetime(STORED_TIME, time_unit="us")
    return pl.DataFrame([pl.Series("event_id", found, dtype=pl.String), stored]).cast(
        {"_stored": pl.Datetime("us")}
    )


def _stored_times_concatenated(conn: Connection, chunks: list[list[str]]) -> pl.DataFrame | None:
    """MySQL/MariaDB: the same rows as one 'id TAB time' text per chunk; None if a text came
    back shorter than its count says (then the caller reads rows)."""
    import polars as pl

    conn.exec_driver_sql(f"SET SESSION group_concat_max_len = {GROUP_CONCAT_BYTES}")
    texts: list[str] = []
    for chunk in chunks:
        query = (
            "SELECT COUNT(*), GROUP_CONCAT(event_id, '\t', event_time SEPARATOR '\n') "
            f"FROM table_events WHERE event_id IN ({', '.join(['%s'] * len(chunk))})"
            f"{LATEST}"
        )
        count, text = conn.exec_driver_sql(query, tuple(chunk)).one()
        if count:
            if text is None or text.count("\n") + 1 != count:
                return None
            texts.append(text)
    pairs = pl.Series("pair", "\n".join(texts).split("\n") if texts else [], dtype=pl.String)
    return (
        pairs.str.split_exact("\t", 1)
        .struct.rename_fields(["event_id", "_stored"])
        .struct.unnest()
        .with_columns(pl.col("_stored").str.to_datetime(STORED_TIME, time_unit="us"))
    )


def scoring_state(conn: Connection, clean: pl.DataFrame, model_version: str) -> pl.DataFrame:
    """(event_id, _stored, current) of the events of `clean` held in table_events: the stored
    event_time, and whether table_predictions holds a prediction of `model_version` for it.

    A day with many of them is read as a range of event_time (one index range scan); a few
    events, by id. Times come back as text (MySQL: CAST, not PyMySQL's datetime objects).
    """
    import polars as pl

    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    stored_time = {  # as text, in every database's own words
        "mysql": "CAST(e.event_time AS CHAR)",
        "mariadb": "CAST(e.event_time AS CHAR)",
        "postgresql": "CAST(e.event_time AS TEXT)",
    }.get(conn.dialect.name, "e.event_time")
    select = (
        f"SELECT e.event_id, {stored_time}, "
        f"CASE WHEN p.model_version = {marker} THEN 1 ELSE 0 END "
        "FROM table_events e LEFT JOIN table_predictions p ON p.event_id = e.event_id WHERE "
    )
    rows: list[tuple[Any, ...]] = []
    days = clean.select("event_id", pl.col("event_time").dt.date().alias("day"))
    counts = days.group_by("day").len().sort("day")
    small = counts.filter(pl.col("len") <= ID_CHUNK)["day"]
    few = days.filter(pl.col("day").is_in(small.implode()))["event_id"].to_list()
    for day in counts.filter(pl.col("len") > ID_CHUNK)["day"]:
        bounds = tuple(f"{d:%Y-%m-%d} 00:00:00" for d in (day, day + timedelta(days=1)))
        query = select + f"e.event_time >= {marker} AND e.event_time < {marker}"
        rows += conn.exec_driver_sql(query, (model_version, *bounds)).fetchall()
    for start in range(0, len(few), ID_CHUNK):
        chunk = few[start : start + ID_CHUNK]
        query = select + f"e.event_id IN ({', '.join([marker] * len(chunk))})"
        rows += conn.exec_driver_sql(query, (model_version, *chunk)).fetchall()
    state = pl.DataFrame(
        rows,
        schema={"event_id": pl.String, "_stored": pl.String, "current": pl.Int64},
        orient="row",
    )
    return state.select(
        "event_id",
        pl.col("_stored").str.to_datetime(STORED_TIME, time_unit="us"),
        pl.col("current").fill_null(0).cast(pl.Boolean),
    )


def ingested_version(engine: Engine, table_id: str) -> int | None:
    """The version of etl's table last ingested into this database (its ingest watermark); None
    when there is none, or when the events table is empty (dropped or emptied since: load
    everything again)."""
    from sqlalchemy import select

    from orderpipe.db.models import Event, IngestWatermark

    with engine.connect() as conn:
        if conn.execute(select(Event.event_id).limit(1)).first() is None:
            return None
        return conn.execute(
            select(IngestWatermark.table_version).where(IngestWatermark.source_id == table_id)
        ).scalar()


def predicted_version(engine: Engine, table_id: str, model_version: str) -> int | None:
    """The version of etl's table last scored in this database with this model; None when
    there is none, or when table_predictions is empty (dropped or emptied since)."""
    from sqlalchemy import select

    from orderpipe.db.models import Prediction, PredictWatermark

    with engine.connect() as conn:
        if conn.execute(select(Prediction.event_id).limit(1)).first() is None:
            return None
        row = conn.execute(
            select(PredictWatermark.model_version, PredictWatermark.table_version).where(
                PredictWatermark.source_id == table_id
            )
        ).first()
    return row.table_version if row is not None and row.model_version == model_version else None


def ingest_progress(engine: Engine, run_id: str) -> tuple[int, str] | None:
    """(table version, progress) that an ingest run cut short recorded under `run_id`; None when
    there is none, or when the events table is empty (emptied since, or never written: the
    progress is not true now)."""
    from sqlalchemy import select

    from orderpipe.db.models import Event, IngestWatermark

    with engine.connect() as conn:
        if conn.execute(select(Event.event_id).limit(1)).first() is None:
            return None
        row = conn.execute(
            select(IngestWatermark.table_version, IngestWatermark.source_path).where(
                IngestWatermark.source_id == run_id
            )
        ).first()
    if row is None or not row.source_path:
        return None
    return row.table_version, row.source_path


def scored_inputs(
    url: str | URL,
    model_version: str,
    inputs: list[str],
    newer_than: datetime | None,
    *,
    limit: int,
) -> tuple[pl.DataFrame, bool]:
    """The clean columns `inputs` (of the events, orders and customers tables) of the `limit`
    events `model_version` scored most recently: those newer than `newer_than` (the training
    data's latest event) when there are any (True), else any it scored (False)."""
    import polars as pl
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from orderpipe.db.engine import make_engine, sqlite_file
    from orderpipe.db.models import Customer, Event, Order, Prediction

    def column(name: str) -> Any:
        for table in (Event, Order, Customer):
            if name in table.__table__.columns:
                return getattr(table, name)
        raise OrderpipeError(f"no table holds the model input {name!r}")

    columns = [column(name) for name in inputs]
    database = sqlite_file(url)
    if database is not None and not Path(database).is_file():
        return pl.DataFrame(schema=inputs), False

    def query(newer: bool) -> Any:
        # the events first (most recent predictions of the model), then their columns
        recent = select(Prediction.event_id).where(Prediction.model_version == model_version)
        if newer and newer_than is not None:
            recent = recent.join(Event, Event.event_id == Prediction.event_id).where(
                Event.event_time > newer_than
            )
        ids = recent.order_by(Prediction.predicted_at.desc()).limit(limit).subquery()
        return (
            select(*columns)
            .select_from(ids)
            .join(Event, Event.event_id == ids.c.event_id)
            .join(Order, Order.order_id == Event.order_id)
            .join(Customer, Customer.customer_id == Event.customer_id)
        )

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(query(newer=True)).all() if newer_than is not None else []
            newer = bool(rows)
            if not rows:
                rows = conn.execute(query(newer=False)).all()
    except SQLAlchemyError as exc:
        raise OrderpipeError(first_line(exc)) from None
    finally:
        engine.dispose()
    return pl.DataFrame([tuple(row) for row in rows], schema=inputs, orient="row"), newer
