"""stream/consumer.py without a broker: starting during a database outage, backoff delays."""

from __future__ import annotations

import asyncio
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pymysql
import pytest
from sqlalchemy.exc import OperationalError, ProgrammingError

from orderpipe.stream.consumer import StreamConsumer
from orderpipe.stream.kafka import KafkaEndpoint
from orderpipe.stream.lifecycle import ConsumerOptions
from orderpipe.stream.runtime import BACKOFF_BASE, BACKOFF_CAP, backoff_delay


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


@pytest.mark.parametrize(
    ("embedded", "batch_wait_ms", "fetch_wait_ms"),
    [(True, 100, 10), (True, 5, 5), (False, 100, 100), (False, 2000, 500)],
)
def test_a_fetch_waits_briefly_only_on_the_embedded_broker(
    embedded: bool, batch_wait_ms: int, fetch_wait_ms: int
) -> None:
    """tansu answers a fetch when its wait is over, not when a record comes (Apache Kafka
    answers at once): on it, a fetch waits 10 ms, so records are not held ~50 ms."""
    consumer = StreamConsumer(
        KafkaEndpoint("127.0.0.1:1", embedded=embedded),
        "topic",
        "group",
        FlakyFactory(0, refused()),
        options=ConsumerOptions(batch_wait_ms=batch_wait_ms),
    )
    assert min(batch_wait_ms, consumer._fetch_wait_ms()) == fetch_wait_ms


class FakeClient:
    """A Kafka client whose start succeeds, fails or never ends; it records its stop."""

    def __init__(self, start: str = "ok") -> None:
        self.start, self.stopped = start, False

    async def stop(self) -> None:
        self.stopped = True


class FakeSink:
    closed = False

    def close(self) -> None:
        self.closed = True


def start_with(
    monkeypatch: pytest.MonkeyPatch, consumer_start: str, factory: Any
) -> tuple[StreamConsumer, list[FakeClient]]:
    """A consumer whose Kafka clients are fakes: the consumer's start is `consumer_start`
    ("ok", "fails", "hangs"), the dead-letter producer's always succeeds."""
    from orderpipe.core.errors import OrderpipeError
    from orderpipe.stream import lifecycle, producer

    clients: list[FakeClient] = []

    async def start_client(client: FakeClient, _endpoint: object) -> FakeClient:
        if client.start == "fails":
            raise OrderpipeError("cannot connect to Kafka at 127.0.0.1:1 (PLAINTEXT): refused")
        if client.start == "hangs":
            await asyncio.sleep(3600)
        return client

    async def start_producer(_endpoint: object, _config: object) -> FakeClient:
        clients.append(FakeClient())
        return clients[-1]

    monkeypatch.setattr(lifecycle, "start_client", start_client)
    monkeypatch.setattr(producer, "start_producer", start_producer)
    consumer = StreamConsumer(KafkaEndpoint("127.0.0.1:1"), "topic", "group", factory)

    def kafka_consumer() -> FakeClient:
        clients.insert(0, FakeClient(consumer_start))
        return clients[0]

    monkeypatch.setattr(consumer, "_kafka_consumer", kafka_consumer)
    return consumer, clients


def test_a_sink_that_fails_to_open_stops_the_started_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = FileNotFoundError("classification_model.joblib: run `orderpipe train` first")
    consumer, clients = start_with(monkeypatch, "ok", FlakyFactory(1, missing))
    with pytest.raises(FileNotFoundError):
        asyncio.run(consumer.run())
    assert [client.stopped for client in clients] == [True, True]


def test_clients_that_fail_to_start_close_the_opened_sink(monkeypatch: pytest.MonkeyPatch) -> None:
    from orderpipe.core.errors import OrderpipeError

    sink = FakeSink()
    consumer, clients = start_with(monkeypatch, "fails", lambda: sink)
    with pytest.raises(OrderpipeError, match="cannot connect to Kafka"):
        asyncio.run(consumer.run())
    assert sink.closed and clients[0].stopped


def test_the_sinks_error_is_raised_at_once_even_while_the_broker_never_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both start together: a model that fails to load is said at once, not after Kafka's
    own timeout, and the client still starting is stopped."""
    missing = FileNotFoundError("classification_model.joblib: run `orderpipe train` first")
    consumer, clients = start_with(monkeypatch, "hangs", FlakyFactory(1, missing))

    async def run() -> None:
        await asyncio.wait_for(consumer.run(), timeout=10)

    with pytest.raises(FileNotFoundError):
        asyncio.run(run())
    assert clients[0].stopped


def test_max_events_fetches_again_when_revoked_records_were_left_to_their_new_owner() -> None:
    # The batch that was to reach --max-events lost records of a partition revoked meanwhile:
    # the loop ended with fewer than N taken (exit 0), as no next fetch had been started.
    from collections import namedtuple

    from orderpipe.stream.batches import Prepared

    Record = namedtuple("Record", "topic partition offset")
    consumer = StreamConsumer(
        KafkaEndpoint("127.0.0.1:1"),
        "topic",
        "group",
        FlakyFactory(0, refused()),
        options=ConsumerOptions(max_events=4, idle_timeout=5),
    )
    batches = [
        [Record("topic", 0, i) for i in range(4)],
        [Record("topic", 0, 4), Record("topic", 0, 5)],
    ]
    fetched: list[int] = []

    class Kafka:
        @staticmethod
        def assignment() -> set[tuple[str, int]]:
            return {("topic", 0)}

    async def prepare(_consumer: object, _sink: object, _storing: int = 0) -> Prepared:
        records = batches.pop(0) if batches else []
        fetched.append(len(records))
        return Prepared(records, None)

    async def process(records: list[Any], *_args: object) -> None:
        consumer.consumed += 2  # two of the records' partition went to another member

    consumer._prepare = prepare  # type: ignore[method-assign]
    consumer._process = process  # type: ignore[method-assign]
    asyncio.run(asyncio.wait_for(consumer._loop(Kafka(), None, None), 10))  # type: ignore[arg-type]
    assert fetched == [4, 2]
    assert consumer.consumed == 4
