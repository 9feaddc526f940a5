"""Producer: JSON Lines -> Kafka, keyed by order_id, batched, idempotent on a real cluster.

Clean source: each line is validated with the shared cleaning and invalid ones are skipped with
their reason. Raw source: lines go as they are (the consumer cleans or dead-letters them).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from orderpipe.core.errors import OrderpipeError
from orderpipe.core.layout import StreamSource
from orderpipe.stream.kafka import start_client
from orderpipe.stream.partitioner import key_hashes
from orderpipe.stream.topics import ensure_topic

if TYPE_CHECKING:
    from orderpipe.stream.kafka import KafkaEndpoint

log = logging.getLogger("orderpipe.stream")
PRODUCE_CHUNK = 20_000
PACE_TICK = 0.004  # seconds: a paced producer sleeps only when this far ahead of its rate


@dataclass(frozen=True)
class ProduceResult:
    """What the producer sent and skipped."""

    topic: str
    source: Path
    sent: int
    skipped: int
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    events_per_second: float = 0.0
    # per partition, the offset just after the last message sent (from the brokers' answers)
    end_offsets: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ProducerOptions:
    """Batching and delivery settings of the producer."""

    linger_ms: int = 5
    max_batch_size: int = 262_144
    compression: str | None = None
    partitions: int = 3
    limit: int | None = None
    rate: float | None = None
    # Kafka's default limit for one message (message.max.bytes 1 MiB, less room for headers):
    # a longer line is skipped with a reason instead of failing the whole send.
    max_message_bytes: int = 1_000_000


@dataclass(frozen=True)
class Outgoing:
    """The messages to send: keys and values, plus what was skipped."""

    keys: list[bytes | None]
    values: list[bytes]
    skipped_by_reason: dict[str, int]
    hashes: np.ndarray  # `key_hashes(keys)`, made in the messages' thread


def prepare_messages(
    lines: pl.DataFrame,
    kind: str,
    max_message_bytes: int = ProducerOptions.max_message_bytes,
    *,
    validated: bool = False,
) -> Outgoing:
    """(key, value) pairs for these lines; what cannot be sent is skipped, with reasons.

    `validated`: clean lines of etl's table, with their `order_id` (`iter_table_lines`); they
    passed the cleaning rules when etl wrote them, so they are not parsed again here.
    """
    from orderpipe.core.cleaning import clean_record_lines

    skipped: dict[str, int] = {}
    size = pl.col("line").str.len_bytes()
    if "raw_base64" in lines.columns:  # a line that is not UTF-8 has only its bytes
        size = pl.coalesce(size, pl.col("raw_base64").str.len_bytes() * 3 // 4)
    too_large = size > max_message_bytes
    large = lines.filter(too_large.fill_null(False)).height
    if large:
        skipped[f"larger than the {max_message_bytes:,}-byte message limit"] = large
        lines = lines.filter(~too_large.fill_null(False))
    if kind == "clean":
        keep = lines
        if not validated:
            batch = clean_record_lines(lines)
            for reason, count in batch.rejected.group_by("reason").len().iter_rows():
                skipped[reason] = count
            keep = lines.select("line_number", "line").join(
                batch.clean.select("line_number", "order_id"), on="line_number"
            )
            keep = keep.sort("line_number")
        keys: list[bytes | None] = keep["order_id"].cast(pl.Binary).to_list()
        values = keep["line"].cast(pl.Binary).to_list()
    elif kind == "raw":  # as they are, bytes that are not UTF-8 included: the consumer judges
        blank = pl.col("line").is_not_null() & (pl.col("line").str.strip_chars() == "")
        empty = lines.filter(blank).height
        if empty:
            skipped["empty line"] = empty
        keep = lines.filter(~blank)
        order_ids = keep["line"].str.json_path_match("$.order_id")
        keys = [k.encode() if k else None for k in order_ids.to_list()]
        encoded = (
            keep["raw_base64"] if "raw_base64" in keep.columns else pl.repeat(None, keep.height)
        )
        values = [
            line.encode() if line is not None else base64.b64decode(bytes_b64 or "")
            for line, bytes_b64 in zip(keep["line"].to_list(), encoded.to_list(), strict=True)
        ]
    else:
        raise OrderpipeError(f"unknown --source {kind!r}: choose clean or raw")
    return Outgoing(keys=keys, values=values, skipped_by_reason=skipped, hashes=key_hashes(keys))


def producer_config(endpoint: KafkaEndpoint, options: ProducerOptions) -> dict[str, object]:
    """aiokafka producer settings; the embedded broker rejects idempotent producers."""
    return {
        **endpoint.client_options(),
        "acks": "all",
        "enable_idempotence": not endpoint.embedded,
        "linger_ms": options.linger_ms,
        "max_batch_size": options.max_batch_size,
        "max_request_size": max(options.max_message_bytes + 65_536, 1_048_576),
        "compression_type": options.compression,
    }


async def start_producer(endpoint: KafkaEndpoint, config: dict[str, object]) -> Any:
    """A started AIOKafkaProducer; idempotence is dropped, with a log line, where the broker
    refuses it (tansu, also when reached through an address rather than `embedded`)."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    producer = AIOKafkaProducer(**config)
    try:
        return await start_client(producer, endpoint)
    except KafkaError as exc:  # not a connection problem (start_client says those)
        await producer.stop()
        if not config.get("enable_idempotence"):
            raise
        log.warning(
            "the broker refused an idempotent producer (%s): sending without idempotence",
            type(exc).__name__,
        )
    return await start_client(AIOKafkaProducer(**{**config, "enable_idempotence": False}), endpoint)


async def send_messages(
    endpoint: KafkaEndpoint, topic: str, chunks: AsyncIterator[Outgoing], options: ProducerOptions
) -> tuple[int, dict[int, int]]:
    """Send every message of every chunk and wait for every delivery.

    Unpaced: messages are packed into per-partition batches (`send_batch`), the keyed partition
    chosen with Kafka's own murmur2 rule, which costs a fraction of one `send()` per message.
    Paced (`options.rate`): one `send()` per message at the requested rate.
    Returns the count sent and, per partition, the offset just after the last one.
    """
    producer = await start_producer(endpoint, producer_config(endpoint, options))
    sent = 0
    ends: dict[int, int] = {}
    started = time.perf_counter()
    try:
        async for outgoing in chunks:
            if options.rate:
                sent += await _send_paced(
                    producer, topic, outgoing, options.rate, started, sent, ends
                )
            else:
                sent += await _send_batched(producer, topic, outgoing, ends)
    finally:
        await producer.stop()
    return sent, ends


def _advance(ends: dict[int, int], partition: int, end: int) -> None:
    ends[partition] = max(ends.get(partition, 0), end)


async def _send_paced(
    producer: Any,
    topic: str,
    outgoing: Outgoing,
    rate: float,
    started: float,
    before: int,
    ends: dict[int, int],
) -> int:
    pending: list[asyncio.Future[object]] = []
    for sent, (key, value) in enumerate(zip(outgoing.keys, outgoing.values, strict=True), before):
        delay = started + sent / rate - time.perf_counter()
        if delay > PACE_TICK:  # a few messages per wake-up, not one: the rate stays exact, and
            await asyncio.sleep(delay)  # the event loop (a consumer's, in `stream run`) idles
        pending.append(await producer.send(topic, value=value, key=key))
    for delivered in await asyncio.gather(*pending):
        _advance(ends, delivered.partition, delivered.offset + 1)
    return len(pending)


async def _send_batched(producer: Any, topic: str, outgoing: Outgoing, ends: dict[int, int]) -> int:
    partitions = sorted(await producer.partitions_for(topic))
    count = len(partitions)
    hashes = outgoing.hashes
    # a key's partition as Kafka's default partitioner picks it; messages without one go round
    slots = np.where(hashes >= 0, hashes % count, np.arange(len(hashes)) % count)
    by_partition = {
        partition: np.flatnonzero(slots == slot).tolist()
        for slot, partition in enumerate(partitions)
    }
    deliveries: list[Any] = []
    sizes: list[int] = []

    async def send(batch: Any, partition: int) -> None:
        sizes.append(batch.record_count())
        batch.close()
        deliveries.append(await producer.send_batch(batch, topic, partition=partition))

    for partition, indices in by_partition.items():
        batch = producer.create_batch()
        for index in indices:
            key, value = outgoing.keys[index], outgoing.values[index]
            if batch.append(key=key, value=value, timestamp=None) is None:
                await send(batch, partition)
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        if batch.record_count():
            await send(batch, partition)
    for delivered, size in zip(await asyncio.gather(*deliveries), sizes, strict=True):
        _advance(ends, delivered.partition, delivered.offset + size)  # offset: the batch's first
    return len(outgoing.values)


def _first_lines(frames: Iterator[pl.DataFrame], limit: int) -> Iterator[pl.DataFrame]:
    """The frames holding the first `limit` lines; nothing past them is read."""
    while limit > 0 and (frame := next(frames, None)) is not None:
        frame = frame.head(limit)
        limit -= frame.height
        yield frame


async def produce(
    endpoint: KafkaEndpoint,
    topic: str,
    source: Path,
    *,
    kind: str = "clean",
    options: ProducerOptions | None = None,
) -> ProduceResult:
    """Create the topic if needed and send `source` to it, chunk by chunk.

    The file is read chunk by chunk too (memory does not grow with it). Each chunk is read and
    prepared in a worker thread, so a consumer in the same process keeps working meanwhile.
    """
    from orderpipe.core.rawinput import iter_raw_lines
    from orderpipe.table.read import is_table, iter_table_lines

    options = options or ProducerOptions()
    if kind not in list(StreamSource):
        raise OrderpipeError(f"unknown --source {kind!r}: choose clean or raw")
    began = time.perf_counter()
    if is_table(source):  # etl's table: its rows, in event order
        frames = iter_table_lines(source, PRODUCE_CHUNK)
    elif kind == "clean" and source.is_dir():
        raise OrderpipeError(f"clean table not found: {source} (run `orderpipe etl` first)")
    else:
        frames = iter_raw_lines(source, PRODUCE_CHUNK)  # a path that cannot be read fails here
    if options.limit is not None:
        frames = _first_lines(frames, options.limit)
    skipped: dict[str, int] = {}

    validated = is_table(source) and kind == "clean"

    def next_outgoing() -> Outgoing | None:
        lines = next(frames, None)
        if lines is None:
            return None
        return prepare_messages(lines, kind, options.max_message_bytes, validated=validated)

    async def chunks() -> AsyncIterator[Outgoing]:
        while (outgoing := await asyncio.to_thread(next_outgoing)) is not None:
            for reason, count in outgoing.skipped_by_reason.items():
                skipped[reason] = skipped.get(reason, 0) + count
            yield outgoing

    await ensure_topic(endpoint, topic, options.partitions)
    sent, ends = await send_messages(endpoint, topic, chunks(), options)
    seconds = time.perf_counter() - began
    return ProduceResult(
        topic=topic,
        source=source,
        sent=sent,
        skipped=sum(skipped.values()),
        skipped_by_reason=dict(sorted(skipped.items())),
        seconds=seconds,
        events_per_second=sent / seconds if seconds else 0.0,
        end_offsets=dict(sorted(ends.items())),
    )
