"""Reading partitions assigned by hand (no group joined): the cluster's topics and partitions,
end offsets checked by fetching, batches up to them, and a group's committed offsets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orderpipe.core.errors import OrderpipeError
from orderpipe.stream.kafka import start_client

if TYPE_CHECKING:
    from orderpipe.stream.kafka import KafkaEndpoint

log = logging.getLogger("orderpipe.stream")

REPLAY_BATCH = 1_000
PROBE_SECONDS = 10.0  # longest wait for the last record of each partition
STALL_SECONDS = 30.0  # longest wait for a read to move forward before it is given up


@dataclass(frozen=True)
class Offsets:
    """Beginning and end offsets per partition; `exact`: every end was checked by a fetch."""

    beginning: dict[Any, int]
    end: dict[Any, int]
    exact: bool


async def topic_partitions(admin: Any) -> dict[str, list[int]]:
    """Every topic with its partitions, from one metadata request that names no topic: asking
    for a missing topic by name would create it on a cluster with auto.create.topics.enable."""
    return {
        meta["topic"]: sorted(part["partition"] for part in meta["partitions"])
        for meta in await admin.describe_topics()
        if meta.get("error_code", 0) == 0
    }


async def checked_offsets(consumer: Any, partitions: list[Any]) -> Offsets:
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
    return Offsets(beginning, ends, exact=not unchecked)


async def start_reader(endpoint: KafkaEndpoint, group_id: str | None) -> Any:
    """A started consumer that joins no group (partitions are assigned by hand); `group_id`
    only names where its commits go."""
    from aiokafka import AIOKafkaConsumer

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


async def batches_until(consumer: Any, ends: dict[Any, int]) -> AsyncIterator[list[Any]]:
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


async def committed_offsets(admin: Any, group: str, partitions: list[Any]) -> dict[Any, int | None]:
    """The group's committed offsets (None where it has none). The partitions are named: tansu
    cannot answer the request for "every partition of the group"."""
    answer = await admin.list_consumer_group_offsets(group, partitions=partitions)
    offsets: dict[Any, int | None] = {}
    for tp in partitions:
        meta = answer.get(tp)
        offsets[tp] = meta.offset if meta is not None and meta.offset >= 0 else None
    return offsets
