"""Batch assembly for the consumer: records gathered while the writer is busy (adaptive micro-
batches), cleaned and scored ahead of their write, and a refused batch split to isolate its rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orderpipe.db.errors import Fault, reason_of
from orderpipe.stream.errors import classify
from orderpipe.stream.messages import DeadLetter, SortedBatch, sort_messages

if TYPE_CHECKING:
    import polars as pl

    from orderpipe.stream.sink import Sink

log = logging.getLogger("orderpipe.stream")


@dataclass(frozen=True)
class Prepared:
    """A fetched batch, already cleaned while the previous one was being stored."""

    records: list[Any]
    sorted_batch: SortedBatch | None
    scores: pl.DataFrame | None = None  # predictions for every clean row, made ahead
    fetched_at: float = 0.0  # time.time() when its first record arrived


async def fill_batch(
    consumer: Any, room: int, wait_ms: int, stop: asyncio.Event, writer_free: asyncio.Event
) -> tuple[list[Any], float]:
    """Whatever has arrived once the writer is free; while it is busy, more records gather,
    up to `room` and for at most `wait_ms` (an upper bound, not a wait). Also the time.time()
    its first records came (0.0 for none)."""
    deadline = time.monotonic() + wait_ms / 1000
    records: list[Any] = []
    fetched_at = 0.0
    free: asyncio.Task[Any] | None = None
    try:
        while len(records) < room and not stop.is_set():
            if records and writer_free.is_set():
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            fetch = asyncio.ensure_future(
                consumer.getmany(
                    timeout_ms=max(1, int(left * 1000)),
                    max_records=room - len(records),
                )
            )
            if records:  # gathering while the writer is busy: stop the moment it is free
                free = free or asyncio.ensure_future(writer_free.wait())
                await asyncio.wait({fetch, free}, return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    # aiokafka hands records over in one synchronous step: a poll
                    # cancelled while it waits has taken none
                    fetch.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await fetch
                    break
            batch = await fetch
            if not records and batch:
                fetched_at = time.time()
            records.extend(record for part in batch.values() for record in part)
    finally:
        if free is not None:
            free.cancel()
    return records, fetched_at


async def clean_and_score(
    records: list[Any],
    fetched_at: float,
    sink: Sink,
    in_cleaner: Callable[..., Awaitable[Any]],
) -> Prepared:
    """Clean a gathered batch and score its clean rows, both in the cleaner thread."""
    sorted_batch = await in_cleaner(sort_messages, records)
    scores = None
    score = getattr(sink, "score", None)
    if score is not None and sorted_batch.clean.height:
        try:
            scores = await in_cleaner(score, sorted_batch.clean)
        except Exception as exc:  # the write scores again, where faults are classified
            log.debug("scoring ahead failed (%s); scoring in the write", reason_of(exc))
    return Prepared(records, sorted_batch, scores, fetched_at)


def write_isolating(
    clean: pl.DataFrame,
    sink: Sink,
    records: list[Any],
    scores: pl.DataFrame | None = None,
) -> tuple[int, list[DeadLetter]]:
    """Write `clean`; when the database refuses it for its content, split it in halves
    until the rows it refuses are alone, and return those as dead letters (a handful of
    writes for one bad row in 20,000, not 20,000). Transient and fatal errors are raised."""
    try:
        return sink.write(clean, scores), []
    except Exception as exc:
        if classify(exc) is not Fault.content:
            raise
        if clean.height <= 1:
            reason = f"database refused the event: {reason_of(exc)}"
            return 0, [DeadLetter(records[line], reason) for line in clean["line_number"]]
        log.warning("database refused %d rows (%s); isolating", clean.height, reason_of(exc))
    half = clean.height // 2
    first = write_isolating(clean.slice(0, half), sink, records, scores)
    second = write_isolating(clean.slice(half), sink, records, scores)
    return first[0] + second[0], [*first[1], *second[1]]
