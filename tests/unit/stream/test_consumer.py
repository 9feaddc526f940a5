"""stream/consumer.py without a broker: starting during a database outage, backoff delays."""

from __future__ import annotations

import asyncio
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pymysql
import pytest
from sqlalchemy.exc import OperationalError, ProgrammingError

from orderpipe.stream.consumer import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    ConsumerOptions,
    StreamConsumer,
    backoff_delay,
)
from orderpipe.stream.kafka import KafkaEndpoint


class FlakyFactory:
    """A sink factory that fails `failures` times with `error`, then builds a sink."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "the sink"


def refused() -> OperationalError:
    return OperationalError("connect", {}, pymysql.err.OperationalError(2003, "Can't connect"))


def open_sink(factory: FlakyFactory, wait: float) -> tuple[Any, StreamConsumer]:
    consumer = StreamConsumer(
        KafkaEndpoint("127.0.0.1:1"),
        "topic",
        "group",
        factory,
        options=ConsumerOptions(database_wait=wait),
    )
    consumer._writer = ThreadPoolExecutor(1)
    try:
        return asyncio.run(consumer._open_sink()), consumer
    finally:
        consumer._writer.shutdown()


def test_a_consumer_started_during_an_outage_waits_for_the_database() -> None:
    factory = FlakyFactory(2, refused())
    sink, consumer = open_sink(factory, wait=60)
    assert sink == "the sink"
    assert factory.calls == 3 and consumer.retries == 2


def test_without_a_wait_an_unreachable_database_fails_at_once() -> None:
    factory = FlakyFactory(1, refused())
    with pytest.raises(OperationalError):
        open_sink(factory, wait=0)
    assert factory.calls == 1


def test_a_fatal_fault_at_start_is_not_waited_for() -> None:
    missing = ProgrammingError("x", {}, pymysql.err.ProgrammingError(1146, "no such table"))
    factory = FlakyFactory(5, missing)
    with pytest.raises(ProgrammingError):
        open_sink(factory, wait=60)
    assert factory.calls == 1


def test_backoff_doubles_to_its_cap_with_jitter_in_the_upper_half() -> None:
    rng = random.Random(3)
    for attempt in range(1, 12):
        ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
        delays = [backoff_delay(attempt, rng) for _ in range(200)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(set(delays)) > 100  # jittered: consumers do not retry in lockstep
    assert max(backoff_delay(50, rng) for _ in range(100)) <= BACKOFF_CAP


# ---------------------------------------------------------------- batches cleaned as they gather
def _messages(count: int, first: int = 0) -> list[Any]:
    from tests.unit.stream.test_messages import FakeRecord, clean_message

    # every fifth message re-sends an earlier event with a later time; one is broken
    values = []
    for i in range(first, first + count):
        if i % 5 == 4:
            values.append(clean_message(event_id=f"e{i - 2}", event_time="2026-12-01T00:00:00Z"))
        elif i == 7:
            values.append(b'{"event_id": "broken",')
        else:
            values.append(clean_message(event_id=f"e{i}", order_id=f"ORD-{i}"))
    return [FakeRecord("t", 0, i, None, v) for i, v in enumerate(values, first)]


class TricklingConsumer:
    """Hands over `chunks` one getmany at a time, a few milliseconds apart."""

    def __init__(self, chunks: list[list[Any]]) -> None:
        self.chunks = list(chunks)

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        await asyncio.sleep(0.005)
        return {"tp": self.chunks.pop(0)} if self.chunks else {}


class ScoringSink:
    """Scores each clean row with its own copy's event time (the latest copy must keep it)."""

    def __init__(self) -> None:
        self.scored: list[int] = []

    def score(self, clean: Any) -> Any:
        import polars as pl

        self.scored.append(clean.height)
        return clean.select("event_id", pl.col("event_time").alias("mark"))


def test_a_batch_is_cleaned_piece_by_piece_while_the_writer_is_busy() -> None:
    """The batch handed over equals the whole batch cleaned at once; what came during the
    last piece is carried to the next batch; nothing is lost or doubled."""
    from orderpipe.stream.messages import sort_messages

    messages = _messages(60)
    chunks = [messages[i : i + 6] for i in range(0, 60, 6)]
    consumer = StreamConsumer(
        KafkaEndpoint("127.0.0.1:1"),
        "t",
        "g",
        lambda: None,
        options=ConsumerOptions(batch_wait_ms=5_000),
    )
    consumer._cleaner = ThreadPoolExecutor(1)
    sink = ScoringSink()

    async def gather() -> list[Any]:
        kafka = TricklingConsumer(chunks)
        consumer._writer_free.clear()  # busy writing the batch before

        async def write_ends() -> None:
            await asyncio.sleep(0.04)
            consumer._writer_free.set()

        ending = asyncio.ensure_future(write_ends())
        first = await consumer._prepare(kafka, sink)
        await ending
        carried = list(consumer._carried)
        second = await consumer._prepare(kafka, sink)  # the writer is free: what has come
        return [first, carried, second]

    try:
        first, carried, second = asyncio.run(gather())
    finally:
        consumer._cleaner.shutdown()
    assert len(sink.scored) > 1  # several pieces
    assert first.records + carried == messages[: len(first.records) + len(carried)]
    assert second.records[: len(carried)] == carried
    for prepared in (first, second):
        whole = sort_messages(prepared.records)
        assert prepared.sorted_batch.clean.sort("event_id").equals(whole.clean.sort("event_id"))
        assert [d.record for d in prepared.sorted_batch.dead] == [d.record for d in whole.dead]
        # each kept row keeps the score of its own copy (the latest), not the earlier one's
        kept = prepared.sorted_batch.clean.select("event_id", "event_time")
        marks = prepared.scores.join(kept, on="event_id")
        assert marks.height == kept.height and (marks["mark"] == marks["event_time"]).all()
