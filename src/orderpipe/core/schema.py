"""THE event contract: raw and clean columns, dtypes, vocabularies and validation rules.

generate, etl, ingest, ml and stream all take their column names and dtypes from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

# ---------------------------------------------------------------- raw event (nested JSON)
CUSTOMER_FIELDS = ("customer_id", "country")
ORDER_FIELDS = (
    "device",
    "channel",
    "main_category",
    "n_items",
    "basket_value",
    "shipping_fee",
    "discount",
    "order_total",
    "is_returned",
)
TOP_FIELDS = ("event_id", "event_time", "order_id")
ID_FIELDS = ("event_id", "order_id", "customer_id")
AMOUNT_FIELDS = ("basket_value", "shipping_fee", "discount", "order_total")

# Every raw leaf is read as text: numbers keep their JSON spelling ("3", "120.5", "true") and
# the ETL casts them itself, so a wrong type becomes a quarantine reason, never a crash.
RAW_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "event_time": pl.String(),
    "order_id": pl.String(),
    "customer": pl.Struct({name: pl.String() for name in CUSTOMER_FIELDS}),
    "order": pl.Struct({name: pl.String() for name in ORDER_FIELDS}),
}
RAW_STRUCT = pl.Struct(RAW_SCHEMA)

# ---------------------------------------------------------------- clean record (flat)
CLEAN_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "event_time": pl.Datetime("us", "UTC"),
    "order_id": pl.String(),
    "customer_id": pl.String(),
    "country": pl.String(),
    "device": pl.String(),
    "channel": pl.String(),
    "main_category": pl.String(),
    "n_items": pl.Int32(),
    "basket_value": pl.Float64(),
    "shipping_fee": pl.Float64(),
    "discount": pl.Float64(),
    "order_total": pl.Float64(),
    "is_returned": pl.Int8(),
    "event_year": pl.Int32(),
    "event_month": pl.Int8(),
    "event_day": pl.Int8(),
    "event_hour": pl.Int8(),
    "price_average_per_item": pl.Float64(),
}
CLEAN_COLUMNS = tuple(CLEAN_SCHEMA)

# Text form of event_time in CSV, JSON Lines and Kafka messages (UTC, microseconds, "Z").
EVENT_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.6fZ"

# ---------------------------------------------------------------- vocabularies
# The generator's shares and effects are keyed by these (generate.world, in this order); a
# country is any two letters.
DEVICES = ("mobile", "desktop", "tablet")
CHANNELS = ("seo", "sea", "email", "social", "direct", "affiliate")
CATEGORIES = ("fashion", "electronics", "home", "beauty", "sports", "books", "toys", "grocery")
UNKNOWN_TEXT = "unknown"
MAX_ID_LENGTH = 64  # event_id, order_id, customer_id: VARCHAR(64) in the tables
# The text columns' lengths: the table models (db.models) use these, and the rules below reject
# longer values, so every database stores the same text (MySQL would cut, PostgreSQL refuse).
COLUMN_LENGTHS = {
    "event_id": MAX_ID_LENGTH,
    "order_id": MAX_ID_LENGTH,
    "customer_id": MAX_ID_LENGTH,
    "country": 2,
    "device": 32,
    "channel": 32,
    "main_category": 64,
}
# The raw fields stored as text; the others are parsed, and a control character fails the parse.
TEXT_COLUMNS = (*ID_FIELDS, "country", "device", "channel", "main_category")
MAX_COUNTRY_TEXT = 64  # a longer country is not a country: rejected rather than imputed
MAX_NESTING = 8  # arrays/objects in a line; a raw event needs 2
MAX_AMOUNT = 1_000_000_000  # amounts above are not an order
# NUL and the other C0 controls except tab, and DEL. (A JSON lone surrogate such as "\ud800"
# reaches the checks as NUL, so this rule rejects it too.)
CONTROL_CHARACTERS = r"[\x00-\x08\x0a-\x1f\x7f]"
FIRST_YEAR, LAST_YEAR = 2000, 2100  # the years an event_time may fall in
MAX_N_ITEMS = 100_000
UNKNOWN_COUNTRY = "UN"

# ---------------------------------------------------------------- rules, in the order checked
# A rejected row carries the first rule of RULES it breaks (see etl.first_broken_rule); a line that
# is not a JSON object of the raw shape says why (see describe_json_problem).
LINE_REASONS = (
    "not UTF-8 text",
    "empty line",
    "a byte-order mark inside the file",
    "nested too deeply",
    "invalid JSON",
    "not a JSON object",
    "must be an object",
    "must be a scalar",
)


@dataclass(frozen=True)
class Rule:
    """One validation rule of a flat event: its reason text and where a row breaks it."""

    reason: str
    broken: Callable[[], pl.Expr]  # True where a row breaks the rule


def _not_a_number(name: str) -> pl.Expr:
    """Present in the input but not a finite number."""
    value = pl.col(f"_{name}")
    return pl.col(name).is_not_null() & (value.is_null() | ~value.is_finite())


# A row's reason is the first rule it breaks, so the order is behaviour. The predicates read the
# frame of etl.typed_fields: a raw field's own name holds its text (ids stripped, blank -> null),
# `_<field>` its parsed value (`_n_items`, `_returned`, `_basket_value`...); `_time`, `_time_text`,
# `_order_missing` and the amounts after imputation (`_basket_f`, `_shipping_f`, `_discount_f`,
# `_total_f`) are derived.
RULES: tuple[Rule, ...] = (
    Rule("missing event_id", lambda: pl.col("event_id").is_null()),
    Rule(
        "missing event_time",
        lambda: pl.col("event_time").is_null() | (pl.col("_time_text") == ""),
    ),
    Rule(
        "event_time is an epoch number, not an ISO-8601 timestamp",
        lambda: pl.col("_time_text").str.contains(r"^-?\d+(\.\d+)?$"),
    ),
    Rule("event_time is not an ISO-8601 timestamp", lambda: pl.col("_time").is_null()),
    Rule(
        f"event_time is out of range ({FIRST_YEAR}-{LAST_YEAR})",
        lambda: (pl.col("_time").dt.year() < FIRST_YEAR) | (pl.col("_time").dt.year() > LAST_YEAR),
    ),
    Rule("missing order_id", lambda: pl.col("order_id").is_null()),
    Rule("missing customer_id", lambda: pl.col("customer_id").is_null()),
    Rule(
        f"an id is longer than {MAX_ID_LENGTH} characters",
        lambda: (
            pl.max_horizontal(pl.col(name).str.len_chars() for name in ID_FIELDS) > MAX_ID_LENGTH
        ),
    ),
    Rule("missing order object", lambda: pl.col("_order_missing")),
    Rule("missing n_items", lambda: pl.col("n_items").is_null()),
    Rule(
        "n_items is not an integer",
        lambda: pl.col("_n_items").is_null() | (pl.col("_n_items") != pl.col("_n_items").floor()),
    ),
    Rule("n_items must be at least 1", lambda: pl.col("_n_items") < 1),
    Rule(f"n_items is out of range (1-{MAX_N_ITEMS})", lambda: pl.col("_n_items") > MAX_N_ITEMS),
    Rule("missing is_returned", lambda: pl.col("is_returned").is_null()),
    Rule("is_returned must be 0 or 1", lambda: pl.col("_returned").is_null()),
    Rule("basket_value is not a number", lambda: _not_a_number("basket_value")),
    Rule("shipping_fee is not a number", lambda: _not_a_number("shipping_fee")),
    Rule("discount is not a number", lambda: _not_a_number("discount")),
    Rule("order_total is not a number", lambda: _not_a_number("order_total")),
    Rule("missing basket_value and order_total", lambda: pl.col("_basket_f").is_null()),
    Rule(
        "amounts must not be negative",
        lambda: pl.any_horizontal(
            pl.col(name) < 0 for name in ("_basket_f", "_shipping_f", "_discount_f", "_total_f")
        ),
    ),
    *[
        Rule(f"{name} is out of range (0-{MAX_AMOUNT})", lambda c=column: pl.col(c) > MAX_AMOUNT)
        for name, column in zip(
            AMOUNT_FIELDS, ("_basket_f", "_shipping_f", "_discount_f", "_total_f"), strict=True
        )
    ],
    *[
        Rule(
            f"{name} contains a control character (or a lone surrogate)",
            # on the value stored: stripped ids, normalised texts ("mobile\n" stays fine)
            lambda c=name: (
                pl.col(c if c in ID_FIELDS else f"_{c}")
                .str.contains(CONTROL_CHARACTERS)
                .fill_null(False)
            ),
        )
        for name in TEXT_COLUMNS
    ],
    *[
        Rule(
            f"{name} is longer than {COLUMN_LENGTHS[name]} characters",
            lambda c=name: pl.col(f"_{c}").str.len_chars() > COLUMN_LENGTHS[c],
        )
        for name in ("device", "channel", "main_category")
    ],
    Rule(
        f"country is longer than {MAX_COUNTRY_TEXT} characters",
        lambda: pl.col("_country").str.len_chars() > MAX_COUNTRY_TEXT,
    ),
)
REJECT_REASONS = tuple(rule.reason for rule in RULES)

IMPUTATION_RULES = {
    "country": "missing or not two letters -> 'UN'",
    "device": "missing or blank -> 'unknown'",
    "channel": "missing or blank -> 'unknown'",
    "main_category": "missing or blank -> 'unknown'",
    "discount": "missing -> 0.0 (no discount)",
    "shipping_fee": "missing -> order_total - basket_value + discount when both known, else 0.0",
    "basket_value": "missing -> order_total - shipping_fee + discount",
    "order_total": "missing -> basket_value + shipping_fee - discount",
}
