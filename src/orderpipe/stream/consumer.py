"""Consumer: Kafka micro-batches -> shared cleaning -> sink (upserts + scores) -> offsets.

A crash re-delivers at most the last batch and the upserts make that harmless. What a failure
means is decided in one place (`stream.errors.classify`): a message at fault goes to
`<topic>.dlq` with the contract headers; a transient database failure pauses the partitions
with a capped, jittered backoff and commits nothing until the batch is stored; anything else
stops the consumer with nothing of the failing batch committed (`StreamStopped`, exit 1).

Batches adapt to the load: whatever has arrived is handed to the writer as soon as it is free,
and records gather only while it is busy (`batch_wait_ms` is an upper bound, not a wait).
No lock is held across `getmany` or a backoff: a rebalance waits at most for one write attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from orderpipe.stream.errors import Fault, StreamStopped, classify, reason_of
from orderpipe.stream.messages import (
    DeadLetter,
    SortedBatch,
    commit_offsets,
    dead_letter_headers,
    dlq_topic,
    sort_messages,
)
from orderpipe.stream.metrics import LatencyHistogram
from orderpipe.stream.observe import NoMetrics

if TYPE_CHECKING:
    import polars as pl

    from orderpipe.stream.kafka import KafkaEndpoint
    from orderpipe.stream.sink import Sink

log = logging.getLogger("orderpipe.stream")

BACKOFF_BASE, BACKOFF_CAP = 0.2, 8.0  # seconds: 0.2, 0.4, 0.8 ... 8, each with jitter
EMBEDDED_FETCH_WAIT_MS = 10  # see StreamConsumer._fetch_wait_ms
# The cyclic collector's thresholds while a consumer runs (Python's defaults: 700, 10, 10).
SERVICE_GC_THRESHOLDS = (100_000, 50, 100)
# Consumers serving in this process, and the thresholds from before the first one (a process
# may run several, as the tests do: the last one to finish puts them back).
_serving: dict[str, Any] = {"count": 0, "thresholds": None}


@contextlib.contextmanager
def _collector_for_serving() -> Iterator[None]:
    """The service thresholds while the block serves, the process's own before and after."""
    if _serving["count"] == 0:
        _serving["thresholds"] = gc.get_threshold()
        gc.set_threshold(*SERVICE_GC_THRESHOLDS)
    _serving["count"] += 1
    try:
        yield
    finally:
        _serving["count"] -= 1
        if _serving["count"] == 0:
            gc.set_threshold(*_serving["thresholds"])


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic collection while the block loads what lives as long as the process: importing
    scikit-learn and its model allocates ~10^6 objects, and the collections they set off
    re-scanned all of them (~0.4 s of `stream run`'s start)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _close_late_sink(opened: asyncio.Future[Any]) -> None:
    if not opened.cancelled() and opened.exception() is None:
        with contextlib.suppress(Exception):
            opened.result().close()


def _one_thread_for_numerics() -> None:
    """Run in the writer and cleaner threads: each one's OpenMP kernels (the model's predict)
    use that one thread. A micro-batch of a few hundred rows spent more time waking and
    spinning OpenMP workers, on a core the other stage needs, than computing (~30 ms instead
    of ~10 ms per batch)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="openmp")


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Capped exponential backoff with "equal jitter": in [d/2, d], d = min(cap, base * 2^n).

    Consumers that lost the same database do not come back in lockstep.
    """
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(attempt - 1, 0))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


@dataclass(frozen=True)
class ConsumerOptions:
    """Micro-batching and stopping rules."""

    batch_size: int = 20_000
    batch_wait_ms: int = 100
    max_events: int | None = None
    idle_timeout: float | None = None
    assign: bool = False  # assign every partition (one consumer) instead of joining the group
    # how long a consumer started during a database outage waits for it before giving up
    database_wait: float = 120.0


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


@dataclass(frozen=True)
class Prepared:
    """A fetched batch, already cleaned while the previous one was being stored."""

    records: list[Any]
    sorted_batch: SortedBatch | None
    scores: pl.DataFrame | None = None  # predictions for every clean row, made ahead
    fetched_at: float = 0.0  # time.time() when its first record arrived


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
        metrics: Any = None,
    ) -> None:
        self.endpoint, self.topic, self.group_id = endpoint, topic, group_id
        self.sink_factory = sink_factory
        self.options = options or ConsumerOptions()
        self.metrics = metrics or NoMetrics()  # stream.observe.ConsumerMetrics when served
        # `stream run` sets the end offsets after its own last message: done when stored there
        self.stop_at: dict[Any, int] | None = None
        self.positions: dict[Any, int] = {}  # per partition: the next offset to store
        self.consumed = self.stored = self.dead_lettered = self.batches = self.retries = 0
        self.latencies = LatencyHistogram()  # produce -> stored; fixed size, whatever the run
        self.processing = LatencyHistogram()  # fetch -> stored
        self._busy = 0.0  # seconds within some batch's span (see ConsumeResult.busy_seconds)
        self._busy_until = 0.0  # time.time() the spans counted so far reach
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()  # set once the model is loaded and partitions are assigned
        self._assigned_at: float | None = None
        # Held for one write attempt + its dead letters + its commit, never across getmany or a
        # backoff: a revoke waits for it, so offsets of a stored batch are committed first.
        self._in_flight = asyncio.Lock()
        self._writer_free = asyncio.Event()
        self._writer_free.set()
        self._consumer: Any = None
        self._writer: ThreadPoolExecutor | None = None
        self._cleaner: ThreadPoolExecutor | None = None

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
        self._writer = ThreadPoolExecutor(
            1, thread_name_prefix="orderpipe-writer", initializer=_one_thread_for_numerics
        )
        self._cleaner = ThreadPoolExecutor(
            1, thread_name_prefix="orderpipe-cleaner", initializer=_one_thread_for_numerics
        )
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
        with _collector_for_serving():
            try:
                await self._join(consumer, dlq)
                self.metrics.state("running")
                await self._loop(consumer, sink, dlq)
            finally:
                await self._stop_clients(consumer, dlq)
                await self._close(sink)
        return self._result(time.perf_counter() - began)

    async def _start(self) -> tuple[Sink, Any, Any] | None:
        """Open the sink (the model loads, the database answers) while the Kafka clients start
        (they were in turn: ~0.3 s of `stream run`). The first failure is raised, the sink's
        when both fail (a missing model says more than a broker that is down); what the other
        start opened is closed. None when asked to stop while the database was unreachable."""
        opening = asyncio.ensure_future(self._open_sink())
        starting = asyncio.ensure_future(self._start_clients())
        try:
            await asyncio.wait({opening, starting}, return_when=asyncio.FIRST_EXCEPTION)
        except BaseException:  # cancelled
            await self._abandon(opening, starting)
            raise
        failed = [task for task in (opening, starting) if task.done() and task.exception()]
        if failed:
            await self._abandon(opening, starting)
            raise failed[0].exception()  # type: ignore[misc]
        consumer, dlq = starting.result()
        sink = opening.result()
        if sink is None:
            await self._stop_clients(consumer, dlq)
            return None
        return sink, consumer, dlq

    async def _abandon(self, opening: asyncio.Future[Any], starting: asyncio.Future[Any]) -> None:
        """A start failed or was cancelled: stop the other one, and close what either opened."""
        self._stop.set()  # a sink waiting for its database gives up (see _open_sink)
        starting.cancel()
        sink, clients = await asyncio.gather(opening, starting, return_exceptions=True)
        if isinstance(clients, tuple):
            await self._stop_clients(*clients)
        if sink is not None and not isinstance(sink, BaseException):
            with contextlib.suppress(Exception):
                await self._in_writer(sink.close)
        self._shutdown_threads()
        # A stopped client cancels its connections' readers without waiting for them: one
        # pass of the loop lets them end, so nothing of the consumer outlives its run
        await asyncio.sleep(0)

    async def _start_clients(self) -> tuple[Any, Any]:
        """The started Kafka consumer (not yet a member of its group) and dead-letter producer."""
        from orderpipe.stream.kafka import start_client
        from orderpipe.stream.producer import ProducerOptions, producer_config, start_producer

        consumer = self._consumer = self._kafka_consumer()
        try:
            await start_client(consumer, self.endpoint)
            dlq = await start_producer(
                self.endpoint, producer_config(self.endpoint, ProducerOptions())
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise
        return consumer, dlq

    @staticmethod
    async def _stop_clients(consumer: Any, dlq: Any) -> None:
        with contextlib.suppress(Exception):
            await dlq.stop()
        with contextlib.suppress(Exception):
            await consumer.stop()

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

    async def _open_sink(self) -> Sink | None:
        """The sink, once the database answers: a consumer (re)started during an outage waits
        for it (`database_wait` at most) with the same backoff as a batch, instead of exiting;
        other faults, a wrong host that never answers included once the wait is over, stop it."""
        attempt, deadline = 0, time.monotonic() + self.options.database_wait
        while True:
            if attempt and self._stop.is_set():
                return None
            try:
                with _collector_paused():  # the libraries and the model load in the writer
                    return await self._opened_sink()
            except Exception as exc:
                if classify(exc) is not Fault.transient or time.monotonic() >= deadline:
                    raise
                if self._stop.is_set():
                    return None
                attempt += 1
                why = f"database unavailable at start ({reason_of(exc)})"
                await self._retry_later(attempt, why)

    async def _opened_sink(self) -> Sink:
        """`sink_factory()` in the writer thread; a sink that opens after its consumer was
        cancelled (the thread cannot be) is closed as soon as it is there."""
        opened = asyncio.get_running_loop().run_in_executor(self._writer, self.sink_factory)
        try:
            return await asyncio.shield(opened)
        except asyncio.CancelledError:
            opened.add_done_callback(_close_late_sink)
            raise

    async def _retry_later(self, attempt: int, why: str) -> None:
        """Count a database retry, say why, and back off before attempt `attempt + 1`."""
        self.retries += 1
        self.metrics.retry()
        delay = backoff_delay(attempt)
        log.warning("%s; retry %d in %.1f s", why, attempt, delay)
        await self._backoff(delay)

    async def _in_writer(self, call: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._writer, call, *args)

    async def _in_cleaner(self, call: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._cleaner, call, *args)

    async def _close(self, sink: Sink) -> None:
        try:
            await self._in_writer(sink.close)
        finally:
            self._shutdown_threads()

    def _shutdown_threads(self) -> None:
        for pool in (self._writer, self._cleaner):
            if pool is not None:
                pool.shutdown(wait=False)

    def _kafka_consumer(self) -> Any:
        from aiokafka import AIOKafkaConsumer

        return AIOKafkaConsumer(
            **self.endpoint.client_options(),
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.options.batch_size,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=min(self.options.batch_wait_ms, self._fetch_wait_ms()),
            # A rebalance waits at most max_poll_interval for members to rejoin: keep it short
            # (a batch takes seconds), so a new member in the group gets its partitions in
            # seconds rather than minutes. A member backing off through a longer outage does not
            # poll (see _backoff): it leaves the group, and rejoins with its next poll.
            heartbeat_interval_ms=1000,
            session_timeout_ms=10_000,
            max_poll_interval_ms=60_000,
        )

    def _fetch_wait_ms(self) -> int:
        """How long a fetch may wait for records. Apache Kafka answers a fetch as soon as a
        record comes (fetch_min_bytes=1), whatever the wait. The embedded broker (tansu)
        answers only when the wait is over: records came in bursts every ~50 ms, and paced
        at 2,000 events/s p50 was ~60 ms; with 10 ms, ~51 ms. The cost: while there is
        nothing to read, a fetch every 10 ms, which the local broker and this consumer answer
        and decode; a `stream run` on it is a bounded run."""
        return EMBEDDED_FETCH_WAIT_MS if self.endpoint.embedded else 500

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
        database), batch N+1 gathers and is cleaned (another thread, the second core)."""
        last_message = time.monotonic()
        upcoming: asyncio.Task[Prepared] | None = asyncio.create_task(self._prepare(consumer, sink))
        while upcoming is not None:
            prepared = await upcoming
            upcoming = None
            records = self._owned(consumer, prepared.records)
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

    async def _fill_batch(self, consumer: Any, storing: int = 0) -> tuple[list[Any], float]:
        """Whatever has arrived once the writer is free; while it is busy, more records gather,
        up to batch_size and for at most batch_wait_ms (an upper bound, not a wait). Also the
        time.time() its first records came (0.0 for none)."""
        deadline = time.monotonic() + self.options.batch_wait_ms / 1000
        records: list[Any] = []
        fetched_at = 0.0
        free: asyncio.Task[Any] | None = None
        room = self._room(storing)
        try:
            while len(records) < room and not self._stop.is_set():
                if records and self._writer_free.is_set():
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
                    free = free or asyncio.ensure_future(self._writer_free.wait())
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

    async def _prepare(self, consumer: Any, sink: Sink, storing: int = 0) -> Prepared:
        """Gather a batch, clean it and score it, beside the write of the one before."""
        records, fetched_at = await self._fill_batch(consumer, storing)
        if not records:
            return Prepared(records, None)
        sorted_batch = await self._in_cleaner(sort_messages, records)
        scores = None
        score = getattr(sink, "score", None)
        if score is not None and sorted_batch.clean.height:
            try:
                scores = await self._in_cleaner(score, sorted_batch.clean)
            except Exception as exc:  # the write scores again, where faults are classified
                log.debug("scoring ahead failed (%s); scoring in the write", reason_of(exc))
        return Prepared(records, sorted_batch, scores, fetched_at)

    @staticmethod
    def _owned(consumer: Any, records: list[Any]) -> list[Any]:
        """`records` less those fetched before their partition was revoked (the new owner has
        them). A TopicPartition is a named tuple: a plain (topic, partition) tuple finds it."""
        assigned = consumer.assignment()
        if all(part in assigned for part in {(r.topic, r.partition) for r in records}):
            return records
        return [record for record in records if (record.topic, record.partition) in assigned]

    async def _process(
        self, records: list[Any], prepared: Prepared, sink: Sink, dlq: Any, consumer: Any
    ) -> None:
        """Store one batch: retry while the fault is transient, stop when it is fatal.

        Each attempt holds `_in_flight` (a revoke waits for it); the backoff between attempts
        does not (see `_backoff`). Records of partitions revoked meanwhile are dropped before
        the next attempt: their new owner stores them from the last committed offset.
        """
        sorted_batch, scores = prepared.sorted_batch, prepared.scores
        if sorted_batch is None or len(records) != len(prepared.records):
            sorted_batch = await self._in_cleaner(sort_messages, records)
        # scores of rows dropped since are harmless: only the batch's winners get theirs
        attempt = 0
        while True:
            async with self._in_flight:
                owned = self._owned(consumer, records)
                if not owned:
                    return
                if len(owned) != len(records):
                    records = owned
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
            self._write_isolating, sorted_batch.clean, sink, records, scores
        )
        written = time.perf_counter() - began
        dead = [*sorted_batch.dead, *refused]
        if dead:
            await self._dead_letter(dead, dlq)
        offsets = commit_offsets(records)
        await self._commit(consumer, offsets)
        for tp, offset in offsets.items():
            self.positions[tp] = max(self.positions.get(tp, 0), offset)
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
        assigned = consumer.assignment()
        for tp, offset in offsets.items():
            highwater = consumer.highwater(tp) if tp in assigned else None
            if highwater is not None:
                metrics.lag(tp.partition, max(highwater - offset, 0))

    async def _commit(self, consumer: Any, offsets: dict[Any, int]) -> None:
        """Commit; a group that rebalanced meanwhile refuses it, and the new owner of those
        partitions stores the batch again (the upserts make that harmless)."""
        from aiokafka.errors import CommitFailedError, IllegalStateError

        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning(
                "offsets not committed (%s): the new owner stores the batch again", reason_of(exc)
            )

    async def _backoff(self, seconds: float) -> None:
        """Wait `seconds`, or less when asked to stop. No lock is held, so a rebalance meanwhile
        completes; and nothing polls Kafka here. (Polling "paused" partitions is not safe: the
        partitions a rebalance assigns during the pause are not paused, and a poll would hand
        over, and so skip, their records.) The fetch of the next batch goes on concurrently and
        stops at batch_size; an outage longer than max_poll_interval makes the member leave the
        group, and the next poll rejoins it."""
        self.metrics.state("paused")
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), seconds)
        finally:
            self.metrics.state("running")

    @classmethod
    def _write_isolating(
        cls,
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
        first = cls._write_isolating(clean.slice(0, half), sink, records, scores)
        second = cls._write_isolating(clean.slice(half), sink, records, scores)
        return first[0] + second[0], [*first[1], *second[1]]

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
