"""producer: what cannot be sent is skipped with a reason, never a failed send."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl
import pytest
from aiokafka.partitioner import murmur2

from orderpipe.core.rawinput import lines_from_bytes
from orderpipe.stream import partitioner, producer
from orderpipe.stream.kafka import KafkaEndpoint
from orderpipe.stream.producer import ProduceResult, ProducerOptions, prepare_messages
from orderpipe.table.read import as_text_records
from tests.factories import clean_rows, raw_event


def test_a_line_over_the_message_limit_is_skipped_with_its_reason() -> None:
    small = json.dumps(raw_event(event_id="small")).encode()
    large = json.dumps(raw_event(event_id="large", order__main_category="x" * 5000)).encode()
    lines = lines_from_bytes(small + b"\n" + large + b"\n")
    outgoing = prepare_messages(lines, "raw", max_message_bytes=2000)
    assert outgoing.values == [small]
    assert outgoing.skipped_by_reason == {"larger than the 2,000-byte message limit": 1}


def test_raw_lines_go_byte_for_byte_even_when_not_utf8() -> None:
    event = json.dumps(raw_event(event_id="e")).encode()
    lines = lines_from_bytes(event + b"\n\xff\xfe\n\n")
    outgoing = prepare_messages(lines, "raw")
    assert outgoing.values == [event, b"\xff\xfe"]  # the consumer dead-letters the second
    assert outgoing.keys == [b"ORD-00042", None]
    assert outgoing.skipped_by_reason == {"empty line": 1}


def test_clean_lines_that_fail_the_rules_are_skipped_with_reasons() -> None:
    lines = pl.DataFrame({"line_number": [1], "line": ['{"event_id": "x"}']})
    outgoing = prepare_messages(lines, "clean")
    assert outgoing.values == []
    assert sum(outgoing.skipped_by_reason.values()) == 1


def test_an_oversized_line_that_is_not_utf8_is_skipped_too() -> None:
    lines = lines_from_bytes(b"\xff" * 3000 + b"\n")
    outgoing = prepare_messages(lines, "raw", max_message_bytes=2000)
    assert outgoing.values == []
    assert outgoing.skipped_by_reason == {"larger than the 2,000-byte message limit": 1}


def test_key_hashes_are_kafkas_murmur2_for_every_length() -> None:
    rng = random.Random(7)
    # 40 keys of each length 0-13 (the vectorised path), a few odd ones (one by one), no key
    keys: list[bytes | None] = [rng.randbytes(n) for n in range(14) for _ in range(40)]
    keys += [b"ORD-00042", "commande-été".encode(), rng.randbytes(301), None]
    hashes = partitioner.key_hashes(keys)
    expected = [-1 if key is None else murmur2(key) & 0x7FFFFFFF for key in keys]
    assert hashes.tolist() == expected


class FakeBatch:
    """A batch of at most `capacity` records, like aiokafka's (append says None when full)."""

    def __init__(self, capacity: int) -> None:
        self.records: list[tuple[bytes | None, bytes]] = []
        self.capacity = capacity

    def append(self, *, key: bytes | None, value: bytes, timestamp: None) -> object | None:
        if len(self.records) == self.capacity:
            return None
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)

    def close(self) -> None:
        pass


class FakeProducer:
    """Stands in for a started AIOKafkaProducer: keeps what each partition received, in order."""

    def __init__(self, partitions: int = 3) -> None:
        self.received: dict[int, list[tuple[bytes | None, bytes]]] = {
            p: [] for p in range(partitions)
        }
        self.keyless = 0

    async def partitions_for(self, topic: str) -> set[int]:
        return set(self.received)

    def create_batch(self) -> FakeBatch:
        return FakeBatch(capacity=2)

    async def send_batch(self, batch: FakeBatch, topic: str, partition: int) -> asyncio.Future[Any]:
        return self._delivered(partition, batch.records)

    async def send(self, topic: str, value: bytes, key: bytes | None) -> asyncio.Future[Any]:
        if key is None:
            self.keyless += 1
            partition = self.keyless % len(self.received)
        else:
            partition = (murmur2(key) & 0x7FFFFFFF) % len(self.received)
        return self._delivered(partition, [(key, value)])

    def _delivered(
        self, partition: int, records: list[tuple[bytes | None, bytes]]
    ) -> asyncio.Future[Any]:
        delivered = asyncio.get_running_loop().create_future()
        delivered.set_result(
            SimpleNamespace(partition=partition, offset=len(self.received[partition]))
        )
        self.received[partition] += records
        return delivered

    async def stop(self) -> None:
        pass


def _send_with_chunks(
    monkeypatch: pytest.MonkeyPatch, source: Path, chunk: int, kind: str, **options: Any
) -> tuple[FakeProducer, ProduceResult]:
    """`produce` reading `chunk` lines at a time, into a FakeProducer."""
    fake = FakeProducer()

    async def start_fake(endpoint: KafkaEndpoint, config: dict[str, object]) -> FakeProducer:
        return fake

    async def topic_exists(endpoint: KafkaEndpoint, topic: str, partitions: int) -> None:
        pass

    monkeypatch.setattr(producer, "PRODUCE_CHUNK", chunk)
    monkeypatch.setattr(producer, "start_producer", start_fake)
    monkeypatch.setattr(producer, "ensure_topic", topic_exists)
    result = asyncio.run(
        producer.produce(
            KafkaEndpoint("fake:9092"),
            "orders",
            source,
            kind=kind,
            options=ProducerOptions(**options),
        )
    )
    return fake, result


@pytest.mark.parametrize("kind", ["clean", "raw"])
@pytest.mark.parametrize("rate", [None, 1e9], ids=["batched", "paced"])
def test_reading_the_file_in_chunks_does_not_change_what_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, rate: float | None
) -> None:
    events = [raw_event(event_id=f"e-{i}", order_id=f"ORD-{i % 4}") for i in range(12)]
    if kind == "clean":  # etl's JSON Lines: flat clean records
        text = as_text_records(clean_rows(*events)).write_ndjson()
        lines = [line.encode() for line in text.splitlines()]
    else:
        lines = [json.dumps(event).encode() for event in events]
    lines[3] = b'{"event_id": "no-order"}'  # clean: skipped; raw: sent without a key
    lines[5] = b""  # skipped by both
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    runs = {
        chunk: _send_with_chunks(monkeypatch, source, chunk, kind, rate=rate, limit=10)
        for chunk in (1, 2, 3, 20_000)
    }
    expected = [line for line in lines[:10] if line and (kind == "raw" or b"order_id" in line)]
    for fake, result in runs.values():
        received = [value for records in fake.received.values() for _, value in records]
        assert sorted(received) == sorted(expected)
        assert result.sent == len(expected)
        assert sum(result.end_offsets.values()) == len(expected)
        assert result.skipped_by_reason == runs[20_000][1].skipped_by_reason
        for partition, records in fake.received.items():  # each key's order, whatever the chunks
            keyed = [record for record in records if record[0] is not None]
            whole = runs[20_000][0].received[partition]
            assert keyed == [record for record in whole if record[0] is not None]
