"""stream/admin.py: the pure rules of `stream status` and `stream dlq replay`, and the replay's
send-then-commit order with a fake consumer and producer."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orderpipe.core.errors import OrderpipeError
from orderpipe.stream.admin import (
    NO_REASON,
    REASON_CHARS,
    _Replayer,
    lag_of,
    matches_reason,
    newest_starts,
    reason_of_letter,
    target_of_letter,
    top_reasons,
)
from orderpipe.stream.messages import DeadLetter, dead_letter_headers


@dataclass(frozen=True)
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


def letter(offset: int, error: str, *, value: bytes | None = b"{}", source: str = "orders") -> Any:
    """A dead letter as the consumer writes it (its headers from the contract function)."""
    origin = FakeRecord(source, 1, 100 + offset)
    headers = tuple(dead_letter_headers(DeadLetter(origin, error)))
    return FakeRecord("orders.dlq", 0, offset, key=b"k%d" % offset, value=value, headers=headers)


# ---------------------------------------------------------------- reasons and targets
def test_the_reason_is_the_error_header() -> None:
    assert reason_of_letter(letter(0, "not UTF-8 text").headers) == "not UTF-8 text"


def test_a_letter_without_an_error_header_has_a_placeholder_reason() -> None:
    assert reason_of_letter([]) == NO_REASON
    assert reason_of_letter(None) == NO_REASON
    assert reason_of_letter([("error", b"  ")]) == NO_REASON
    assert reason_of_letter([("error", None)]) == NO_REASON


def test_a_reason_that_is_not_utf8_or_too_long_is_still_a_short_label() -> None:
    assert reason_of_letter([("error", b"bad \xff")]) == "bad \ufffd"
    long = reason_of_letter([("error", b"x" * 5000)])
    assert len(long) == REASON_CHARS and long.endswith("…")


def test_a_letter_goes_back_to_its_source_topic_else_the_configured_one() -> None:
    assert target_of_letter(letter(0, "e", source="other").headers, "orders") == "other"
    assert target_of_letter([("error", b"e")], "orders") == "orders"
    assert target_of_letter([("source-topic", b"")], "orders") == "orders"


def test_the_reason_filter_is_a_substring_ignoring_case() -> None:
    reason = "database refused the event: (1406, 'Data too long')"
    assert matches_reason(reason, "DATABASE refused")
    assert matches_reason(reason, "too long")
    assert not matches_reason(reason, "not UTF-8")
    assert matches_reason(reason, None)


def test_top_reasons_rank_by_count_then_name_and_count_the_rest() -> None:
    counts = Counter({"b": 3, "a": 3, "c": 5, "d": 1, "e": 1})
    top, others = top_reasons(counts, limit=3)
    assert list(top.items()) == [("c", 5), ("a", 3), ("b", 3)]
    assert others == 2
    assert top_reasons(Counter(), limit=10) == ({}, 0)


# ---------------------------------------------------------------- offsets
def test_lag_counts_from_the_committed_offset_or_else_the_beginning() -> None:
    assert lag_of(committed=7, beginning=0, end=12) == 5
    assert lag_of(committed=None, beginning=0, end=12) == 12
    assert lag_of(committed=None, beginning=4, end=12) == 8  # retention removed 0..3
    assert lag_of(committed=2, beginning=4, end=12) == 8  # the consumer would reset to 4
    assert lag_of(committed=12, beginning=0, end=12) == 0
    assert lag_of(committed=None, beginning=0, end=0) == 0


def test_the_scan_reads_everything_when_the_dlq_is_under_the_cap() -> None:
    assert newest_starts({0: 3, 1: 0}, {0: 10, 1: 5}, cap=100) == {0: 3, 1: 0}


def test_the_scan_reads_the_newest_letters_shared_by_partition_size() -> None:
    starts = newest_starts({0: 0, 1: 0, 2: 0}, {0: 600, 1: 300, 2: 100}, cap=100)
    assert starts == {0: 540, 1: 270, 2: 90}
    assert newest_starts({0: 0}, {0: 50}, cap=0) == {0: 50}


@given(
    sizes=st.lists(st.tuples(st.integers(0, 50), st.integers(0, 500)), min_size=1, max_size=6),
    cap=st.integers(0, 1000),
)
def test_the_scan_reads_exactly_min_cap_size_within_each_partition(
    sizes: list[tuple[int, int]], cap: int
) -> None:
    beginning = {p: first for p, (first, _size) in enumerate(sizes)}
    end = {p: first + size for p, (first, size) in enumerate(sizes)}
    starts = newest_starts(beginning, end, cap)
    assert all(beginning[p] <= starts[p] <= end[p] for p in end)
    assert sum(end[p] - starts[p] for p in end) == min(cap, sum(s for _f, s in sizes))


# ---------------------------------------------------------------- replay
@dataclass
class Journal:
    """What the fakes saw, in order."""

    events: list[tuple[str, Any]] = field(default_factory=list)


class FakeProducer:
    """Acknowledges each send a moment later (or refuses it)."""

    def __init__(self, journal: Journal, refuse: bool = False) -> None:
        self.journal, self.refuse = journal, refuse

    async def send(self, topic: str, value: bytes | None, key: bytes | None) -> asyncio.Future:
        from aiokafka.errors import KafkaTimeoutError

        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.journal.events.append(("send", (topic, key, value)))

        def acknowledge() -> None:
            if self.refuse:
                future.set_exception(KafkaTimeoutError("no answer"))
            else:
                self.journal.events.append(("ack", key))
                future.set_result(None)

        asyncio.get_running_loop().call_later(0.01, acknowledge)
        return future


class FakeConsumer:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.journal.events.append(("commit", {tp.partition: o for tp, o in offsets.items()}))


def replayer(
    journal: Journal, *, dry_run: bool = False, reason: str | None = None, **options: Any
) -> _Replayer:
    producer = None if dry_run else FakeProducer(journal, options.pop("refuse", False))
    return _Replayer(
        consumer=FakeConsumer(journal),
        producer=producer,
        default_topic="orders",
        targets=options.pop("targets", {"orders", "other"}),
        reason=reason,
        limit=options.pop("limit", None),
    )


def test_a_batch_is_committed_only_after_every_send_is_acknowledged() -> None:
    journal = Journal()
    replay = replayer(journal)
    asyncio.run(replay.replay([letter(0, "a"), letter(1, "b", source="other"), letter(2, "a")]))
    kinds = [kind for kind, _ in journal.events]
    assert kinds == ["send", "send", "send", "ack", "ack", "ack", "commit"]
    sends = [detail for kind, detail in journal.events if kind == "send"]
    assert sends[1] == ("other", b"k1", b"{}")  # value and key as they were, to the source topic
    assert journal.events[-1] == ("commit", {0: 3})
    assert (replay.read, replay.matched, replay.sent) == (3, 3, 3)
    assert replay.by_reason == Counter({"a": 2, "b": 1})
    assert replay.sent_to == Counter({"orders": 2, "other": 1})


def test_letters_not_matching_the_reason_are_passed_over_but_committed() -> None:
    journal = Journal()
    replay = replayer(journal, reason="database")
    asyncio.run(replay.replay([letter(0, "not UTF-8 text"), letter(1, "database refused: x")]))
    assert [d for k, d in journal.events if k == "send"] == [("orders", b"k1", b"{}")]
    assert journal.events[-1] == ("commit", {0: 2})
    assert (replay.read, replay.matched, replay.sent) == (2, 1, 1)


def test_a_dry_run_sends_nothing_and_commits_nothing() -> None:
    journal = Journal()
    replay = replayer(journal, dry_run=True)
    asyncio.run(replay.replay([letter(0, "a"), letter(1, "b")]))
    assert journal.events == []
    assert (replay.read, replay.matched, replay.sent) == (2, 2, 0)
    assert replay.by_reason == Counter({"a": 1, "b": 1})


def test_the_limit_stops_the_replay_and_commits_only_what_was_read() -> None:
    journal = Journal()
    replay = replayer(journal, limit=2)
    asyncio.run(replay.replay([letter(0, "a"), letter(1, "b"), letter(2, "c"), letter(3, "d")]))
    assert replay.limited and (replay.read, replay.sent) == (2, 2)
    assert journal.events[-1] == ("commit", {0: 2})


def test_a_refused_send_commits_nothing_and_says_so_in_one_line() -> None:
    journal = Journal()
    replay = replayer(journal, refuse=True)
    with pytest.raises(OrderpipeError, match="not marked replayed") as raised:
        asyncio.run(replay.replay([letter(0, "a")]))
    assert "\n" not in str(raised.value)
    assert not any(kind == "commit" for kind, _ in journal.events)


def test_a_letter_naming_a_missing_topic_stops_before_its_batch_is_sent() -> None:
    journal = Journal()
    replay = replayer(journal, targets={"orders"})
    with pytest.raises(OrderpipeError, match="'gone', which does not exist"):
        asyncio.run(replay.replay([letter(0, "a"), letter(1, "a", source="gone")]))
    assert journal.events == []


def test_a_letter_without_a_value_is_passed_over() -> None:
    journal = Journal()
    replay = replayer(journal)
    asyncio.run(replay.replay([letter(0, "empty message", value=None), letter(1, "a")]))
    assert (replay.read, replay.matched, replay.sent, replay.empty) == (2, 1, 1, 1)
    assert journal.events[-1] == ("commit", {0: 2})
