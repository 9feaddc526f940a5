"""Cleaning shared by etl and the stream consumer: raw or clean-record JSON lines -> a clean batch
(typed, validated, normalised, imputed, features), rejected rows with a reason, and dedupe."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from orderpipe.core import schema
from orderpipe.core.linecheck import REJECTED_SCHEMA, ParsedLines, parse_lines

FLAT_RAW_COLUMNS = (*schema.TOP_FIELDS, *schema.CUSTOMER_FIELDS, *schema.ORDER_FIELDS)
FLAT_RAW_STRUCT = pl.Struct({name: pl.String() for name in FLAT_RAW_COLUMNS})


@dataclass(frozen=True)
class CleanBatch:
    """Clean rows, quarantined rows and what was imputed or normalised on the way."""

    clean: pl.DataFrame
    rejected: pl.DataFrame
    imputed: dict[str, int]
    normalised: dict[str, int]


def flatten_raw(decoded: pl.DataFrame) -> pl.DataFrame:
    """Nested raw events (struct column `event`) -> one text column per raw field."""
    event = pl.col("event")
    customer = event.struct.field("customer")
    order = event.struct.field("order")
    return decoded.select(
        "line_number",
        pl.col("line").alias("raw"),
        *[event.struct.field(name).alias(name) for name in schema.TOP_FIELDS],
        *[customer.struct.field(name).alias(name) for name in schema.CUSTOMER_FIELDS],
        *[order.struct.field(name).alias(name) for name in schema.ORDER_FIELDS],
        order.is_null().alias("_order_missing"),
    )


TEXT_FIELDS = ("device", "channel", "main_category")
RETURNED_SPELLINGS = {"0": 0, "1": 1, "false": 0, "true": 1, "0.0": 0, "1.0": 1}
COUNTRY_CODE = r"^[A-Z]{2}$"


def _number(name: str) -> pl.Expr:
    return pl.col(name).str.strip_chars().cast(pl.Float64, strict=False)


def _text(name: str) -> pl.Expr:
    value = pl.col(name).str.strip_chars().str.replace_all(r"\s+", " ").str.to_lowercase()
    return pl.when(value == "").then(None).otherwise(value)


def _event_time() -> pl.Expr:
    text = pl.col("event_time").str.strip_chars()
    text = text.str.replace(" ", "T", literal=True).str.replace(r"(?i)z$", "+00:00")
    text = (
        pl.when(text.str.contains(r"[+-]\d{2}:?\d{2}$"))
        .then(text)
        .otherwise(pl.concat_str(text, pl.lit("+00:00")))
    )
    return text.str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.f%:z", strict=False, time_unit="us", time_zone="UTC"
    )


def typed_fields(flat: pl.DataFrame) -> pl.DataFrame:
    """Flat raw text -> the typed helper columns that schema.RULES reads (names: see there).

    Nothing is rejected here: a value that does not parse becomes null beside its text.
    """
    if "_order_missing" not in flat.columns:
        flat = flat.with_columns(pl.lit(False).alias("_order_missing"))
    ids = {name: pl.col(name).str.strip_chars() for name in schema.ID_FIELDS}
    typed = flat.with_columns(
        *[pl.when(expr == "").then(None).otherwise(expr).alias(name) for name, expr in ids.items()],
        _event_time().alias("_time"),
        pl.col("event_time").str.strip_chars().alias("_time_text"),
        pl.col("country").str.strip_chars().str.to_uppercase().alias("_country"),
        *[_text(name).alias(f"_{name}") for name in TEXT_FIELDS],
        *[_number(name).alias(f"_{name}") for name in schema.AMOUNT_FIELDS],
        _number("n_items").alias("_n_items"),
        pl.col("is_returned")
        .str.strip_chars()
        .str.to_lowercase()
        .replace_strict(RETURNED_SPELLINGS, default=None, return_dtype=pl.Int8)
        .alias("_returned"),
    )
    return _complete_amounts(typed)


def _complete_amounts(typed: pl.DataFrame) -> pl.DataFrame:
    """Impute each missing amount from the others (`_basket_f`... `_total_f`).

    Done before validation because the rules judge the completed amounts (negative, missing).
    """
    discount = pl.col("_discount").fill_null(0.0)
    basket = pl.coalesce(
        "_basket_value",
        (pl.col("_order_total") - pl.col("_shipping_fee").fill_null(0.0) + discount).round(2),
    )
    shipping = pl.coalesce(
        "_shipping_fee",
        pl.when(pl.col("_order_total").is_not_null() & pl.col("_basket_value").is_not_null())
        .then((pl.col("_order_total") - pl.col("_basket_value") + discount).round(2))
        .otherwise(0.0),
    )
    total = pl.coalesce(
        "_order_total",
        (pl.col("_basket_f") + pl.col("_shipping_f") - pl.col("_discount_f")).round(2),
    )
    return typed.with_columns(
        discount.alias("_discount_f"), basket.alias("_basket_f"), shipping.alias("_shipping_f")
    ).with_columns(total.alias("_total_f"))


def first_broken_rule(rules: Sequence[schema.Rule] = schema.RULES) -> pl.Expr:
    """The reason of the first rule a typed row breaks, in the rules' order; null if none."""
    return _first_broken_rule(tuple(rules))


@functools.cache
def _first_broken_rule(rules: tuple[schema.Rule, ...]) -> pl.Expr:
    # built once per rule set: the stream cleans small batches often, and building the chain
    # of ~20 expressions cost as much as evaluating it on a hundred rows
    reason = pl.lit(None, dtype=pl.String)
    for rule in reversed(rules):
        reason = pl.when(rule.broken()).then(pl.lit(rule.reason)).otherwise(reason)
    return reason


def imputation_counts(valid: pl.DataFrame) -> tuple[dict[str, int], dict[str, int]]:
    """Per column, how many valid rows get an imputed value and how many had text normalised."""
    country = pl.col("_country")
    imputed = valid.select(
        (~country.str.contains(COUNTRY_CODE).fill_null(False)).sum().alias("country"),
        *[
            pl.col(f"_{name}").is_null().sum().alias(name)
            for name in (*TEXT_FIELDS, "discount", "shipping_fee", "basket_value", "order_total")
        ],
    ).row(0, named=True)
    normalised = valid.select(
        *[
            (pl.col(name).is_not_null() & (pl.col(name) != pl.col(f"_{name}"))).sum().alias(name)
            for name in TEXT_FIELDS
        ],
        (pl.col("country").is_not_null() & (pl.col("country") != country)).sum().alias("country"),
    ).row(0, named=True)
    return imputed, normalised


def clean_records(valid: pl.DataFrame) -> pl.DataFrame:
    """Valid typed rows -> `line_number` and the clean record columns (schema.CLEAN_SCHEMA).

    Unknown countries and texts get their placeholder; the date parts are derived here.
    """
    country = pl.col("_country")
    texts = [pl.col(f"_{name}").fill_null(schema.UNKNOWN_TEXT).alias(name) for name in TEXT_FIELDS]
    time = pl.col("event_time")
    return (
        valid.select(
            "line_number",
            "event_id",
            pl.col("_time").alias("event_time"),
            "order_id",
            "customer_id",
            pl.when(country.str.contains(COUNTRY_CODE))
            .then(country)
            .otherwise(pl.lit(schema.UNKNOWN_COUNTRY))
            .alias("country"),
            *texts,
            pl.col("_n_items").cast(pl.Int32).alias("n_items"),
            pl.col("_basket_f").alias("basket_value"),
            pl.col("_shipping_f").alias("shipping_fee"),
            pl.col("_discount_f").alias("discount"),
            pl.col("_total_f").alias("order_total"),
            pl.col("_returned").alias("is_returned"),
        )
        .with_columns(
            time.dt.year().cast(pl.Int32).alias("event_year"),
            time.dt.month().cast(pl.Int8).alias("event_month"),
            time.dt.day().cast(pl.Int8).alias("event_day"),
            time.dt.hour().cast(pl.Int8).alias("event_hour"),
            (pl.col("basket_value") / pl.col("n_items")).round(4).alias("price_average_per_item"),
        )
        .cast(dict(schema.CLEAN_SCHEMA))
    )


def clean_events(flat: pl.DataFrame) -> CleanBatch:
    """Validate, type, normalise and impute flat raw events; rejected rows get their first reason.

    `flat` holds one text column per raw field (see FLAT_RAW_COLUMNS), `line_number`, `raw`
    and optionally `_order_missing`. Duplicates are kept: see `dedupe_latest`.
    """
    typed = typed_fields(flat).with_columns(first_broken_rule().alias("reason"))
    rejected = (
        typed.filter(pl.col("reason").is_not_null())
        .select("line_number", "reason", "raw", pl.lit(None).alias("raw_base64"))
        .cast(REJECTED_SCHEMA)
    )
    valid = typed.filter(pl.col("reason").is_null())
    imputed, normalised = imputation_counts(valid)
    return CleanBatch(
        clean=clean_records(valid), rejected=rejected, imputed=imputed, normalised=normalised
    )


def dedupe_latest(clean: pl.DataFrame) -> pl.DataFrame:
    """One row per event_id: the latest event_time wins; on a tie, the later line wins."""
    return clean.sort(["event_time", "line_number"], maintain_order=True).unique(
        subset="event_id", keep="last", maintain_order=True
    )


def clean_lines(lines: pl.DataFrame) -> CleanBatch:
    """Raw JSON text lines -> clean rows (duplicates kept) and every rejected line with a reason."""
    parsed = parse_lines(lines)
    return _with_parse_rejects(parsed, clean_events(flatten_raw(parsed.decoded)))


def clean_record_lines(lines: pl.DataFrame) -> CleanBatch:
    """Clean-record JSON text (flat: the CSV/JSONL/Kafka form) -> clean rows, same rules.

    Extra fields (event_year...) are recomputed from event_time, never trusted.
    """
    parsed = parse_lines(lines, FLAT_RAW_STRUCT)
    flat = parsed.decoded.select(
        "line_number", pl.col("line").alias("raw"), pl.col("event").struct.unnest()
    )
    return _with_parse_rejects(parsed, clean_events(flat))


def _with_parse_rejects(parsed: ParsedLines, cleaned: CleanBatch) -> CleanBatch:
    """`cleaned`, with the lines that did not even parse among its rejected rows."""
    rejected = pl.concat([parsed.rejected, cleaned.rejected]).sort("line_number")
    return CleanBatch(cleaned.clean, rejected, cleaned.imputed, cleaned.normalised)
