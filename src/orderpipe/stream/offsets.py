"""Partition and offset bookkeeping of the consumer: the partitions it owns (assigned by hand or
by its group), what it commits, and the positions its stop rule compares with the end offsets."""

from __future__ import annotations

import logging
from typing import Any

from orderpipe.db.errors import reason_of
from orderpipe.stream.messages import commit_offsets

log = logging.getLogger("orderpipe.stream")


def owned(consumer: Any, records: list[Any]) -> list[Any]:
    """`records` less those fetched before their partition was revoked (the new owner has
    them). A TopicPartition is a named tuple: a plain (topic, partition) tuple finds it."""
    assigned = consumer.assignment()
    if all(part in assigned for part in {(r.topic, r.partition) for r in records}):
        return records
    return [record for record in records if (record.topic, record.partition) in assigned]


def reached(positions: dict[Any, int], stop_at: dict[Any, int], pending: list[Any]) -> bool:
    """Every partition of `stop_at` stored up to its end offset, the `pending` records counted."""
    positions = dict(positions)
    for tp, offset in commit_offsets(pending).items():
        positions[tp] = max(positions.get(tp, 0), offset)
    return all(positions.get(tp, 0) >= end for tp, end in stop_at.items())


def advance(positions: dict[Any, int], offsets: dict[Any, int]) -> None:
    """Move each partition's position (the next offset to store) to its committed offset."""
    for tp, offset in offsets.items():
        positions[tp] = max(positions.get(tp, 0), offset)


async def commit(consumer: Any, offsets: dict[Any, int]) -> None:
    """Commit; a group that rebalanced meanwhile refuses it, and the new owner of those
    partitions stores the batch again (the upserts make that harmless)."""
    from aiokafka.errors import CommitFailedError, IllegalStateError

    try:
        await consumer.commit(offsets)
    except (CommitFailedError, IllegalStateError) as exc:
        log.warning(
            "offsets not committed (%s): the new owner stores the batch again", reason_of(exc)
        )


def report_lag(metrics: Any, consumer: Any, offsets: dict[Any, int]) -> None:
    """The lag of each committed partition still assigned: its high watermark less the offset."""
    assigned = consumer.assignment()
    for tp, offset in offsets.items():
        highwater = consumer.highwater(tp) if tp in assigned else None
        if highwater is not None:
            metrics.lag(tp.partition, max(highwater - offset, 0))


async def assign_every_partition(
    consumer: Any, dlq: Any, topic: str, positions: dict[Any, int]
) -> None:
    """Assign every partition of `topic` to `consumer` (no group wait), and note in `positions`
    where this group starts on each (committed earlier, or the beginning)."""
    from aiokafka import TopicPartition

    # the producer's metadata call waits for the topic; consumer.topics() does not
    # refresh what partitions_for_topic() reads on every broker
    partitions = await dlq.partitions_for(topic)
    assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(assigned)
    for tp in assigned:  # where this group starts (committed earlier, or the beginning)
        positions[tp] = await consumer.position(tp)


def subscribe(consumer: Any, topic: str, owner: Any) -> None:
    """Join the group on `topic`; `owner`'s on_partitions_revoked/assigned hear rebalances."""
    from aiokafka.abc import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):
        async def on_partitions_revoked(self, revoked: Any) -> None:
            await owner.on_partitions_revoked(revoked)

        async def on_partitions_assigned(self, assigned: Any) -> None:
            await owner.on_partitions_assigned(assigned)

    consumer.subscribe([topic], listener=Listener())
