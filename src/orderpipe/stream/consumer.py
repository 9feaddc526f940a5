"""Consumer: Kafka micro-batches -> shared cleaning -> sink (upserts + scores) -> offsets.

A crash re-delivers at most the last batch and the upserts make that harmless. Bad messages go
to `<topic>.dlq` with the contract headers; a database outage pauses the partitions with a
capped backoff and commits nothing until the batch is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orderpipe.stream.errors import is_transient, reason_of
from orderpipe.stream.messages import (
    DeadLetter,
    SortedBatch,
    commit_offsets,
    dead_letter_headers,
    sort_messages,
)
from orderpipe.stream.metrics import LatencyHistogram

if TYPE_CHECKING:
    import polars as pl

    from orderpipe.stream.kafka import KafkaEndpoint
    from orderpipe.stream.sink import Sink

log = logging.getLogger("orderpipe.stream")

TRANSIENT_BACKOFF = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class ConsumerOptions:
    """Micro-batching and stopping rules."""

    batch_size: int = 20_000
    batch_wait_ms: int = 100
    max_events: int | None = None
    idle_timeout: float | None = None
    assign: bool = False  # assign every partition (one consumer) instead of joining the group


@dataclass(frozen=True)
class ConsumeResult:
    """What one consumer processed."""

    consumed: int
    stored: int
    dead_lettered: int
    batches: int
    database_retries: int
    seconds: float
    events_per_second: float
    latency_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Prepared:
    """A fetched batch, already cleaned while the previous one was being stored."""

    records: list[Any]
    sorted_batch: SortedBatch | None


class StreamConsumer:
    """The contract consumer loop; `run()` returns when a stop rule fires or `stop()` is called."""

    def __init__(
        self,
        endpoint: KafkaEndpoint,
        topic: str,
        group_id: str,
        sink_factory: Callable[[], Sink],
        *,
        options: ConsumerOptions | None = None,
    ) -> None:
        self.endpoint, self.topic, self.group_id = endpoint, topic, group_id
        self.sink_factory = sink_factory
        self.options = options or ConsumerOptions()
        # `stream run` sets the end offsets after its own last message: done when stored there
        self.stop_at: dict[Any, int] | None = None
        self.positions: dict[Any, int] = {}  # per partition: the next offset to store
        self.consumed = self.stored = self.dead_lettered = self.batches = self.retries = 0
        self.latencies = LatencyHistogram()  # fixed size, whatever the run's length
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()  # set once the model is loaded and partitions are assigned
        self._assigned_at: float | None = None
        self._in_flight = asyncio.Lock()
        self._consumer: Any = None

    def stop(self) -> None:
        """Finish the current batch, commit it, and return from run()."""
        self._stop.set()

    def assigned_partitions(self) -> set[int]:
        """The partitions this consumer owns right now."""
        if self._consumer is None:
            return set()
        return {tp.partition for tp in self._consumer.assignment()}

    # -- rebalances: finish the batch in flight (its offsets get committed) before giving up
    # partitions; offsets of uncommitted database work are never committed.
    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self._in_flight:
            log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._assigned_at = time.monotonic()
        self.ready.set()
        log.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))

    async def run(self) -> ConsumeResult:
        from orderpipe.stream.kafka import start_client
        from orderpipe.stream.producer import ProducerOptions, producer_config, start_producer

        sink = await asyncio.to_thread(self.sink_factory)
        # Everything loaded so far (libraries, the model) lives as long as the process: keep it
        # out of the cyclic collector, whose full passes over it stalled batches by ~100-200 ms.
        gc.freeze()
        consumer = self._consumer = self._kafka_consumer()
        began = time.perf_counter()
        try:
            await start_client(consumer, self.endpoint)
        except BaseException:
            await asyncio.to_thread(sink.close)
            raise
        try:
            dlq = await start_producer(
                self.endpoint, producer_config(self.endpoint, ProducerOptions())
            )
        except BaseException:
            await consumer.stop()
            await asyncio.to_thread(sink.close)
            raise
        try:
            await self._join(consumer, dlq)
            await self._loop(consumer, sink, dlq)
        finally:
            with contextlib.suppress(Exception):
                await dlq.stop()
            with contextlib.suppress(Exception):
                await consumer.stop()
            await asyncio.to_thread(sink.close)
        seconds = time.perf_counter() - began
        return ConsumeResult(
            consumed=self.consumed,
            stored=self.stored,
            dead_lettered=self.dead_lettered,
            batches=self.batches,
            database_retries=self.retries,
            seconds=seconds,
            events_per_second=self.consumed / seconds if seconds else 0.0,
            latency_ms=self.latencies.summary(),
        )

    def _kafka_consumer(self) -> Any:
        from aiokafka import AIOKafkaConsumer

        return AIOKafkaConsumer(
            **self.endpoint.client_options(),
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.options.batch_size,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=min(self.options.batch_wait_ms, 500),
            # A rebalance waits at most max_poll_interval for members to rejoin: keep it short
            # (a batch takes seconds, and the outage backoff keeps polling), so a new member in
            # the group gets its partitions in seconds rather than minutes.
            heartbeat_interval_ms=1000,
            session_timeout_ms=10_000,
            max_poll_interval_ms=60_000,
        )

    async def _join(self, consumer: Any, dlq: Any) -> None:
        """Assign every partition (`options.assign`) or subscribe as a member of the group."""
        from aiokafka import TopicPartition
        from aiokafka.abc import ConsumerRebalanceListener

        if self.options.assign:
            # the producer's metadata call waits for the topic; consumer.topics() does not
            # refresh what partitions_for_topic() reads on every broker
            partitions = await dlq.partitions_for(self.topic)
            assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            for tp in assigned:  # where this group starts (committed earlier, or the beginning)
                self.positions[tp] = await consumer.position(tp)
            self._assigned_at = time.monotonic()
            self.ready.set()
            return
        owner = self

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: Any) -> None:
                await owner.on_partitions_revoked(revoked)

            async def on_partitions_assigned(self, assigned: Any) -> None:
                await owner.on_partitions_assigned(assigned)

        consumer.subscribe([self.topic], listener=Listener())

    async def _loop(self, consumer: Any, sink: Sink, dlq: Any) -> None:
        """Two stages overlap: while batch N is written and committed (a worker thread and the
        database), batch N+1 is fetched and cleaned (another thread, the second core)."""
        last_message = time.monotonic()
        upcoming: asyncio.Task[Prepared] | None = asyncio.create_task(self._prepare(consumer))
        while upcoming is not None:
            prepared = await upcoming
            upcoming = None
            records = [r for r in prepared.records if self._owned(consumer, r)]
            if not records:
                if self._done() or self._idle(last_message):
                    break
                upcoming = asyncio.create_task(self._prepare(consumer))
                continue
            last_message = time.monotonic()
            async with self._in_flight:
                storing = asyncio.create_task(self._process(records, prepared, sink, dlq, consumer))
                if not self._done(pending=records):
                    upcoming = asyncio.create_task(self._prepare(consumer))
                try:
                    await storing
                except BaseException:
                    if upcoming is not None:
                        upcoming.cancel()
                    raise
            if self._done():
                break
        if upcoming is not None:  # fetched but not stored: left uncommitted, redelivered
            upcoming.cancel()
            with contextlib.suppress(BaseException):
                await upcoming

    async def _fill_batch(self, consumer: Any) -> list[Any]:
        """Up to batch_size records, waiting at most batch_wait_ms for the batch to fill."""
        deadline = time.monotonic() + self.options.batch_wait_ms / 1000
        records: list[Any] = []
        while len(records) < self.options.batch_size and not self._stop.is_set():
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                break
            batch = await consumer.getmany(
                timeout_ms=left_ms, max_records=self.options.batch_size - len(records)
            )
            records.extend(record for part in batch.values() for record in part)
        return records

    def _done(self, pending: list[Any] | None = None) -> bool:
        """A stop rule fired (counting the `pending` records about to be stored)."""
        pending = pending or []
        if self._stop.is_set():
            return True
        limit = self.options.max_events
        if limit is not None and self.consumed + len(pending) >= limit:
            return True
        if self.stop_at is None:
            return False
        positions = dict(self.positions)
        for tp, offset in commit_offsets(pending).items():
            positions[tp] = max(positions.get(tp, 0), offset)
        return all(positions.get(tp, 0) >= end for tp, end in self.stop_at.items())

    def _idle(self, last_message: float) -> bool:
        if self.options.idle_timeout is None or self._assigned_at is None:
            return False
        since = max(last_message, self._assigned_at)
        return time.monotonic() - since >= self.options.idle_timeout

    async def _prepare(self, consumer: Any) -> Prepared:
        records = await self._fill_batch(consumer)
        sorted_batch = await asyncio.to_thread(sort_messages, records) if records else None
        return Prepared(records, sorted_batch)

    @staticmethod
    def _owned(consumer: Any, record: Any) -> bool:
        """False for a record fetched before its partition was revoked (the new owner has it)."""
        from aiokafka import TopicPartition

        return TopicPartition(record.topic, record.partition) in consumer.assignment()

    async def _process(
        self, records: list[Any], prepared: Prepared, sink: Sink, dlq: Any, consumer: Any
    ) -> None:
        sorted_batch = prepared.sorted_batch
        if sorted_batch is None or len(records) != len(prepared.records):
            sorted_batch = await asyncio.to_thread(sort_messages, records)
        try:
            stored = await self._store(sorted_batch.clean, sink, consumer)
            dead = sorted_batch.dead
        except Exception as exc:
            if is_transient(exc):
                raise
            # The database refused the batch for its content: find the rows it refuses, one by
            # one, so one bad message cannot block its partition.
            log.warning(
                "database refused a batch (%s); storing its rows one by one", reason_of(exc)
            )
            stored, refused = await asyncio.to_thread(
                self._store_one_by_one, sorted_batch.clean, sink, records
            )
            dead = [*sorted_batch.dead, *refused]
        if dead:
            await self._dead_letter(dead, dlq)
        offsets = commit_offsets(records)
        await consumer.commit(offsets)
        for tp, offset in offsets.items():
            self.positions[tp] = max(self.positions.get(tp, 0), offset)
        now_ms = time.time() * 1000
        self.latencies.add([now_ms - record.timestamp for record in records])
        self.consumed += len(records)
        self.stored += stored
        self.dead_lettered += len(dead)
        self.batches += 1

    async def _store(self, clean: pl.DataFrame, sink: Sink, consumer: Any) -> int:
        """Write the batch; while the database is down, pause fetching and retry with backoff."""
        attempt = 0
        while True:
            try:
                return await asyncio.to_thread(sink.write, clean)
            except Exception as exc:
                if not is_transient(exc) or (self._stop.is_set() and attempt > 2):
                    raise
                delay = TRANSIENT_BACKOFF[min(attempt, len(TRANSIENT_BACKOFF) - 1)]
                attempt += 1
                self.retries += 1
                log.warning(
                    "database unavailable (%s); retry %d in %.1f s, fetching paused",
                    reason_of(exc),
                    attempt,
                    delay,
                )
                partitions = consumer.assignment()
                consumer.pause(*partitions)
                try:
                    # getmany on paused partitions returns nothing but keeps the member alive
                    await consumer.getmany(timeout_ms=int(delay * 1000))
                finally:
                    consumer.resume(*[tp for tp in partitions if tp in consumer.assignment()])

    @staticmethod
    def _store_one_by_one(
        clean: pl.DataFrame, sink: Sink, records: list[Any]
    ) -> tuple[int, list[DeadLetter]]:
        stored, refused = 0, []
        for row in clean.iter_slices(1):
            try:
                stored += sink.write(row)
            except Exception as exc:
                if is_transient(exc):
                    raise
                refused.append(
                    DeadLetter(
                        records[row["line_number"][0]],
                        f"database refused the event: {reason_of(exc)}",
                    )
                )
        return stored, refused

    async def _dead_letter(self, dead: list[DeadLetter], dlq: Any) -> None:
        deliveries = [
            await dlq.send(
                f"{self.topic}.dlq",
                value=letter.record.value,
                key=letter.record.key,
                headers=dead_letter_headers(letter),
            )
            for letter in dead
        ]
        await asyncio.gather(*deliveries)
