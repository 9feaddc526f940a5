"""stream/messages.py: Kafka records -> clean rows and dead letters, their headers, the offsets."""

from __future__ import annotations

import json
from dataclasses import dataclass

import polars as pl
import pytest
from aiokafka import TopicPartition

from orderpipe.core.schema import CLEAN_COLUMNS
from orderpipe.stream.messages import (
    DeadLetter,
    commit_offsets,
    dead_letter_headers,
    sort_messages,
)
from orderpipe.table.read import as_text_records
from tests.factories import clean_rows, raw_event


@dataclass(frozen=True)
class FakeRecord:
    """The fields of an aiokafka ConsumerRecord that the consumer reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0


def records_of(values: list[bytes | None], topic: str = "orders", partition: int = 0) -> list:
    return [
        FakeRecord(topic, partition, offset, None, value) for offset, value in enumerate(values)
    ]


def clean_message(**changes: object) -> bytes:
    """A flat clean record as `stream produce` sends it (etl's JSON Lines form)."""
    line = as_text_records(clean_rows(raw_event(**changes))).write_ndjson().strip()
    return line.encode()


def raw_message(**changes: object) -> bytes:
    return json.dumps(raw_event(**changes)).encode()


@pytest.fixture
def mixed_batch() -> list:
    return records_of(
        [
            clean_message(event_id="flat-1", order_id="ORD-1"),  # 0
            raw_message(event_id="raw-1", order_id="ORD-2"),  # 1
            None,  # 2
            b"\xff\xfe{not utf-8",  # 3
            b'{"event_id": "broken",',  # 4
            raw_message(event_id="dup", event_time="2026-11-20T12:00:00Z"),  # 5: the later time
            raw_message(event_id="dup", event_time="2026-11-20T11:00:00Z"),  # 6: arrives last
            raw_message(event_id="no-time", event_time=...),  # 7
        ]
    )


def test_clean_records_and_raw_events_both_become_clean_rows(mixed_batch: list) -> None:
    batch = sort_messages(mixed_batch)
    assert sorted(batch.clean["event_id"]) == ["dup", "flat-1", "raw-1"]
    assert batch.clean.columns == ["line_number", *CLEAN_COLUMNS]


def test_line_number_is_the_index_of_the_message_in_the_batch(mixed_batch: list) -> None:
    batch = sort_messages(mixed_batch)
    numbers = dict(batch.clean.select("event_id", "line_number").iter_rows())
    assert numbers == {"flat-1": 0, "raw-1": 1, "dup": 5}


def test_a_flat_clean_record_keeps_its_values(mixed_batch: list) -> None:
    row = sort_messages(mixed_batch).clean.filter(pl.col("event_id") == "flat-1").row(0, named=True)
    assert (row["order_id"], row["customer_id"], row["country"]) == ("ORD-1", "CUST-0007", "FR")
    assert (row["n_items"], row["order_total"], row["is_returned"]) == (3, 120.5, 0)


def test_duplicate_event_id_keeps_the_later_event_time_not_the_later_message(
    mixed_batch: list,
) -> None:
    row = sort_messages(mixed_batch).clean.filter(pl.col("event_id") == "dup").row(0, named=True)
    assert row["event_time"].hour == 12
    assert row["line_number"] == 5


def test_unusable_messages_are_dead_letters_with_their_reason(mixed_batch: list) -> None:
    dead = {letter.record.offset: letter.error for letter in sort_messages(mixed_batch).dead}
    assert set(dead) == {2, 3, 4, 7}
    assert dead[2] == "empty message"
    assert dead[3] == "not UTF-8 text"
    assert dead[4].startswith("invalid JSON")
    assert dead[7] == "missing event_time"


def test_a_dead_letter_carries_the_original_record(mixed_batch: list) -> None:
    for letter in sort_messages(mixed_batch).dead:
        assert letter.record is mixed_batch[letter.record.offset]


def test_every_message_is_either_a_clean_row_a_duplicate_or_a_dead_letter(
    mixed_batch: list,
) -> None:
    batch = sort_messages(mixed_batch)
    duplicates = 1
    assert batch.clean.height + len(batch.dead) + duplicates == len(mixed_batch)


def test_a_batch_of_only_dead_letters_has_no_clean_rows() -> None:
    batch = sort_messages(records_of([None, b"\xff"]))
    assert batch.clean.height == 0
    assert [letter.error for letter in batch.dead] == ["empty message", "not UTF-8 text"]


def test_a_batch_of_only_clean_records_has_no_dead_letters() -> None:
    batch = sort_messages(records_of([clean_message(event_id="a"), clean_message(event_id="b")]))
    assert batch.clean["event_id"].sort().to_list() == ["a", "b"]
    assert batch.dead == []


def test_dead_letter_headers_are_the_four_contract_headers_as_bytes() -> None:
    record = FakeRecord("orders", 3, 1234, b"key", b"{")
    headers = dead_letter_headers(DeadLetter(record, "invalid JSON"))
    assert headers == [
        ("error", b"invalid JSON"),
        ("source-topic", b"orders"),
        ("source-partition", b"3"),
        ("source-offset", b"1234"),
    ]


def test_dead_letter_error_header_is_utf8_encoded() -> None:
    record = FakeRecord("orders", 0, 0, None, None)
    headers = dict(dead_letter_headers(DeadLetter(record, "n_items é")))
    assert headers["error"] == "n_items é".encode()


def test_commit_offsets_are_the_highest_offset_plus_one_per_partition() -> None:
    records = [
        FakeRecord("orders", 0, 10, None, b""),
        FakeRecord("orders", 1, 7, None, b""),
        FakeRecord("orders", 0, 12, None, b""),
        FakeRecord("orders", 0, 11, None, b""),  # out of order: must not lower the offset
        FakeRecord("other", 0, 3, None, b""),
    ]
    assert commit_offsets(records) == {
        TopicPartition("orders", 0): 13,
        TopicPartition("orders", 1): 8,
        TopicPartition("other", 0): 4,
    }


def test_commit_offsets_of_no_records_is_empty() -> None:
    assert commit_offsets([]) == {}


def test_a_message_whose_cleaning_raises_is_isolated_and_dead_lettered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The last line of defence: whatever the line check missed costs one message, not a batch."""
    import orderpipe.core.cleaning as etl

    real = etl.clean_lines

    def clean_lines_with_a_bug(lines: pl.DataFrame) -> object:
        if lines["line"].str.contains("POISON").any():
            raise RuntimeError("a case nobody thought of")
        return real(lines)

    monkeypatch.setattr(etl, "clean_lines", clean_lines_with_a_bug)
    good = [raw_event(event_id=f"ok-{i}") for i in range(5)]
    poison = raw_event(event_id="POISON")
    records = [FakeRecord("orders", 0, i, None, json.dumps(e).encode()) for i, e in enumerate(good)]
    records.insert(3, FakeRecord("orders", 0, 99, None, json.dumps(poison).encode()))
    batch = sort_messages(records)
    assert sorted(batch.clean["event_id"]) == [f"ok-{i}" for i in range(5)]
    assert [letter.record.offset for letter in batch.dead] == [99]
    assert batch.dead[0].error.startswith("cannot be decoded (RuntimeError: a case nobody")
    for row in batch.clean.iter_rows(named=True):  # line_number still indexes the message
        assert json.loads(records[row["line_number"]].value)["event_id"] == row["event_id"]


def test_a_message_without_a_key_is_accepted() -> None:
    value = json.dumps(raw_event(event_id="k-0")).encode()
    batch = sort_messages([FakeRecord("orders", 0, 0, None, value)])
    assert batch.clean["event_id"].to_list() == ["k-0"] and not batch.dead


def test_when_every_message_raises_alone_the_code_is_at_fault_and_the_error_is_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug that hits every message must stop the consumer, not dead-letter the stream."""
    import orderpipe.core.cleaning as etl

    def broken(_lines: pl.DataFrame) -> object:
        raise RuntimeError("a bug in the cleaning code")

    monkeypatch.setattr(etl, "clean_lines", broken)
    values = [json.dumps(raw_event(event_id=f"ok-{i}")).encode() for i in range(4)]
    with pytest.raises(RuntimeError, match="a bug in the cleaning code"):
        sort_messages(records_of(values))
