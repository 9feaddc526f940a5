"""producer: what cannot be sent is skipped with a reason, never a failed send."""

from __future__ import annotations

import json

import polars as pl

from orderpipe.lines import lines_from_bytes
from orderpipe.stream.producer import prepare_messages
from tests.factories import raw_event


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
