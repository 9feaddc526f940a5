"""THE event contract: raw and clean columns, dtypes, vocabularies and validation rules.

generate, etl, ingest, ml and stream all take their column names and dtypes from here.
"""

from __future__ import annotations

import json
from typing import Any

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
DEVICES = ("mobile", "desktop", "tablet")
CHANNELS = ("seo", "sea", "email", "social", "direct", "affiliate")
CATEGORIES = ("fashion", "electronics", "home", "beauty", "sports", "books", "toys", "grocery")
COUNTRIES = ("FR", "BE", "CH", "DE", "ES", "IT", "NL", "LU", "PT", "GB")
UNKNOWN_TEXT = "unknown"
MAX_ID_LENGTH = 64  # event_id, order_id, customer_id: VARCHAR(64) in the tables
UNKNOWN_COUNTRY = "UN"

# ---------------------------------------------------------------- rules, in the order checked
# A rejected row carries the first rule it breaks (see etl.clean_events); a line that is not
# a JSON object of the raw shape says why (see describe_json_problem).
LINE_REASONS = (
    "not UTF-8 text",
    "empty line",
    "invalid JSON",
    "not a JSON object",
    "must be an object",
    "must be a scalar",
)
REJECT_REASONS = (
    "missing event_id",
    "missing event_time",
    "event_time is an epoch number, not an ISO-8601 timestamp",
    "event_time is not an ISO-8601 timestamp",
    "event_time is out of range (2000-2100)",
    "missing order_id",
    "missing customer_id",
    f"an id is longer than {MAX_ID_LENGTH} characters",
    "missing order object",
    "missing n_items",
    "n_items is not an integer",
    "n_items must be at least 1",
    "n_items is out of range (1-100000)",
    "missing is_returned",
    "is_returned must be 0 or 1",
    "basket_value is not a number",
    "shipping_fee is not a number",
    "discount is not a number",
    "order_total is not a number",
    "amounts must not be negative",
    "missing basket_value and order_total",
)

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


def describe_json_problem(line: str) -> str:
    """Why one raw line does not fit the raw schema (invalid JSON, or a leaf of the wrong shape)."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        return f"invalid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(value, dict):
        return f"not a JSON object (got {_json_kind(value)})"
    for key, dtype in RAW_SCHEMA.items():
        problem = _leaf_problem(key, value.get(key), dtype)
        if problem:
            return problem
    return "does not fit the raw event schema"


def _leaf_problem(path: str, value: Any, dtype: pl.DataType) -> str | None:
    if value is None:
        return None
    if isinstance(dtype, pl.Struct):
        if not isinstance(value, dict):
            return f"{path} must be an object (got {_json_kind(value)})"
        for field in dtype.fields:
            problem = _leaf_problem(f"{path}.{field.name}", value.get(field.name), field.dtype)
            if problem:
                return problem
        return None
    if isinstance(value, dict | list):
        return f"{path} must be a scalar (got {_json_kind(value)})"
    return None


def _json_kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "number" if isinstance(value, int | float) else "null"
    )
