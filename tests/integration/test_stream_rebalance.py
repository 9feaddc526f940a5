"""Rebalances while the consumer is busy: during a database outage, a dead-letter send and a
shutdown, against the real Apache Kafka. The sinks are stand-ins (no database): the questions
are about the group protocol, not about SQL.

Before the fix, the outage backoff polled Kafka while holding the lock the revoke callback
waits for, and aiokafka's poll waits for the rebalance: neither side could move.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import polars as pl
import pymysql
import pytest
from sqlalchemy.exc import OperationalError

from orderpipe.stream.consumer import StreamConsumer
from orderpipe.stream.kafka import KafkaEndpoint
from orderpipe.stream.lifecycle import ConsumerOptions
from orderpipe.stream.topics import ensure_topic
from tests.factories import raw_event

pytestmark = [pytest.mark.integration, pytest.mark.kafka, pytest.mark.slow]
EVENTS = 400
PARTITIONS = 4
REBALANCE_BOUND = 30.0  # seconds; aiokafka's own rebalance timeout here is 60 s


class StandInSink:
    """Remembers the event ids it stored; raises a 'cannot connect' while `down` is set."""

    def __init__(self, stored: set[str], lock: threading.Lock, down: threading.Event) -> None:
        self.stored, self.lock, self.down = stored, lock, down
        self.attempts = 0

    def write(self, clean: pl.DataFrame, scores: pl.DataFrame | None = None) -> int:
        self.attempts += 1
        if self.down.is_set():
            driver = pymysql.err.OperationalError(2003, "Can't connect to MySQL server")
            raise OperationalError("INSERT ...", {}, driver)
        with self.lock:
            self.stored.update(clean["event_id"].to_list())
        return clean.height

    def close(self) -> None:
        pass


class World:
    """One topic and group, the sinks' shared memory, and the outage switch."""

    def __init__(self, bootstrap: str) -> None:
        self.endpoint = KafkaEndpoint(bootstrap)
        self.topic = f"rebalance-{uuid.uuid4().hex[:10]}"
        self.group = f"group-{uuid.uuid4().hex[:6]}"
        self.stored: set[str] = set()
        self.lock = threading.Lock()
        self.sinks: list[StandInSink] = []

    def sink(self, down: threading.Event) -> Callable[[], StandInSink]:
        def make() -> StandInSink:
            sink = StandInSink(self.stored, self.lock, down)
            self.sinks.append(sink)
            return sink

        return make

    def consumer(self, down: threading.Event, cls: type[StreamConsumer] = StreamConsumer) -> Any:
        options = ConsumerOptions(batch_size=100, batch_wait_ms=50, idle_timeout=6.0)
        return cls(self.endpoint, self.topic, self.group, self.sink(down), options=options)

    async def send(self, values: list[bytes]) -> None:
        from aiokafka import AIOKafkaProducer

        await ensure_topic(self.endpoint, self.topic, PARTITIONS)
        producer = AIOKafkaProducer(bootstrap_servers=self.endpoint.bootstrap)
        await producer.start()
        try:
            deliveries = [
                await producer.send(self.topic, value=value, key=str(index).encode())
                for index, value in enumerate(values)
            ]
            await asyncio.gather(*deliveries)
        finally:
            await producer.stop()


def events(count: int) -> tuple[list[bytes], set[str]]:
    ids = [f"evt-rb-{index:05d}" for index in range(count)]
    values = [
        json.dumps(raw_event(event_id=event_id, order_id=f"ORD-RB-{index:05d}")).encode()
        for index, event_id in enumerate(ids)
    ]
    return values, set(ids)


def assert_all_stored(world: World, expected: set[str]) -> None:
    missing, extra = expected - world.stored, world.stored - expected
    assert not missing, f"{len(missing)} events never stored, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} unexpected events stored"


async def until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(0.1)
    return time.monotonic() - began


def test_a_rebalance_during_a_database_outage_completes(kafka_bootstrap: str) -> None:
    async def scenario() -> None:
        world = World(kafka_bootstrap)
        values, expected = events(EVENTS)
        await world.send(values)
        down, healthy = threading.Event(), threading.Event()
        down.set()
        first = world.consumer(down)
        running_first = asyncio.create_task(first.run())
        await until(lambda: first.retries >= 2, 30, "the first consumer never hit the outage")
        second = world.consumer(healthy)
        running_second = asyncio.create_task(second.run())
        # the first consumer, backing off, gives partitions up; the second one gets them
        await until(
            lambda: bool(second.assigned_partitions()),
            REBALANCE_BOUND,
            "the rebalance did not complete during the outage",
        )
        down.clear()  # the database is back: the first consumer stores what it kept
        first_result, second_result = await asyncio.wait_for(
            asyncio.gather(running_first, running_second), 60
        )
        assert_all_stored(world, expected)
        assert first_result.database_retries >= 2
        assert second_result.stored > 0

    asyncio.run(scenario())


class SlowDeadLetters(StreamConsumer):
    """Dead-letter sends that take a while (a slow or far DLQ topic)."""

    sending = False

    async def _dead_letter(self, dead: Any, dlq: Any) -> None:
        self.sending = True
        await asyncio.sleep(3)
        await super()._dead_letter(dead, dlq)
        self.sending = False


def test_a_rebalance_during_a_dead_letter_send_completes(kafka_bootstrap: str) -> None:
    async def scenario() -> None:
        world = World(kafka_bootstrap)
        values, expected = events(EVENTS)
        bad = [b"{not json", b"\xff\xfe", b'{"event_id": 1}']
        await world.send([*values[:200], *bad, *values[200:]])
        up = threading.Event()
        first = world.consumer(up, SlowDeadLetters)
        running_first = asyncio.create_task(first.run())
        await until(lambda: first.sending, 30, "no dead-letter send started")
        second = world.consumer(up)
        running_second = asyncio.create_task(second.run())
        await until(
            lambda: bool(second.assigned_partitions()),
            REBALANCE_BOUND,
            "the rebalance did not complete during a dead-letter send",
        )
        results = await asyncio.wait_for(asyncio.gather(running_first, running_second), 60)
        assert_all_stored(world, expected)
        # a dead letter sent by one member may be sent again by the next owner: never fewer
        assert sum(result.dead_lettered for result in results) >= len(bad)

    asyncio.run(scenario())


def test_shutdown_during_an_outage_returns_and_commits_nothing(kafka_bootstrap: str) -> None:
    async def scenario() -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        world = World(kafka_bootstrap)
        values, _ = events(100)
        await world.send(values)
        down = threading.Event()
        down.set()
        consumer = world.consumer(down)
        running = asyncio.create_task(consumer.run())
        await until(lambda: consumer.retries >= 1, 30, "the consumer never hit the outage")
        consumer.stop()
        stopped_in = await until(running.done, 10, "stop() during an outage did not return")
        result = await running
        assert result.stored == 0
        assert stopped_in < 10
        probe = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=world.group)
        await probe.start()
        try:
            committed = [
                await probe.committed(TopicPartition(world.topic, partition))
                for partition in range(PARTITIONS)
            ]
        finally:
            await probe.stop()
        assert committed == [None] * PARTITIONS

    asyncio.run(scenario())


def test_a_rebalance_when_a_member_shuts_down_during_an_outage_completes(
    kafka_bootstrap: str,
) -> None:
    async def scenario() -> None:
        world = World(kafka_bootstrap)
        values, expected = events(EVENTS)
        await world.send(values)
        down = threading.Event()
        down.set()
        first, second = world.consumer(down), world.consumer(down)
        running = [asyncio.create_task(first.run()), asyncio.create_task(second.run())]
        await until(
            lambda: bool(first.assigned_partitions()) and bool(second.assigned_partitions()),
            REBALANCE_BOUND,
            "two members never shared the partitions",
        )
        await until(lambda: first.retries >= 1 and second.retries >= 1, 30, "no outage seen")
        first.stop()  # leaves the group while the other member backs off
        await asyncio.wait_for(running[0], 15)
        await until(
            lambda: second.assigned_partitions() == set(range(PARTITIONS)),
            REBALANCE_BOUND,
            "the remaining member did not take every partition over",
        )
        down.clear()
        await asyncio.wait_for(running[1], 60)
        assert_all_stored(world, expected)

    asyncio.run(scenario())
