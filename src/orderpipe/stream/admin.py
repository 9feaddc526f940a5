"""Operator views of the stream: the consumer group's lag per partition and what the DLQ holds
(`stream status`), and dead letters sent back to their source topic (`stream dlq replay`).

Neither creates a topic nor joins a group: partitions are assigned by hand, read up to the end
offsets taken at the start, and only replay commits offsets (in its own group).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orderpipe.errors import OrderpipeError

if TYPE_CHECKING:
    from orderpipe.settings import Settings
    from orderpipe.stream.kafka import KafkaEndpoint

log = logging.getLogger("orderpipe.stream")

TOP_REASONS = 10
DLQ_SCAN = 100_000
REPLAY_BATCH = 1_000
NO_REASON = "(no error header)"
REASON_CHARS = 200  # a reason longer than this is cut: it is a label to count, not a report
PROBE_SECONDS = 10.0  # longest wait for the last record of each partition
STALL_SECONDS = 30.0  # longest wait for a read to move forward before it is given up


# ---------------------------------------------------------------- results
@dataclass(frozen=True)
class PartitionLag:
    """One partition of the topic as the group sees it."""

    partition: int
    committed: int | None  # None: the group has committed nothing here (it starts at the beginning)
    beginning: int
    end: int
    lag: int


@dataclass(frozen=True)
class DlqSummary:
    """What `<topic>.dlq` holds: its size, and the most frequent reasons among the letters read."""

    topic: str
    exists: bool
    messages: int
    scanned: int  # letters read for the reasons: all of them, or the newest `--dlq-scan`
    capped: bool  # True when `scanned` < `messages` because of the cap
    reasons: dict[str, int] = field(default_factory=dict)  # the top 10, most frequent first
    other_reasons: int = 0  # letters scanned whose reason is not in the top 10


@dataclass(frozen=True)
class StreamStatus:
    """`stream status`: the group's position on the topic, and the DLQ."""

    topic: str
    group: str
    topic_exists: bool
    group_has_offsets: bool
    partitions: list[PartitionLag]
    end_total: int
    lag_total: int
    # False when a partition's end offset could not be checked by fetching its last record: the
    # broker's ListOffsets answer was used as it is (tansu's is short by a batch's size - 1).
    exact: bool
    dlq: DlqSummary


@dataclass(frozen=True)
class ReplayResult:
    """`stream dlq replay`: what was read from the DLQ, what matched, what was sent where."""

    dlq_topic: str
    group: str  # the replay's own consumer group, whose offsets say what was already replayed
    reason_filter: str | None
    dry_run: bool
    read: int
    matched: int
    sent: int
    passed_over: int  # read but not matching --reason, or empty: marked read, not offered again
    empty: int = 0  # matching letters without a value (nothing to replay): passed over
    by_reason: dict[str, int] = field(default_factory=dict)  # the matched letters
    sent_to: dict[str, int] = field(default_factory=dict)
    limited: bool = False  # stopped at --limit with dead letters left to read
    dlq_exists: bool = True


# ---------------------------------------------------------------- pure rules
def reason_of_letter(headers: Sequence[tuple[str, bytes | None]] | None) -> str:
    """The `error` header of a dead letter as text (cut to REASON_CHARS), or NO_REASON."""
    for key, value in headers or ():
        if key == "error" and value:
            text = value.decode("utf-8", "replace").strip()
            if text:
                return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"
    return NO_REASON


def target_of_letter(headers: Sequence[tuple[str, bytes | None]] | None, default: str) -> str:
    """Where a dead letter goes back to: its `source-topic` header, else `default`."""
    for key, value in headers or ():
        if key == "source-topic" and value:
            text = value.decode("utf-8", "replace").strip()
            if text:
                return text
    return default


def matches_reason(reason: str, wanted: str | None) -> bool:
    """`--reason`: the error contains `wanted`, ignoring case (no filter: everything matches)."""
    return wanted is None or wanted.casefold() in reason.casefold()


def top_reasons(counts: Counter[str], limit: int = TOP_REASONS) -> tuple[dict[str, int], int]:
    """The `limit` most frequent reasons (ties by name, so the order is stable) and how many
    letters the other reasons account for."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    top = dict(ranked[:limit])
    return top, sum(count for _reason, count in ranked[limit:])


def lag_of(committed: int | None, beginning: int, end: int) -> int:
    """Messages the group has still to read: from its committed offset, or from the beginning
    when it has none or when retention removed what it points at (auto_offset_reset=earliest)."""
    start = beginning if committed is None else max(committed, beginning)
    return max(end - start, 0)


def newest_starts(beginning: dict[Any, int], end: dict[Any, int], cap: int) -> dict[Any, int]:
    """Where to start reading so that exactly min(cap, size) of the newest messages are read,
    shared between partitions in proportion to their sizes (largest remainders first)."""
    sizes = {tp: max(end[tp] - beginning[tp], 0) for tp in end}
    total = sum(sizes.values())
    if total <= cap:
        return {tp: beginning[tp] for tp in end}
    shares = {tp: cap * size // total for tp, size in sizes.items()}
    left = cap - sum(shares.values())
    by_remainder = sorted(sizes, key=lambda tp: (-(cap * sizes[tp] % total), str(tp)))
    for tp in by_remainder[:left]:
        shares[tp] += 1
    return {tp: end[tp] - shares[tp] for tp in end}


# ---------------------------------------------------------------- Kafka
@dataclass(frozen=True)
class _Offsets:
    beginning: dict[Any, int]
    end: dict[Any, int]
    exact: bool


async def _partitions(admin: Any) -> dict[str, list[int]]:
    """Every topic with its partitions, from one metadata request that names no topic: asking
    for a missing topic by name would create it on a cluster with auto.create.topics.enable."""
    return {
        meta["topic"]: sorted(part["partition"] for part in meta["partitions"])
        for meta in await admin.describe_topics()
        if meta.get("error_code", 0) == 0
    }


async def _offsets(consumer: Any, partitions: list[Any]) -> _Offsets:
    """Beginning and end offsets of the (assigned) partitions; each end checked by fetching the
    partition's last record. The partitions are left paused: the caller seeks and resumes.

    Apache Kafka's ListOffsets answers the offset after the last record. tansu's answers the last
    batch's base offset + 1, short by the batch's size - 1; a fetch from that base returns the
    whole batch and the true high watermark.
    """
    beginning = await consumer.beginning_offsets(partitions)
    reported = await consumer.end_offsets(partitions)
    ends = dict(reported)
    unchecked = {tp for tp in partitions if reported[tp] > beginning[tp]}
    consumer.pause(*[tp for tp in partitions if tp not in unchecked])  # nothing to prefetch
    for tp in unchecked:
        consumer.seek(tp, reported[tp] - 1)
    deadline = time.monotonic() + PROBE_SECONDS
    while unchecked and time.monotonic() < deadline:
        fetched = await consumer.getmany(*unchecked, timeout_ms=500)
        for tp in list(unchecked):
            records = fetched.get(tp)
            if records:
                ends[tp] = max(ends[tp], records[-1].offset + 1, consumer.highwater(tp) or 0)
            elif await consumer.position(tp) < reported[tp]:
                continue
            # else: a transaction marker ends the partition, no record to see
            unchecked.discard(tp)
            consumer.pause(tp)
    consumer.pause(*partitions)
    if unchecked:
        log.warning(
            "end offsets of %s not checked within %.0f s: lag approximate there",
            sorted(str(tp) for tp in unchecked),
            PROBE_SECONDS,
        )
    return _Offsets(beginning, ends, exact=not unchecked)


async def _start_reader(endpoint: KafkaEndpoint, group_id: str | None) -> Any:
    """A started consumer that joins no group (partitions are assigned by hand); `group_id`
    only names where its commits go."""
    from aiokafka import AIOKafkaConsumer

    from orderpipe.stream.kafka import start_client

    consumer = AIOKafkaConsumer(
        **endpoint.client_options(),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=REPLAY_BATCH,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await start_client(consumer, endpoint)
    # Without a group, aiokafka starts a background task at start(); stopped before that task
    # first ran, stop() raises CancelledError. One turn of the loop lets it run.
    await asyncio.sleep(0)
    return consumer


async def _batches_until(consumer: Any, ends: dict[Any, int]) -> AsyncIterator[list[Any]]:
    """Yield lists of records up to `ends` (exclusive), partitions already positioned.

    Stops when every partition has reached its end; raises when nothing moves for STALL_SECONDS.
    """
    pending = {tp for tp, end in ends.items() if await consumer.position(tp) < end}
    moved = time.monotonic()
    while pending:
        fetched = await consumer.getmany(*pending, timeout_ms=500)
        records = []
        for tp, part in fetched.items():
            records.extend(record for record in part if record.offset < ends[tp])
        for tp in list(pending):
            if await consumer.position(tp) >= ends[tp]:
                pending.discard(tp)
        if records:
            moved = time.monotonic()
            yield records
        elif pending and time.monotonic() - moved > STALL_SECONDS:
            where = ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in pending))
            raise OrderpipeError(f"reading {where} made no progress in {STALL_SECONDS:.0f} s")


async def _committed(admin: Any, group: str, partitions: list[Any]) -> dict[Any, int | None]:
    """The group's committed offsets (None where it has none). The partitions are named: tansu
    cannot answer the request for "every partition of the group"."""
    answer = await admin.list_consumer_group_offsets(group, partitions=partitions)
    offsets: dict[Any, int | None] = {}
    for tp in partitions:
        meta = answer.get(tp)
        offsets[tp] = meta.offset if meta is not None and meta.offset >= 0 else None
    return offsets


async def _scan_reasons(
    consumer: Any, dead: list[Any], offsets: _Offsets, cap: int
) -> tuple[Counter[str], int]:
    """Count the `error` header of the newest `cap` dead letters."""
    counts: Counter[str] = Counter()
    if not dead:
        return counts, 0
    ends = {tp: offsets.end[tp] for tp in dead}
    starts = newest_starts({tp: offsets.beginning[tp] for tp in dead}, ends, cap)
    for tp, start in starts.items():
        consumer.seek(tp, start)
    consumer.resume(*dead)
    scanned = 0
    async with contextlib.aclosing(_batches_until(consumer, ends)) as batches:
        async for records in batches:
            counts.update(reason_of_letter(record.headers) for record in records)
            scanned += len(records)
    return counts, scanned


async def collect_status(
    endpoint: KafkaEndpoint, topic: str, group: str, *, dlq_scan: int = DLQ_SCAN
) -> StreamStatus:
    """Per partition of `topic`: `group`'s committed offset, the end offset, the lag; and the
    DLQ's size and top reasons. Reads only: no group joined, no offset committed."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    from orderpipe.stream.kafka import start_client
    from orderpipe.stream.messages import dlq_topic

    dlq = dlq_topic(topic)
    admin = await start_client(AIOKafkaAdminClient(**endpoint.client_options()), endpoint)
    try:
        topics = await _partitions(admin)
        source = [TopicPartition(topic, p) for p in topics.get(topic, [])]
        committed = await _committed(admin, group, source) if source else {}
    finally:
        await admin.close()
    dead = [TopicPartition(dlq, p) for p in topics.get(dlq, [])]
    offsets, reasons, scanned = _Offsets({}, {}, exact=True), Counter[str](), 0
    if source or dead:
        consumer = await _start_reader(endpoint, None)
        consumer.assign(source + dead)
        try:
            offsets = await _offsets(consumer, source + dead)
            reasons, scanned = await _scan_reasons(consumer, dead, offsets, dlq_scan)
        finally:
            await consumer.stop()
    partitions = [
        PartitionLag(
            partition=tp.partition,
            committed=committed[tp],
            beginning=offsets.beginning[tp],
            end=offsets.end[tp],
            lag=lag_of(committed[tp], offsets.beginning[tp], offsets.end[tp]),
        )
        for tp in source
    ]
    messages = sum(offsets.end[tp] - offsets.beginning[tp] for tp in dead)
    top, others = top_reasons(reasons)
    return StreamStatus(
        topic=topic,
        group=group,
        topic_exists=topic in topics,
        group_has_offsets=any(offset is not None for offset in committed.values()),
        partitions=partitions,
        end_total=sum(p.end for p in partitions),
        lag_total=sum(p.lag for p in partitions),
        exact=offsets.exact,
        dlq=DlqSummary(
            topic=dlq,
            exists=dlq in topics,
            messages=messages,
            scanned=scanned,
            capped=messages > dlq_scan,
            reasons=top,
            other_reasons=others,
        ),
    )


@dataclass
class _Replayer:
    """Sends batches of dead letters back and keeps the counts; `producer` None: a dry run."""

    consumer: Any
    producer: Any | None
    default_topic: str
    targets: set[str]  # the topics a letter may go back to: every existing one but the DLQ
    reason: str | None
    limit: int | None
    read: int = 0
    matched: int = 0
    sent: int = 0
    empty: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    sent_to: Counter[str] = field(default_factory=Counter)
    limited: bool = False

    async def replay(self, records: list[Any]) -> None:
        """Send the batch's matching letters, wait for every acknowledgement, then commit the
        batch: its matching letters and the ones passed over (a dry run commits nothing)."""
        from aiokafka.errors import KafkaError

        from orderpipe.stream.messages import commit_offsets

        read: list[Any] = []
        outgoing: list[tuple[str, Any]] = []
        for record in records:
            if self.limit is not None and self.matched >= self.limit:
                self.limited = True
                break
            read.append(record)
            error = reason_of_letter(record.headers)
            if not matches_reason(error, self.reason):
                continue
            if record.value is None:  # it can only come back as "empty message"
                self.empty += 1
                continue
            target = target_of_letter(record.headers, self.default_topic)
            if target not in self.targets:
                raise OrderpipeError(
                    f"the dead letter at {record.topic}[{record.partition}] offset "
                    f"{record.offset} names source topic {target!r}, which does not exist or is "
                    "the DLQ: its batch was not replayed (earlier batches were)"
                )
            self.matched += 1
            self.by_reason[error] += 1
            self.sent_to[target] += 1
            outgoing.append((target, record))
        self.read += len(read)
        if self.producer is None or not read:
            return
        try:
            deliveries = [
                await self.producer.send(target, value=record.value, key=record.key)
                for target, record in outgoing
            ]
            await asyncio.gather(*deliveries)
        except KafkaError as exc:
            raise OrderpipeError(
                f"a replayed dead letter was refused ({_one_line(exc)}): its batch is not marked "
                "replayed (earlier batches are); run the replay again"
            ) from None
        self.sent += len(outgoing)
        await self.consumer.commit(commit_offsets(read))


async def replay_dead_letters(
    endpoint: KafkaEndpoint,
    topic: str,
    group: str,
    *,
    reason: str | None = None,
    dry_run: bool = False,
    limit: int | None = None,
    from_beginning: bool = False,
) -> ReplayResult:
    """Send the dead letters of `<topic>.dlq` back to their source topic (value and key; the
    key picks the partition again), oldest first, up to the end offsets taken at the start.

    The group `<group>.dlq-replay` remembers what was read: each batch's offsets are committed
    once every send of the batch is acknowledged (acks=all), so a crash re-sends at most one
    batch and a second run sends only newer letters. Letters not matching `reason` are passed
    over and committed too. A dry run reads from the same place and commits nothing.
    """
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    from orderpipe.stream.kafka import start_client
    from orderpipe.stream.messages import dlq_topic
    from orderpipe.stream.producer import ProducerOptions, producer_config, start_producer

    dlq, replay_group = dlq_topic(topic), f"{group}.dlq-replay"
    admin = await start_client(AIOKafkaAdminClient(**endpoint.client_options()), endpoint)
    try:
        topics = await _partitions(admin)
    finally:
        await admin.close()
    replayer = _Replayer(
        consumer=None,
        producer=None,
        default_topic=topic,
        targets=set(topics) - {dlq},
        reason=reason,
        limit=limit,
    )
    if dlq in topics:
        dead = [TopicPartition(dlq, p) for p in topics[dlq]]
        consumer = replayer.consumer = await _start_reader(endpoint, replay_group)
        try:
            consumer.assign(dead)  # once: aiokafka's coordinator trips on a reassignment
            offsets = await _offsets(consumer, dead)
            for tp in dead:
                done = None if from_beginning else await consumer.committed(tp)
                consumer.seek(tp, max(done or 0, offsets.beginning[tp]))
            consumer.resume(*dead)
            if not dry_run:
                config = producer_config(endpoint, ProducerOptions())
                replayer.producer = await start_producer(endpoint, config)
            async with contextlib.aclosing(_batches_until(consumer, offsets.end)) as batches:
                async for records in batches:
                    await replayer.replay(records)
                    if replayer.limited:
                        break
        finally:
            if replayer.producer is not None:
                with contextlib.suppress(Exception):
                    await replayer.producer.stop()
            with contextlib.suppress(Exception):
                await consumer.stop()
    return ReplayResult(
        dlq_topic=dlq,
        group=replay_group,
        reason_filter=reason,
        dry_run=dry_run,
        read=replayer.read,
        matched=replayer.matched,
        sent=replayer.sent,
        passed_over=replayer.read - replayer.matched,
        empty=replayer.empty,
        by_reason=top_reasons(replayer.by_reason, limit=len(replayer.by_reason))[0],
        sent_to=dict(sorted(replayer.sent_to.items())),
        limited=replayer.limited,
        dlq_exists=dlq in topics,
    )


# ---------------------------------------------------------------- with settings
def status_with_settings(settings: Settings, *, dlq_scan: int = DLQ_SCAN) -> StreamStatus:
    """`stream status` on the configured Kafka, topic and group."""
    from orderpipe.stream.kafka import kafka_endpoint

    _warn_if_embedded(settings)
    with kafka_endpoint(settings) as endpoint:
        return asyncio.run(
            in_one_line(
                collect_status(
                    endpoint, settings.kafka_topic, settings.kafka_group_id, dlq_scan=dlq_scan
                )
            )
        )


def replay_with_settings(
    settings: Settings,
    *,
    reason: str | None = None,
    dry_run: bool = False,
    limit: int | None = None,
    from_beginning: bool = False,
) -> ReplayResult:
    """`stream dlq replay` on the configured Kafka, topic and group."""
    from orderpipe.stream.kafka import kafka_endpoint

    _warn_if_embedded(settings)
    with kafka_endpoint(settings) as endpoint:
        return asyncio.run(
            in_one_line(
                replay_dead_letters(
                    endpoint,
                    settings.kafka_topic,
                    settings.kafka_group_id,
                    reason=reason,
                    dry_run=dry_run,
                    limit=limit,
                    from_beginning=from_beginning,
                )
            )
        )


def _warn_if_embedded(settings: Settings) -> None:
    if settings.kafka_bootstrap_servers == "embedded":
        log.warning(
            "ORDERPIPE_KAFKA_BOOTSTRAP_SERVERS=embedded starts an empty broker for this command: "
            "point it at `orderpipe broker` or your cluster to see its topics"
        )


async def in_one_line(work: Coroutine[Any, Any, Any]) -> Any:
    """Kafka's refusals (authorization, unknown group...) as one line."""
    from aiokafka.errors import KafkaError

    try:
        return await work
    except KafkaError as exc:
        raise OrderpipeError(f"Kafka refused the request: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    name = type(exc).__name__
    return first if first.startswith(name) else f"{name}: {first}".rstrip(": ")
