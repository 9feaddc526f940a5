"""Consumer: Kafka micro-batches -> shared cleaning -> sink (upserts + scores) -> offsets.

A crash re-delivers at most the last batch and the upserts make that harmless. What a failure
means is decided in one place (`stream.errors.classify`): a message at fault goes to
`<topic>.dlq` with the contract headers; a transient database failure pauses the partitions
with a capped, jittered backoff and commits nothing until the batch is stored; anything else
stops the consumer with nothing of the failing batch committed (`StreamStopped`, exit 1).

Batches adapt to the load: whatever has arrived is handed to the writer as soon as it is free,
and records gather only while it is busy (`batch_wait_ms` is an upper bound, not a wait).
No lock is held across `getmany` or a backoff: a rebalance waits at most for one write attempt.
Start and end are in `stream.lifecycle`, batch assembly in `stream.batches`, partitions and
offsets in `stream.offsets`, the collector, threads and backoff in `stream.runtime`.
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

import numpy as np

from orderpipe.core.crashpoints import crash_point
from orderpipe.db.errors import Fault, reason_of
from orderpipe.stream.batches import Prepared, clean_and_score, fill_batch, write_isolating
from orderpipe.stream.errors import StreamStopped, classify
from orderpipe.stream.lifecycle import ConsumerLifecycle, ConsumerOptions
from orderpipe.stream.messages import (
    DeadLetter,
    SortedBatch,
    commit_offsets,
    dead_letter_headers,
    dlq_topic,
    sort_messages,
)
from orderpipe.stream.metrics import LatencyHistogram
from orderpipe.stream.offsets import (
    advance,
    assign_every_partition,
    commit,
    owned,
    reached,
    report_lag,
    subscribe,
)
from orderpipe.stream.runtime import collector_for_serving, worker_thread

if TYPE_CHECKING:
    import polars as pl

    from orderpipe.stream.kafka import KafkaEndpoint
    from orderpipe.stream.sink import Sink

log = logging.getLogger("orderpipe.stream")


@dataclass(frozen=True)
class ConsumeResult:
    """What one consumer processed."""

    consumed: int
    stored: int
    dead_lettered: int
    batches: int
    database_retries: int
    seconds: float  # the consumer's whole run: start-up, work, idle waits
    # the time spent working: the union of every batch's span, from its first record fetched to
    # its commit (batches overlap: one gathers while the one before is stored); idle waits,
    # start-up and backoffs between batches are not in it
    busy_seconds: float
    events_per_second: float  # consumed / busy_seconds
    # p50/p95/p99/max of the time from produce (the record's timestamp) to stored: on a
    # backlog, mostly the backlog's age
    produce_to_stored_ms: dict[str, float] = field(default_factory=dict)
    # ... and from fetch to stored (the consumer's own share: gather, clean, score, write)
    fetch_to_stored_ms: dict[str, float] = field(default_factory=dict)


class StreamConsumer(ConsumerLifecycle):
    """The contract consumer loop; `run()` returns when a stop rule fires or `stop()` is called."""

    def __init__(
        self,
        endpoint: KafkaEndpoint,
        topic: str,
        group_id: str,
        sink_factory: Callable[[], Sink],
        *,
        options: ConsumerOptions | None = None,
        metrics: Any = None,
    ) -> None:
        super().__init__(endpoint, group_id, sink_factory, options, metrics)
        self.topic = topic
        # `stream run` sets the end offsets after its own last message: done when stored there
        self.stop_at: dict[Any, int] | None = None
        self.positions: dict[Any, int] = {}  # per partition: the next offset to store
        self.consumed = self.stored = self.dead_lettered = self.batches = 0
        self.latencies = LatencyHistogram()  # produce -> stored; fixed size, whatever the run
        self.processing = LatencyHistogram()  # fetch -> stored
        self._busy = 0.0  # seconds within some batch's span (see ConsumeResult.busy_seconds)
        self._busy_until = 0.0  # time.time() the spans counted so far reach
        self.ready = asyncio.Event()  # set once the model is loaded and partitions are assigned
        self._assigned_at: float | None = None
        # Held for one write attempt + its dead letters + its commit, never across getmany or a
        # backoff: a revoke waits for it, so offsets of a stored batch are committed first.
        self._in_flight = asyncio.Lock()
        self._writer_free = asyncio.Event()
        self._writer_free.set()

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
            self.metrics.drop_lag(tp.partition for tp in revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._assigned_at = time.monotonic()
        self.ready.set()
        log.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))

    async def run(self) -> ConsumeResult:
        # The sink lives in one thread of its own (its connection); the next batch is cleaned
        # and scored in another, beside the write. Their numerics use one thread each: the
        # two stages then share the two cores instead of fighting over them.
        self._writer = worker_thread("orderpipe-writer")
        self._cleaner = worker_thread("orderpipe-cleaner")
        began = time.perf_counter()
        started = await self._start()
        if started is None:  # asked to stop while the database was still unreachable
            self._shutdown_threads()
            return self._result(time.perf_counter() - began)
        sink, consumer, dlq = started
        # What is loaded so far (libraries, the model; in `stream run`, also the producer's
        # chunk in flight) is kept out of the cyclic collector, whose full passes over it
        # stalled batches by ~100-200 ms. A batch then allocates ~10^5 short-lived, acyclic
        # containers (records, row tuples) that reference counting frees: young collections
        # every 700 of them were ~8 % of `stream run`.
        gc.freeze()
        with collector_for_serving():
            try:
                await self._join(consumer, dlq)
                self.metrics.state("running")
                await self._loop(consumer, sink, dlq)
            finally:
                await self._stop_clients(consumer, dlq)
                await self._close(sink)
        return self._result(time.perf_counter() - began)

    def _result(self, seconds: float) -> ConsumeResult:
        working = self._busy
        return ConsumeResult(
            consumed=self.consumed,
            stored=self.stored,
            dead_lettered=self.dead_lettered,
            batches=self.batches,
            database_retries=self.retries,
            seconds=seconds,
            busy_seconds=working,
            events_per_second=self.consumed / working if working else 0.0,
            produce_to_stored_ms=self.latencies.summary(),
            fetch_to_stored_ms=self.processing.summary(),
        )

    async def _join(self, consumer: Any, dlq: Any) -> None:
        """Assign every partition (`options.assign`) or subscribe as a member of the group."""
        if not self.options.assign:
            subscribe(consumer, self.topic, self)
            return
        await assign_every_partition(consumer, dlq, self.topic, self.positions)
        self._assigned_at = time.monotonic()
        self.ready.set()

    async def _loop(self, consumer: Any, sink: Sink, dlq: Any) -> None:
        """Two stages overlap: while batch N is written and committed (a worker thread and the
        database), batch N+1 gathers and is cleaned (another thread, the second core)."""
        last_message = time.monotonic()
        upcoming: asyncio.Task[Prepared] | None = asyncio.create_task(self._prepare(consumer, sink))
        while upcoming is not None:
            prepared = await upcoming
            upcoming = None
            records = owned(consumer, prepared.records)
            if not records:
                if self._done() or self._idle(last_message):
                    break
                upcoming = asyncio.create_task(self._prepare(consumer, sink))
                continue
            last_message = time.monotonic()
            self._writer_free.clear()
            storing = asyncio.create_task(self._process(records, prepared, sink, dlq, consumer))
            if not self._done(pending=records):
                upcoming = asyncio.create_task(self._prepare(consumer, sink, len(records)))
            try:
                await storing
            except BaseException:
                if upcoming is not None:
                    upcoming.cancel()
                    with contextlib.suppress(BaseException):
                        await upcoming
                    upcoming = None
                raise
            finally:
                self._writer_free.set()
            last_message = time.monotonic()  # idle counts from the end of the last batch
            if self._done():
                break
            if upcoming is None:  # the batch was to reach a stop rule, but records of revoked
                # partitions were left to their new owner: fetch what is still missing
                upcoming = asyncio.create_task(self._prepare(consumer, sink))
        if upcoming is not None:  # fetched but not stored: left uncommitted, redelivered
            upcoming.cancel()
            with contextlib.suppress(BaseException):
                await upcoming

    def _room(self, storing: int) -> int:
        """Records the next batch may take: `batch_size`, and no more than `max_events` leaves
        once the `storing` records of the batch being stored count (a batch never takes the
        consumer past it)."""
        room = self.options.batch_size
        if self.options.max_events is not None:
            room = min(room, self.options.max_events - self.consumed - storing)
        return max(room, 0)

    def _done(self, pending: list[Any] | None = None) -> bool:
        """A stop rule fired (counting the `pending` records about to be stored)."""
        pending = pending or []
        if self._stop.is_set():
            return True
        limit = self.options.max_events
        if limit is not None and self.consumed + len(pending) >= limit:
            return True
        return self.stop_at is not None and reached(self.positions, self.stop_at, pending)

    def _idle(self, last_message: float) -> bool:
        if self.options.idle_timeout is None or self._assigned_at is None:
            return False
        since = max(last_message, self._assigned_at)
        return time.monotonic() - since >= self.options.idle_timeout

    async def _prepare(self, consumer: Any, sink: Sink, storing: int = 0) -> Prepared:
        """Gather a batch, clean it and score it, beside the write of the one before."""
        room, wait_ms = self._room(storing), self.options.batch_wait_ms
        records, fetched_at = await fill_batch(
            consumer, room, wait_ms, self._stop, self._writer_free
        )
        if not records:
            return Prepared(records, None)
        return await clean_and_score(records, fetched_at, sink, self._in_cleaner)

    async def _process(
        self, records: list[Any], prepared: Prepared, sink: Sink, dlq: Any, consumer: Any
    ) -> None:
        """Store one batch: retry while the fault is transient, stop when it is fatal.

        Each attempt holds `_in_flight` (a revoke waits for it); the backoff between attempts
        does not (see `runtime.back_off`). Records of partitions revoked meanwhile are dropped
        before the next attempt: their new owner stores them from the last committed offset.
        """
        sorted_batch, scores = prepared.sorted_batch, prepared.scores
        if sorted_batch is None or len(records) != len(prepared.records):
            sorted_batch = await self._in_cleaner(sort_messages, records)
        # scores of rows dropped since are harmless: only the batch's winners get theirs
        attempt = 0
        while True:
            async with self._in_flight:
                kept = owned(consumer, records)
                if not kept:
                    return
                if len(kept) != len(records):
                    records = kept
                    sorted_batch = await self._in_cleaner(sort_messages, records)
                try:
                    await self._attempt(
                        records, sorted_batch, sink, dlq, consumer, scores, prepared.fetched_at
                    )
                    return
                except Exception as exc:
                    if classify(exc) is not Fault.transient:
                        self.metrics.state("stopping")
                        raise StreamStopped.because(exc, len(records)) from exc
                    why = f"database unavailable ({reason_of(exc)})"
            if self._stop.is_set():  # shutting down during an outage: nothing committed
                log.warning("stopping during an outage: %d messages left uncommitted", len(records))
                return
            attempt += 1
            await self._retry_later(attempt, why)

    async def _attempt(
        self,
        records: list[Any],
        sorted_batch: SortedBatch,
        sink: Sink,
        dlq: Any,
        consumer: Any,
        scores: pl.DataFrame | None = None,
        fetched_at: float | None = None,
    ) -> None:
        """One try: write (isolating the rows the database refuses), dead-letter, commit."""
        began = time.perf_counter()
        stored, refused = await self._in_writer(
            write_isolating, sorted_batch.clean, sink, records, scores
        )
        written = time.perf_counter() - began
        dead = [*sorted_batch.dead, *refused]
        if dead:
            await self._dead_letter(dead, dlq)
        crash_point("stream.batch-stored")  # stored and dead-lettered, offsets not committed
        offsets = commit_offsets(records)
        await commit(consumer, offsets)
        advance(self.positions, offsets)
        self._count(records, stored, dead, written, fetched_at)
        report_lag(self.metrics, consumer, offsets)

    def _count(
        self,
        records: list[Any],
        stored: int,
        dead: list[DeadLetter],
        written: float,
        fetched_at: float | None,
    ) -> None:
        """A stored batch's figures: counts, busy time, latencies, and the metrics."""
        now = time.time()
        if fetched_at:  # this batch's span, less what an overlapping one counted already
            self._busy += max(now - max(fetched_at, self._busy_until), 0.0)
            self._busy_until = max(self._busy_until, now)
            self.processing.add_repeated((now - fetched_at) * 1000, len(records))
        # one array for both histograms (percentiles here, Prometheus buckets there)
        sent_ms = np.fromiter((record.timestamp for record in records), float, len(records))
        latencies = now * 1000 - sent_ms
        self.latencies.add(latencies)
        self.consumed += len(records)
        self.stored += stored
        self.dead_lettered += len(dead)
        self.batches += 1
        metrics = self.metrics
        metrics.consumed(len(records))
        metrics.stored(stored)
        if dead:
            metrics.dead_lettered(letter.error for letter in dead)
        metrics.batch(written)
        metrics.latency(latencies)

    async def _dead_letter(self, dead: list[DeadLetter], dlq: Any) -> None:
        deliveries = [
            await dlq.send(
                dlq_topic(self.topic),
                value=letter.record.value,
                key=letter.record.key,
                headers=dead_letter_headers(letter),
            )
            for letter in dead
        ]
        await asyncio.gather(*deliveries)
