"""Kafka records -> clean rows and dead letters, with the cleaning the batch ETL shares too.

Pure: depends only on the records' bytes, so the consumer can run it in a worker thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import polars as pl

from orderpipe.core.errors import first_line

RAW_SHAPE = r'"customer"\s*:|"order"\s*:'  # the nested raw event, not the flat clean record
UNDECODABLE = "cannot be decoded"
log = logging.getLogger("orderpipe.stream")


@dataclass(frozen=True)
class DeadLetter:
    """A record that cannot be stored, and why."""

    record: Any
    error: str


@dataclass(frozen=True)
class SortedBatch:
    """Valid clean rows (one per event_id; `line_number` = index of the message) and the DLQ."""

    clean: pl.DataFrame
    dead: list[DeadLetter]


def sort_messages(records: list[Any]) -> SortedBatch:
    """Decode and clean a batch (clean records and raw nested events alike); the rest is dead.

    Should cleaning a batch raise all the same (a case the line check missed), the batch is
    split until the message that raises is alone, and only it is dead-lettered. When every
    message raises on its own, the fault is the code's, not theirs: the error is raised.
    """
    try:
        return _sort(records)
    except Exception as exc:
        log.warning(
            "cleaning a batch of %d messages raised %s; isolating the message that raises",
            len(records),
            first_line(exc, named=True)[:200],
        )
        isolated = _isolate(records)
        raised = sum(letter.error.startswith(UNDECODABLE) for letter in isolated.dead)
        if len(records) > 1 and raised == len(records):
            raise
        return isolated


def _isolate(records: list[Any]) -> SortedBatch:
    try:
        return _sort(records)
    except Exception as exc:
        if len(records) <= 1:
            reason = f"{UNDECODABLE} ({first_line(exc, named=True)[:200]})"
            return SortedBatch(clean=_no_rows(), dead=[DeadLetter(r, reason) for r in records])
    from orderpipe.core.cleaning import dedupe_latest

    half = len(records) // 2
    first, second = _isolate(records[:half]), _isolate(records[half:])
    clean = pl.concat(
        [first.clean, second.clean.with_columns(pl.col("line_number") + half)], how="vertical"
    )
    return SortedBatch(clean=dedupe_latest(clean), dead=[*first.dead, *second.dead])


def _no_rows() -> pl.DataFrame:
    from orderpipe.core import schema

    return pl.DataFrame(schema={"line_number": pl.Int64, **schema.CLEAN_SCHEMA})


def _sort(records: list[Any]) -> SortedBatch:
    from orderpipe.core.cleaning import clean_lines, clean_record_lines, dedupe_latest

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


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of `topic`."""
    return f"{topic}.dlq"


def dead_letter_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The contract headers of a dead letter: error, source-topic/partition/offset."""
    record = letter.record
    return [
        ("error", letter.error.encode()),
        ("source-topic", record.topic.encode()),
        ("source-partition", str(record.partition).encode()),
        ("source-offset", str(record.offset).encode()),
    ]


def commit_offsets(records: list[Any]) -> dict[Any, int]:
    """The offsets to commit after `records` are stored: per partition, the last offset + 1."""
    from aiokafka import TopicPartition

    ends: dict[tuple[str, int], int] = {}
    for record in records:
        part = (record.topic, record.partition)
        if record.offset >= ends.get(part, -1):
            ends[part] = record.offset
    return {TopicPartition(*part): offset + 1 for part, offset in ends.items()}
