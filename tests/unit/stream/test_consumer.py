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
