"""Consumer: Kafka micro-batches -> shared cleaning -> upserts -> scores -> DB commit -> offsets.

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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from orderpipe.errors import OrderpipeError

log = logging.getLogger("orderpipe.stream")

RAW_SHAPE = r'"customer"\s*:|"order"\s*:'
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


@dataclass(frozen=True)
class DeadLetter:
    record: Any
    error: str


@dataclass(frozen=True)
class SortedBatch:
    """Valid clean rows (one per event_id; `line_number` = index of the message) and the DLQ."""

    clean: pl.DataFrame
    dead: list[DeadLetter]


def sort_messages(records: list[Any]) -> SortedBatch:
    """Decode and clean a batch with the batch ETL's code; everything else is a dead letter."""
    from orderpipe.etl import clean_lines, clean_record_lines, dedupe_latest

    dead: list[DeadLetter] = []
    numbers: list[int] = []
    texts: list[str] = []
    for index, record in enumerate(records):
        if record.value is None:
            dead.append(DeadLetter(record, "empty message"))
            continue
        try:
            texts.append(record.value.decode("utf-8"))
            numbers.append(index)
        except UnicodeDecodeError:
            dead.append(DeadLetter(record, "not UTF-8 text"))
    frame = pl.DataFrame(
        {
            "line_number": pl.Series(numbers, dtype=pl.Int64),
            "line": pl.Series(texts, dtype=pl.String),
        }
    )
    is_raw = frame["line"].str.contains(RAW_SHAPE)
    raw, flat = frame.filter(is_raw), frame.filter(~is_raw)
    parts = [clean_lines(raw)] if raw.height or not flat.height else []
    if flat.height:
        parts.append(clean_record_lines(flat))
    for part in parts:
        for number, reason in part.rejected.select("line_number", "reason").iter_rows():
            dead.append(DeadLetter(records[number], reason))
    clean = pl.concat([part.clean for part in parts])
    return SortedBatch(clean=dedupe_latest(clean), dead=dead)


class BatchWriter:
    """Writes one batch in one database transaction: customers, orders, events, predictions.

    Keeps one connection with per-row foreign-key lookups off: every event's customer and order
    are upserted first in the same transaction, so the keys hold by construction (the stream
    tests check them). A failed connection is dropped and reopened on the next attempt.
    """

    def __init__(self, database_url: str, artifacts_dir: Path, local_infile: bool = True) -> None:
        from orderpipe.db.engine import create_tables, make_engine
        from orderpipe.db.upsert import local_infile_available
        from orderpipe.ml.model import load_model

        self.model = load_model(artifacts_dir, "classification")
        self.engine = make_engine(database_url, local_infile=local_infile)
        create_tables(self.engine)
        with self.engine.connect() as conn:  # MySQL/MariaDB: bulk path when the server allows
            self.load_data = local_infile and local_infile_available(conn)
        self._conn: Any = None

    def _connection(self) -> Any:
        from orderpipe.db.upsert import foreign_key_checks

        if self._conn is None:
            self._conn = self.engine.connect()
            foreign_key_checks(self._conn, enabled=False)
        return self._conn

    def write(self, clean: pl.DataFrame) -> int:
        from orderpipe.db.models import Base
        from orderpipe.db.upsert import upsert, upsert_via_load_data
        from orderpipe.ingest import table_frames
        from orderpipe.ml.predict import score_batch

        if clean.height == 0:
            return 0
        clean = clean.drop("line_number", strict=False)
        frames = table_frames(clean)
        frames["table_predictions"] = score_batch(self.model, clean, datetime.now(UTC))
        try:
            conn = self._connection()
            with conn.begin():
                for name, frame in frames.items():
                    table = Base.metadata.tables[name]
                    if self.load_data:
                        upsert_via_load_data(conn, table, frame)
                    else:
                        upsert(conn, table, frame)
        except Exception:
            self._drop_connection()
            raise
        return clean.height

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.invalidate()
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        self._drop_connection()
        self.engine.dispose()


def is_transient(exc: BaseException) -> bool:
    """Database errors worth waiting for (server down, connection lost, lock timeouts)."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


class StreamConsumer:
    """The contract consumer loop; `run()` returns when a stop rule fires or `stop()` is called."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group_id: str,
        database_url: str,
        artifacts_dir: Path,
        *,
        embedded: bool = False,
        options: ConsumerOptions | None = None,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self.bootstrap, self.topic, self.group_id = bootstrap, topic, group_id
        self.database_url, self.artifacts_dir = database_url, artifacts_dir
        self.embedded = embedded
        self.options = options or ConsumerOptions()
        self.on_batch = on_batch
        self.target: int | None = None  # set by `stream run` once the producer knows its count
        self.consumed = self.stored = self.dead_lettered = self.batches = self.retries = 0
        self.latencies: list[float] = []
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
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.abc import ConsumerRebalanceListener
        from aiokafka.errors import KafkaConnectionError

        from orderpipe.stream.producer import start_producer

        writer = await asyncio.to_thread(BatchWriter, self.database_url, self.artifacts_dir)
        # Everything loaded so far (libraries, the model) lives as long as the process: keep it
        # out of the cyclic collector, whose full passes over it stalled batches by ~100-200 ms.
        gc.freeze()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
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
        dlq_config = {
            "bootstrap_servers": self.bootstrap,
            "acks": "all",
            "enable_idempotence": not self.embedded,
        }
        self._consumer = consumer
        began = time.perf_counter()
        try:
            await consumer.start()
        except KafkaConnectionError:
            await asyncio.to_thread(writer.close)
            raise OrderpipeError(f"cannot reach Kafka at {self.bootstrap}") from None
        try:
            dlq = await start_producer(dlq_config)
        except BaseException:
            await consumer.stop()
            await asyncio.to_thread(writer.close)
            raise
        try:
            if self.options.assign:
                # the producer's metadata call waits for the topic; consumer.topics() does not
                # refresh what partitions_for_topic() reads on every broker
                partitions = await dlq.partitions_for(self.topic)
                consumer.assign([TopicPartition(self.topic, p) for p in sorted(partitions)])
                self._assigned_at = time.monotonic()
                self.ready.set()
            else:
                owner = self

                class Listener(ConsumerRebalanceListener):
                    async def on_partitions_revoked(self, revoked: Any) -> None:
                        await owner.on_partitions_revoked(revoked)

                    async def on_partitions_assigned(self, assigned: Any) -> None:
                        await owner.on_partitions_assigned(assigned)

                consumer.subscribe([self.topic], listener=Listener())
            # Two stages overlap: while batch N is written and committed (a worker thread and
            # the database), batch N+1 is fetched and cleaned (another thread, the second core).
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
                    storing = asyncio.create_task(
                        self._process(records, prepared, writer, dlq, consumer)
                    )
                    if not self._done(pending=len(records)):
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
        finally:
            with contextlib.suppress(Exception):
                await dlq.stop()
            with contextlib.suppress(Exception):
                await consumer.stop()
            await asyncio.to_thread(writer.close)
        seconds = time.perf_counter() - began
        return ConsumeResult(
            consumed=self.consumed,
            stored=self.stored,
            dead_lettered=self.dead_lettered,
            batches=self.batches,
            database_retries=self.retries,
            seconds=seconds,
            events_per_second=self.consumed / seconds if seconds else 0.0,
            latency_ms=latency_summary(self.latencies),
        )

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

    def _done(self, pending: int = 0) -> bool:
        """A stop rule fired (counting `pending` messages about to be stored)."""
        consumed = self.consumed + pending
        if self._stop.is_set():
            return True
        if self.options.max_events is not None and consumed >= self.options.max_events:
            return True
        return self.target is not None and consumed >= self.target

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
        self, records: list[Any], prepared: Prepared, writer: BatchWriter, dlq: Any, consumer: Any
    ) -> None:
        from aiokafka import TopicPartition

        sorted_batch = prepared.sorted_batch
        if sorted_batch is None or len(records) != len(prepared.records):
            sorted_batch = await asyncio.to_thread(sort_messages, records)
        try:
            stored = await self._store(sorted_batch.clean, writer, consumer)
            dead = sorted_batch.dead
        except Exception as exc:
            if is_transient(exc):
                raise
            # The database refused the batch for its content: find the rows it refuses, one by
            # one, so one bad message cannot block its partition.
            log.warning(
                "database refused a batch (%s); storing its rows one by one",
                str(getattr(exc, "orig", exc)).splitlines()[0],
            )
            stored, refused = await asyncio.to_thread(
                self._store_one_by_one, sorted_batch.clean, writer, records
            )
            dead = [*sorted_batch.dead, *refused]
        if dead:
            await self._dead_letter(dead, dlq)
        offsets: dict[Any, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
        await consumer.commit(offsets)
        now_ms = time.time() * 1000
        self.latencies.extend(now_ms - record.timestamp for record in records)
        self.consumed += len(records)
        self.stored += stored
        self.dead_lettered += len(dead)
        self.batches += 1
        if self.on_batch:
            self.on_batch(self.consumed, self.stored)

    async def _store(self, clean: pl.DataFrame, writer: BatchWriter, consumer: Any) -> int:
        """Write the batch; while the database is down, pause fetching and retry with backoff."""
        attempt = 0
        while True:
            try:
                return await asyncio.to_thread(writer.write, clean)
            except Exception as exc:
                if not is_transient(exc) or (self._stop.is_set() and attempt > 2):
                    raise
                delay = TRANSIENT_BACKOFF[min(attempt, len(TRANSIENT_BACKOFF) - 1)]
                attempt += 1
                self.retries += 1
                log.warning(
                    "database unavailable (%s); retry %d in %.1f s, fetching paused",
                    str(getattr(exc, "orig", exc)).splitlines()[0],
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
        clean: pl.DataFrame, writer: BatchWriter, records: list[Any]
    ) -> tuple[int, list[DeadLetter]]:
        stored, refused = 0, []
        for row in clean.iter_slices(1):
            try:
                stored += writer.write(row)
            except Exception as exc:
                if is_transient(exc):
                    raise
                reason = str(getattr(exc, "orig", exc)).splitlines()[0]
                refused.append(
                    DeadLetter(
                        records[row["line_number"][0]], f"database refused the event: {reason}"
                    )
                )
        return stored, refused

    async def _dead_letter(self, dead: list[DeadLetter], dlq: Any) -> None:
        deliveries = []
        for letter in dead:
            record = letter.record
            headers = [
                ("error", letter.error.encode()),
                ("source-topic", record.topic.encode()),
                ("source-partition", str(record.partition).encode()),
                ("source-offset", str(record.offset).encode()),
            ]
            deliveries.append(
                await dlq.send(
                    f"{self.topic}.dlq", value=record.value, key=record.key, headers=headers
                )
            )
        await asyncio.gather(*deliveries)


def latency_summary(latencies: list[float]) -> dict[str, float]:
    """p50/p95/p99/max of end-to-end latencies in milliseconds."""
    if not latencies:
        return {}
    values = np.asarray(latencies)
    return {
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "p99": float(np.percentile(values, 99)),
        "max": float(values.max()),
    }
