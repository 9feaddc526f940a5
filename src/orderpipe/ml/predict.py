"""Batch scoring: the clean dataset -> return_proba for the events stored in table_events.

Only events without a prediction of the current model are scored, a few days at a time: from
etl's table, after a first pass with a model, only the rows of the data files added since the
version last scored (a correction of an event brings a new prediction); `--full` scores every
event again. One vectorised predict_proba per chunk; predictions are upserted like any other
table, and a row is scored only if the database holds its event as the dataset does (same
event_time).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from orderpipe.core.crashpoints import crash_point
from orderpipe.core.errors import OrderpipeError
from orderpipe.ml.model import LoadedModel, load_model

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.engine import URL

    from orderpipe.core.progress import Progress
    from orderpipe.db.writer import TableWriter

SCORE_CHUNK = 250_000
READ_ROWS = 500_000  # rows of the dataset read at a time (whole days of etl's table)


@dataclass(frozen=True)
class PredictResult:
    """What one predict run scored and stored."""

    source: Path
    database: str
    model_version: str
    events: int  # rows of the dataset looked at
    scored: int
    up_to_date: int  # held a prediction of this model already
    not_in_database: int  # not in table_events, or stored there with another event_time
    scoring_seconds: float
    scoring_events_per_second: float
    seconds: float
    table_version: int | None = None  # etl's table: the version now scored
    since_version: int | None = None  # etl's table: only what changed after this version


def score_batch(model: LoadedModel, clean: pl.DataFrame, predicted_at: datetime) -> pl.DataFrame:
    """Rows for table_predictions from clean records, in one vectorised call."""
    return clean.select(
        "event_id",
        "order_id",
        "customer_id",
        pl.Series("return_proba", model.predict_proba(clean), dtype=pl.Float64),
        pl.lit(model.version).alias("model_version"),
        pl.lit(predicted_at.replace(tzinfo=None)).cast(pl.Datetime("us")).alias("predicted_at"),
    )


@dataclass
class _Tally:
    events: int = 0
    scored: int = 0
    up_to_date: int = 0
    not_in_database: int = 0
    scoring_seconds: float = 0.0


@dataclass
class _Plan:
    """What a run reads: parts of the dataset, and whether their rows are scored even when they
    hold a prediction of this model (rows that changed since, or `--full`)."""

    parts: Iterator[pl.DataFrame]
    rows: int
    rescore: bool
    table_id: str | None = None
    table_version: int | None = None
    since_version: int | None = None
    record: bool = False  # the run leaves a watermark behind


def run_predict(
    source: Path,
    database_url: str | URL,
    artifacts_dir: Path,
    *,
    chunk_size: int | None = None,
    local_infile: bool = True,
    progress: Progress | None = None,
    full: bool = False,
) -> PredictResult:
    """Score, with the saved classifier, the events of the clean dataset that table_events holds
    and that have no prediction of this model (every one with `full`); upsert them."""
    from orderpipe.db.engine import database_errors, masked
    from orderpipe.db.writer import BATCH_RETRY, DatabaseGone, TableWriter, retrying
    from orderpipe.table.read import is_table

    began = time.perf_counter()
    model = load_model(artifacts_dir, "classification")
    tally = _Tally()
    with (
        database_errors(database_url),
        TableWriter(database_url, local_infile=local_infile, retry=BATCH_RETRY) as w,
    ):
        try:
            plan = (
                retrying(lambda: _table_plan(source, w.engine, model.version, full=full), w.retry)
                if is_table(source)
                else _file_plan(source, full=full)
            )
            for rows in plan.parts:
                _score(model, w, rows, rescore=plan.rescore, tally=tally, chunk_size=chunk_size)
                if progress:
                    progress("events", tally.events, plan.rows)
                crash_point("predict.part-stored")
            if plan.record and plan.table_id is not None and plan.table_version is not None:
                table_id, version = plan.table_id, plan.table_version
                retrying(
                    lambda: _set_predicted(w.engine, table_id, model.version, version),
                    BATCH_RETRY,
                )
        except DatabaseGone as exc:
            raise OrderpipeError(
                f"predict stopped: {masked(database_url)}: {exc}; the predictions stored so "
                "far stay, and running `orderpipe predict` again is safe"
            ) from exc
    return PredictResult(
        source=source,
        database=masked(database_url),
        model_version=model.version,
        events=tally.events,
        scored=tally.scored,
        up_to_date=tally.up_to_date,
        not_in_database=tally.not_in_database,
        scoring_seconds=tally.scoring_seconds,
        scoring_events_per_second=(
            tally.scored / tally.scoring_seconds if tally.scoring_seconds else 0.0
        ),
        seconds=time.perf_counter() - began,
        table_version=plan.table_version,
        since_version=plan.since_version,
    )


def _file_plan(source: Path, *, full: bool) -> _Plan:
    from orderpipe.table.read import read_clean_dataset

    clean = read_clean_dataset(source)
    parts = (clean.slice(at, READ_ROWS) for at in range(0, clean.height, READ_ROWS))
    return _Plan(parts, clean.height, rescore=full)


def _table_plan(source: Path, engine: Engine, model_version: str, *, full: bool) -> _Plan:
    """etl's table as of the version last ingested into this database (the current one when
    none was): every data file, or only those added since the version last scored with this
    model, less the rows that the files they replaced held identical (`read_changes`)."""
    from orderpipe.db.queries import ingested_version, predicted_version
    from orderpipe.table.read import read_changes, table_files_since, table_id

    source_id = table_id(source)
    ingested = ingested_version(engine, source_id)
    since = None if full else predicted_version(engine, source_id, model_version)
    changes = table_files_since(source, since, upto=ingested)
    incremental = changes.since is not None
    return _Plan(
        read_changes(source, changes, READ_ROWS),
        changes.rows,
        rescore=incremental or full,
        table_id=source_id,
        table_version=changes.version,
        since_version=changes.since,
        # Without an ingest watermark, events may reach the database later from other files:
        # no watermark is left, and the next run goes through every event again.
        record=ingested is not None,
    )


def _score(
    model: LoadedModel,
    writer: TableWriter,
    rows: pl.DataFrame,
    *,
    rescore: bool,
    tally: _Tally,
    chunk_size: int | None,
) -> None:
    """Score the rows whose event the database holds as they are (and, unless `rescore`, that
    have no prediction of this model), and upsert their predictions."""
    from orderpipe.db.queries import scoring_state
    from orderpipe.db.writer import retrying

    def read_state() -> pl.DataFrame:
        with writer.engine.connect() as conn:
            return scoring_state(conn, rows, model.version)

    state = retrying(read_state, writer.retry)
    tally.events += rows.height
    present = rows.join(
        state,
        left_on=["event_id", pl.col("event_time").dt.replace_time_zone(None)],
        right_on=["event_id", "_stored"],
    )
    tally.not_in_database += rows.height - present.height
    todo = present if rescore else present.filter(~pl.col("current"))
    tally.up_to_date += present.height - todo.height
    began = time.perf_counter()
    predicted_at = datetime.now(UTC)
    scored = [
        score_batch(model, todo.slice(at, SCORE_CHUNK), predicted_at)
        for at in range(0, todo.height, SCORE_CHUNK)
    ]
    tally.scoring_seconds += time.perf_counter() - began
    if scored:
        writer.write_chunked({"table_predictions": pl.concat(scored)}, chunk_size=chunk_size)
        tally.scored += todo.height


def _set_predicted(engine: Engine, table_id: str, model_version: str, version: int) -> None:
    """Record `version` of etl's table as scored with this model."""
    from orderpipe.db.models import PredictWatermark
    from orderpipe.db.upsert import set_row

    row = {
        "source_id": table_id,
        "model_version": model_version,
        "table_version": version,
        "predicted_at": datetime.now(UTC).replace(tzinfo=None),
    }
    with engine.begin() as conn:
        set_row(conn, PredictWatermark.__table__, row)
