"""Batch scoring: the clean dataset -> return_proba for every event already in table_events.

One vectorised predict_proba per chunk; predictions are upserted like any other table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from orderpipe.ml.model import LoadedModel, load_model

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from orderpipe.db.writer import Progress

SCORE_CHUNK = 250_000


@dataclass(frozen=True)
class PredictResult:
    """What one predict run scored and stored."""

    source: Path
    database: str
    model_version: str
    events: int
    scored: int
    not_in_database: int
    scoring_seconds: float
    scoring_events_per_second: float
    seconds: float


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


def run_predict(
    source: Path,
    database_url: str | URL,
    artifacts_dir: Path,
    *,
    chunk_size: int | None = None,
    local_infile: bool = True,
    progress: Progress | None = None,
) -> PredictResult:
    """Score the clean dataset with the saved classifier and upsert table_predictions."""
    from orderpipe.dataset import read_clean_dataset
    from orderpipe.db.engine import database_errors, masked
    from orderpipe.db.queries import stored_event_ids
    from orderpipe.db.writer import TableWriter

    began = time.perf_counter()
    model = load_model(artifacts_dir, "classification")
    clean = read_clean_dataset(source)
    present = clean.join(stored_event_ids(database_url).to_frame(), on="event_id", how="semi")
    predicted_at = datetime.now(UTC)
    scoring_began = time.perf_counter()
    scored = (
        pl.concat(
            [
                score_batch(model, present.slice(offset, SCORE_CHUNK), predicted_at)
                for offset in range(0, present.height, SCORE_CHUNK)
            ]
        )
        if present.height
        else score_batch(model, present, predicted_at)
    )
    scoring_seconds = time.perf_counter() - scoring_began
    with database_errors(database_url), TableWriter(database_url, local_infile=local_infile) as w:
        w.write_chunked({"table_predictions": scored}, chunk_size=chunk_size, progress=progress)
    return PredictResult(
        source=source,
        database=masked(database_url),
        model_version=model.version,
        events=clean.height,
        scored=scored.height,
        not_in_database=clean.height - present.height,
        scoring_seconds=scoring_seconds,
        scoring_events_per_second=scored.height / scoring_seconds if scoring_seconds else 0.0,
        seconds=time.perf_counter() - began,
    )
