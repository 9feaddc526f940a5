"""The consumer's sink: a clean micro-batch -> customers, orders, events and their predictions,
in one database transaction (Quix Streams' `Sink.write(batch)` is the model).
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import polars as pl
    from sqlalchemy import Connection
    from sqlalchemy.engine import URL

    from orderpipe.core.settings import Settings


class Sink(Protocol):
    """Where the consumer stores a batch; `write` raises when nothing was stored."""

    def write(self, clean: pl.DataFrame, scores: pl.DataFrame | None = None) -> int: ...

    def close(self) -> None: ...


# SQLite page cache of the consumer's connection. Batch loads keep 256 MiB (their chunks touch
# pages all over the indexes); a consumer runs for days, and with 256 MiB its memory grew with
# the tables until the cache was full: 662 MiB peak streaming 200k events, 871 MiB streaming
# 2M. With 64 MiB: 632 and 651 MiB, for ~6 % less throughput with 2M events already stored.
STREAM_SQLITE_CACHE_MIB = 64


class DatabaseSink:
    """Scores each batch with the saved classifier and upserts it with its predictions."""

    def __init__(self, url: str | URL, artifacts_dir: Path, *, local_infile: bool = True) -> None:
        import contextlib
        from concurrent.futures import ThreadPoolExecutor

        from sqlalchemy.engine import make_url

        from orderpipe.db.writer import TableWriter
        from orderpipe.ml.model import load_model

        writer = partial(
            TableWriter, url, local_infile=local_infile, cache_mib=STREAM_SQLITE_CACHE_MIB
        )
        if make_url(url).get_backend_name() == "sqlite":  # no round trips (and `sqlite://`
            self.model = load_model(artifacts_dir, "classification")  # is one per thread)
            self.writer = writer()
            return
        # A server's round trips (connect, create the tables) wait beside the model's load,
        # which is mostly scikit-learn's imports. A model that fails to load is the error
        # raised, as when the two ran in turn.
        with ThreadPoolExecutor(1, thread_name_prefix="orderpipe-sink-open") as pool:
            opening = pool.submit(writer)
            try:
                self.model = load_model(artifacts_dir, "classification")
            except BaseException:
                if opening.exception() is None:
                    with contextlib.suppress(Exception):
                        opening.result().close()
                raise
            self.writer = opening.result()

    @classmethod
    def factory(cls, settings: Settings) -> Callable[[], DatabaseSink]:
        """Builds the sink the settings describe (in the consumer's worker thread)."""
        return partial(
            cls, settings.db_url, settings.artifacts_dir, local_infile=settings.mysql_local_infile
        )

    def score(self, clean: pl.DataFrame) -> pl.DataFrame:
        """Prediction rows for every row of `clean`: the consumer makes them ahead, beside the
        previous batch's write, and `write` keeps those of the events that win."""
        from orderpipe.ml.predict import score_batch

        return score_batch(self.model, clean.drop("line_number", strict=False), datetime.now(UTC))

    def write(self, clean: pl.DataFrame, scores: pl.DataFrame | None = None) -> int:
        """Upsert the batch and, in the same transaction, the predictions of the events that
        won their upsert (`scores` made ahead by `score`, or made here)."""
        from orderpipe.db.models import table_frames
        from orderpipe.db.queries import events_as_stored

        if clean.height == 0:
            return 0
        clean = clean.drop("line_number", strict=False)

        def predictions(conn: Connection, won: Mapping[str, int | None]) -> dict[str, pl.DataFrame]:
            # Only the events that won their upsert are scored: a late, older duplicate keeps
            # its stale prediction out of table_predictions. When every event counts as
            # inserted or updated, all won: nothing to read back.
            if won.get("table_events") == clean.height:
                winners = clean
            else:
                winners = events_as_stored(conn, clean)
            if scores is None:
                return {"table_predictions": self.score(winners)}
            kept = scores.join(winners.select("event_id"), on="event_id", how="semi")
            return {"table_predictions": kept}

        self.writer.write(table_frames(clean), then=predictions, count_won=("table_events",))
        return clean.height

    def close(self) -> None:
        self.writer.close()
