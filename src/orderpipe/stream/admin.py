"""Operator views of the stream: the consumer group's lag per partition and what the DLQ holds
(`stream status`), and dead letters sent back to their source topic (`stream dlq replay`).

Neither creates a topic nor joins a group: partitions are assigned by hand, read up to the end
offsets taken at the start, and only replay commits offsets (in its own group).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orderpipe.core.errors import OrderpipeError, first_line
from orderpipe.stream.broker import kafka_endpoint
from orderpipe.stream.kafka import in_one_line, start_client
from orderpipe.stream.reader import (
    Offsets,
    batches_until,
    checked_offsets,
    committed_offsets,
    start_reader,
    topic_partitions,
)

if TYPE_CHECKING:
    from orderpipe.core.settings import Settings
    from orderpipe.stream.kafka import KafkaEndpoint

log = logging.getLogger("orderpipe.stream")

TOP_REASONS = 10
DLQ_SCAN = 100_000
NO_REASON = "(no error header)"
REASON_CHARS = 200  # a reason longer than this is cut: it is a label to count, not a report


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


async def _scan_reasons(
    consumer: Any, dead: list[Any], offsets: Offsets, cap: int
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
    async with contextlib.aclosing(batches_until(consumer, ends)) as batches:
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

    from orderpipe.stream.messages import dlq_topic

    dlq = dlq_topic(topic)
    admin = await start_client(AIOKafkaAdminClient(**endpoint.client_options()), endpoint)
    try:
        topics = await topic_partitions(admin)
        source = [TopicPartition(topic, p) for p in topics.get(topic, [])]
        committed = await committed_offsets(admin, group, source) if source else {}
    finally:
        await admin.close()
    dead = [TopicPartition(dlq, p) for p in topics.get(dlq, [])]
    offsets, reasons, scanned = Offsets({}, {}, exact=True), Counter[str](), 0
    if source or dead:
        consumer = await start_reader(endpoint, None)
        consumer.assign(source + dead)
        try:
            offsets = await checked_offsets(consumer, source + dead)
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
                f"a replayed dead letter was refused ({first_line(exc, named=True)}): its batch "
                "is not marked replayed (earlier batches are); run the replay again"
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

    from orderpipe.stream.messages import dlq_topic
    from orderpipe.stream.producer import ProducerOptions, producer_config, start_producer

    dlq, replay_group = dlq_topic(topic), f"{group}.dlq-replay"
    admin = await start_client(AIOKafkaAdminClient(**endpoint.client_options()), endpoint)
    try:
        topics = await topic_partitions(admin)
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
        consumer = replayer.consumer = await start_reader(endpoint, replay_group)
        try:
            consumer.assign(dead)  # once: aiokafka's coordinator trips on a reassignment
            offsets = await checked_offsets(consumer, dead)
            for tp in dead:
                done = None if from_beginning else await consumer.committed(tp)
                consumer.seek(tp, max(done or 0, offsets.beginning[tp]))
            consumer.resume(*dead)
            if not dry_run:
                config = producer_config(endpoint, ProducerOptions())
                replayer.producer = await start_producer(endpoint, config)
            async with contextlib.aclosing(batches_until(consumer, offsets.end)) as batches:
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


def status_with_settings(settings: Settings, *, dlq_scan: int = DLQ_SCAN) -> StreamStatus:
    """`stream status` on the configured Kafka, topic and group."""
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
