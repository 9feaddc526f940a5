from __future__ import annotations

import polars as pl
import pytest

from orderpipe.core import schema
from orderpipe.core.cleaning import FLAT_RAW_COLUMNS, clean_events, first_broken_rule, typed_fields

GOOD_ROW = {
    "event_id": "evt-1",
    "event_time": "2026-11-20T10:31:02Z",
    "order_id": "ORD-1",
    "customer_id": "CUST-1",
    "country": "FR",
    "device": "mobile",
    "channel": "seo",
    "main_category": "fashion",
    "n_items": "3",
    "basket_value": "120.5",
    "shipping_fee": "4.5",
    "discount": "0",
    "order_total": "125.0",
    "is_returned": "0",
}
NO_ORDER = dict.fromkeys(schema.ORDER_FIELDS)


def _flat(changes: dict[str, str | None], *, order_missing: bool = False) -> pl.DataFrame:
    """One flat raw row, as flatten_raw makes it: the good row with `changes`."""
    row = {**GOOD_ROW, **changes}
    return pl.DataFrame(
        [{"line_number": 1, "raw": "{}", **row, "_order_missing": order_missing}],
        schema={
            "line_number": pl.Int64,
            "raw": pl.String,
            **dict.fromkeys(FLAT_RAW_COLUMNS, pl.String),
            "_order_missing": pl.Boolean,
        },
    )


def _first_reason(changes: dict[str, str | None], *, order_missing: bool = False) -> str | None:
    """The reason clean_events gives that row; None when it is clean."""
    batch = clean_events(_flat(changes, order_missing=order_missing))
    assert batch.clean.height + batch.rejected.height == 1
    return batch.rejected["reason"][0] if batch.rejected.height else None


# One row per rule that breaks it and no earlier rule.
BREAKS_ONLY = {
    "missing event_id": {"event_id": " "},
    "missing event_time": {"event_time": "  "},
    "event_time is an epoch number, not an ISO-8601 timestamp": {"event_time": "1763634662"},
    "event_time is not an ISO-8601 timestamp": {"event_time": "20/11/2026 10:31"},
    "event_time is out of range (2000-2100)": {"event_time": "2101-01-01T00:00:00Z"},
    "missing order_id": {"order_id": None},
    "missing customer_id": {"customer_id": ""},
    "an id is longer than 64 characters": {"customer_id": "C" * 65},
    "missing order object": NO_ORDER,
    "missing n_items": {"n_items": None},
    "n_items is not an integer": {"n_items": "2.5"},
    "n_items must be at least 1": {"n_items": "0"},
    "n_items is out of range (1-100000)": {"n_items": "100001"},
    "missing is_returned": {"is_returned": None},
    "is_returned must be 0 or 1": {"is_returned": "yes"},
    "basket_value is not a number": {"basket_value": "12,5"},
    "shipping_fee is not a number": {"shipping_fee": "free"},
    "discount is not a number": {"discount": "NaN"},
    "order_total is not a number": {"order_total": "inf"},
    "missing basket_value and order_total": {"basket_value": None, "order_total": None},
    "amounts must not be negative": {"discount": "-1"},
    **{
        f"{name} is out of range (0-1000000000)": {name: "1e12", "order_total": "125.0"}
        for name in ("basket_value", "shipping_fee", "discount")
    },
    "order_total is out of range (0-1000000000)": {"order_total": "2e9"},
    **{
        f"{name} contains a control character (or a lone surrogate)": {name: "ab\x00c"}
        for name in schema.TEXT_COLUMNS
    },
    "main_category contains a control character (or a lone surrogate)": {
        "main_category": "fash\x1bion"
    },
    "device is longer than 32 characters": {"device": "d" * 33},
    "channel is longer than 32 characters": {"channel": "c" * 33},
    "main_category is longer than 64 characters": {"main_category": "m" * 65},
    "country is longer than 64 characters": {"country": "F" * 65},
}


def test_the_rules_table_has_no_duplicate_reasons() -> None:
    reasons = [rule.reason for rule in schema.RULES]
    assert len(reasons) == len(set(reasons))


def test_reject_reasons_are_the_rules_in_the_order_checked() -> None:
    assert tuple(rule.reason for rule in schema.RULES) == schema.REJECT_REASONS


def test_every_rule_has_a_row_that_breaks_it_first() -> None:
    assert list(BREAKS_ONLY) == list(schema.REJECT_REASONS)


def test_a_good_row_breaks_no_rule() -> None:
    assert _first_reason({}) is None


@pytest.mark.parametrize("reason", schema.REJECT_REASONS)
def test_a_row_breaking_one_rule_gets_that_reason(reason: str) -> None:
    changes = BREAKS_ONLY[reason]
    assert _first_reason(changes, order_missing=changes is NO_ORDER) == reason


PAIRS = [
    ("missing event_id", "missing event_time"),
    ("missing order_id", "n_items must be at least 1"),
    ("n_items is not an integer", "is_returned must be 0 or 1"),
    ("basket_value is not a number", "amounts must not be negative"),
    # Listed the other way round in the old REJECT_REASONS; the check order is this one.
    ("missing basket_value and order_total", "amounts must not be negative"),
]


@pytest.mark.parametrize(("earlier", "later"), PAIRS)
def test_the_earlier_rule_wins_when_a_row_breaks_two(earlier: str, later: str) -> None:
    assert schema.REJECT_REASONS.index(earlier) < schema.REJECT_REASONS.index(later)
    assert _first_reason({**BREAKS_ONLY[later], **BREAKS_ONLY[earlier]}) == earlier


def test_the_reason_follows_the_order_of_the_table() -> None:
    earlier, later = PAIRS[-1]
    flat = _flat({**BREAKS_ONLY[later], **BREAKS_ONLY[earlier]})
    reversed_rules = tuple(reversed(schema.RULES))
    reason = typed_fields(flat).select(first_broken_rule(reversed_rules)).item()
    assert reason == later
