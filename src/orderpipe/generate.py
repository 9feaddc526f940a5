"""Synthetic order events in the raw contract shape, vectorised with numpy and polars.

Seeded and byte-for-byte reproducible; recurring customers, price levels per category, return
probability from clear rules (the truth is saved beside the file), and optional dirt.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from orderpipe import schema
from orderpipe.errors import OrderpipeError
from orderpipe.fileio import write_atomic
from orderpipe.layout import truth_for

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)

# Shares and effects of the synthetic world. Returns follow a logistic rule on these effects.
DEVICE_SHARE = {"mobile": 0.55, "desktop": 0.35, "tablet": 0.10}
CHANNEL_SHARE = {
    "seo": 0.30,
    "sea": 0.20,
    "email": 0.15,
    "social": 0.15,
    "direct": 0.12,
    "affiliate": 0.08,
}
CATEGORY_SHARE = {
    "fashion": 0.24,
    "electronics": 0.14,
    "home": 0.14,
    "beauty": 0.12,
    "sports": 0.10,
    "books": 0.09,
    "toys": 0.08,
    "grocery": 0.09,
}
COUNTRY_SHARE = {
    "FR": 0.45,
    "BE": 0.10,
    "CH": 0.06,
    "DE": 0.10,
    "ES": 0.08,
    "IT": 0.08,
    "NL": 0.05,
    "LU": 0.02,
    "PT": 0.03,
    "GB": 0.03,
}
CATEGORY_PRICE = {
    "fashion": 35.0,
    "electronics": 120.0,
    "home": 45.0,
    "beauty": 18.0,
    "sports": 40.0,
    "books": 14.0,
    "toys": 22.0,
    "grocery": 6.0,
}
CATEGORY_ITEMS = {
    "fashion": 1.4,
    "electronics": 0.4,
    "home": 1.0,
    "beauty": 1.6,
    "sports": 0.8,
    "books": 1.2,
    "toys": 1.0,
    "grocery": 4.0,
}
RETURN_BASE = -2.3
RETURN_CATEGORY = {
    "fashion": 1.2,
    "electronics": 0.4,
    "home": -0.2,
    "beauty": -0.3,
    "sports": 0.3,
    "books": -0.8,
    "toys": 0.0,
    "grocery": -1.5,
}
RETURN_DEVICE = {"mobile": 0.35, "desktop": 0.0, "tablet": 0.1}
RETURN_CHANNEL = {
    "seo": 0.0,
    "sea": 0.1,
    "email": -0.2,
    "social": 0.5,
    "direct": -0.3,
    "affiliate": 0.3,
}
RETURN_SINGLE_ITEM = 0.45
RETURN_DISCOUNTED = 0.3
RETURN_PRICEY_ITEM = 0.25  # average price per item above 100
FREE_SHIPPING_FROM = 60.0
SHIPPING_FEE = 4.99
HOUR_WEIGHTS = np.array(
    [
        1,
        0.6,
        0.4,
        0.3,
        0.3,
        0.4,
        0.8,
        1.4,
        2.0,
        2.4,
        2.6,
        2.7,
        3.0,
        2.9,
        2.7,
        2.6,
        2.7,
        3.0,
        3.5,
        4.2,
        4.6,
        4.3,
        3.2,
        1.9,
    ]
)


@dataclass(frozen=True)
class GenerateResult:
    """What `generate` wrote."""

    output: Path
    truth: Path
    events: int
    duplicates: int
    bad_lines: int
    lines: int
    seed: int
    seconds: float


@dataclass(frozen=True)
class Dirt:
    """How untidy the generated file is."""

    duplicates: int | None = None  # extra lines re-sending an event; None: 2 % of the events
    missing_rate: float = 0.05
    untidy_rate: float = 0.10
    bad_lines: int = 0

    def __post_init__(self) -> None:
        if (self.duplicates or 0) < 0 or self.bad_lines < 0:
            raise OrderpipeError("--duplicates and --bad-lines must be 0 or more")
        for name in ("missing_rate", "untidy_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise OrderpipeError(f"--{name.replace('_', '-')} must be between 0 and 1")


def generate_events(
    output: Path,
    events: int,
    *,
    seed: int = 42,
    dirt: Dirt | None = None,
    start: datetime = DEFAULT_START,
    days: int = 60,
) -> GenerateResult:
    """Write `events` distinct raw events (plus duplicates and bad lines) as JSON Lines."""
    if events < 1:
        raise OrderpipeError("--events must be at least 1")
    if days < 1:
        raise OrderpipeError("--days must be at least 1")
    dirt = dirt or Dirt()
    duplicates = events // 50 if dirt.duplicates is None else dirt.duplicates
    began = time.perf_counter()
    rng = np.random.default_rng(seed)
    frame = _orders(rng, events, start, days)
    truth = frame.select("event_id", "return_proba")
    frame = _make_untidy(rng, frame, dirt)
    lines = _with_duplicates(rng, frame, duplicates)
    bad = _bad_lines(rng, lines, dirt.bad_lines)
    if bad:
        # Bad lines go to random places: sort every line by a position key in one gather.
        total = len(lines) + len(bad)
        bad_positions = np.sort(rng.choice(total, size=len(bad), replace=False))
        good_positions = np.setdiff1d(np.arange(total), bad_positions, assume_unique=True)
        keys = np.concatenate([good_positions, bad_positions])
        lines = pl.concat([lines, pl.Series("line", bad, dtype=pl.String)]).gather(
            np.argsort(keys, kind="stable")
        )
    write_atomic(
        output,
        lambda tmp: lines.to_frame("line").write_csv(
            tmp, include_header=False, quote_style="never"
        ),
    )
    truth_path = truth_for(output)
    write_atomic(truth_path, lambda tmp: truth.write_parquet(tmp))
    return GenerateResult(
        output=output,
        truth=truth_path,
        events=events,
        duplicates=duplicates,
        bad_lines=len(bad),
        lines=len(lines),
        seed=seed,
        seconds=time.perf_counter() - began,
    )


def _choice(rng: np.random.Generator, shares: dict[str, float], size: int) -> np.ndarray:
    """Indices into `shares` drawn with its weights."""
    weights = np.array(list(shares.values()))
    return rng.choice(len(weights), size=size, p=weights / weights.sum())


def _names(shares: dict[str, float], index: np.ndarray) -> pl.Series:
    return pl.Series(list(shares), dtype=pl.String).gather(index)


def _effect(table: dict[str, float], shares: dict[str, float], index: np.ndarray) -> np.ndarray:
    return np.array([table[name] for name in shares])[index]


def _hex_ids(rng: np.random.Generator, size: int) -> pl.Series:
    raw = rng.integers(0, 256, size=(size, 16), dtype=np.uint8)
    nibbles = np.empty((size, 32), dtype=np.uint8)
    nibbles[:, 0::2] = raw >> 4
    nibbles[:, 1::2] = raw & 15
    ascii_hex = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[nibbles]
    return pl.Series("event_id", ascii_hex.view("S32").ravel()).cast(pl.String)


def _orders(rng: np.random.Generator, n: int, start: datetime, days: int) -> pl.DataFrame:
    n_customers = max(10, n // 6)
    popularity = 1.0 / np.arange(10, n_customers + 10) ** 0.9
    customer = rng.choice(n_customers, size=n, p=popularity / popularity.sum())
    customer_country = _choice(rng, COUNTRY_SHARE, n_customers)
    customer_device = _choice(rng, DEVICE_SHARE, n_customers)

    hours = rng.choice(24, size=n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    micros = (rng.integers(0, days, size=n) * 86_400 + hours * 3_600) * 1_000_000 + rng.integers(
        0, 3_600_000_000, size=n
    )
    micros.sort()
    start_us = int(start.timestamp() * 1_000_000)

    device = np.where(rng.random(n) < 0.7, customer_device[customer], _choice(rng, DEVICE_SHARE, n))
    channel = _choice(rng, CHANNEL_SHARE, n)
    category = _choice(rng, CATEGORY_SHARE, n)
    n_items = (1 + rng.poisson(_effect(CATEGORY_ITEMS, CATEGORY_SHARE, category))).clip(1, 20)
    unit_price = _effect(CATEGORY_PRICE, CATEGORY_SHARE, category) * rng.lognormal(0.0, 0.45, n)
    basket = np.round(n_items * unit_price, 2)
    shipping = np.where(basket >= FREE_SHIPPING_FROM, 0.0, SHIPPING_FEE)
    promo_channel = np.isin(channel, [list(CHANNEL_SHARE).index(c) for c in ("email", "affiliate")])
    discounted = rng.random(n) < np.where(promo_channel, 0.45, 0.2)
    discount = np.where(discounted, np.round(basket * rng.uniform(0.05, 0.25, size=n), 2), np.nan)
    total = np.round(basket + shipping - np.nan_to_num(discount), 2)

    logit = (
        RETURN_BASE
        + _effect(RETURN_CATEGORY, CATEGORY_SHARE, category)
        + _effect(RETURN_DEVICE, DEVICE_SHARE, device)
        + _effect(RETURN_CHANNEL, CHANNEL_SHARE, channel)
        + RETURN_SINGLE_ITEM * (n_items == 1)
        + RETURN_DISCOUNTED * discounted
        + RETURN_PRICEY_ITEM * (basket / n_items > 100)
    )
    proba = 1.0 / (1.0 + np.exp(-logit))
    returned = (rng.random(n) < proba).astype(np.int8)

    return pl.DataFrame(
        {
            "event_id": _hex_ids(rng, n),
            "event_us": micros + start_us,
            "order_id": pl.Series(np.arange(1, n + 1)).cast(pl.String).str.zfill(8),
            "customer_id": pl.Series(customer + 1).cast(pl.String).str.zfill(6),
            "country": _names(COUNTRY_SHARE, customer_country[customer]),
            "device": _names(DEVICE_SHARE, device),
            "channel": _names(CHANNEL_SHARE, channel),
            "main_category": _names(CATEGORY_SHARE, category),
            "n_items": n_items.astype(np.int32),
            "basket_value": basket,
            "shipping_fee": shipping,
            "discount": discount,
            "order_total": total,
            "is_returned": returned,
            "return_proba": proba,
        },
        nan_to_null=True,
    ).with_columns(
        pl.concat_str(pl.lit("ORD-"), "order_id").alias("order_id"),
        pl.concat_str(pl.lit("CUST-"), "customer_id").alias("customer_id"),
    )


def _make_untidy(rng: np.random.Generator, frame: pl.DataFrame, dirt: Dirt) -> pl.DataFrame:
    n = frame.height
    updates = []
    for column, rate in (
        ("channel", dirt.missing_rate),
        ("device", dirt.missing_rate / 3),
        ("main_category", dirt.missing_rate / 3),
        ("country", dirt.missing_rate / 3),
    ):
        missing = pl.Series(rng.random(n) < rate)
        updates.append(pl.when(missing).then(None).otherwise(pl.col(column)).alias(column))
    frame = frame.with_columns(updates)
    untidy = []
    for column in ("country", "device", "channel", "main_category"):
        style = pl.Series(np.where(rng.random(n) < dirt.untidy_rate, rng.integers(1, 5, size=n), 0))
        col = pl.col(column)
        untidy.append(
            pl.when(style == 1)
            .then(pl.concat_str(pl.lit("  "), col.str.to_uppercase()))
            .when(style == 2)
            .then(pl.concat_str(col.str.to_titlecase(), pl.lit(" ")))
            .when(style == 3)
            .then(pl.concat_str(pl.lit(" "), col.str.to_lowercase(), pl.lit("  ")))
            .when(style == 4)
            .then(col.str.to_uppercase())
            .otherwise(col)
            .alias(column)
        )
    return frame.with_columns(untidy)


def _with_duplicates(rng: np.random.Generator, frame: pl.DataFrame, duplicates: int) -> pl.Series:
    """JSON lines of every event, re-sent copies and later corrections, in time order."""
    frame = frame.with_columns(pl.col("event_us").alias("emit_us"))
    if duplicates:
        picked = frame[rng.integers(0, frame.height, size=duplicates)]
        is_correction = pl.Series(rng.random(duplicates) < 0.3)
        delay = pl.Series(rng.integers(1_000_000, 3_600_000_000, size=duplicates))
        share = pl.Series(np.round(rng.uniform(0.05, 0.2, size=duplicates), 2))
        corrected_discount = (pl.col("basket_value") * share).round(2)
        copies = picked.with_columns(
            (pl.col("event_us") + delay).alias("emit_us"),
            pl.when(is_correction)
            .then(pl.col("event_us") + delay)
            .otherwise(pl.col("event_us"))
            .alias("event_us"),
            pl.when(is_correction)
            .then(corrected_discount)
            .otherwise(pl.col("discount"))
            .alias("discount"),
        ).with_columns(
            pl.when(is_correction)
            .then((pl.col("basket_value") + pl.col("shipping_fee") - pl.col("discount")).round(2))
            .otherwise(pl.col("order_total"))
            .alias("order_total"),
        )
        frame = pl.concat([frame, copies])
    lines = frame.select(
        pl.struct(
            "event_id",
            pl.from_epoch("event_us", time_unit="us")
            .dt.strftime(schema.EVENT_TIME_FORMAT)
            .alias("event_time"),
            "order_id",
            pl.struct("customer_id", "country").alias("customer"),
            pl.struct(*schema.ORDER_FIELDS).alias("order"),
        )
        .struct.json_encode()
        .alias("line")
    ).to_series()
    if duplicates:
        lines = lines.gather(np.argsort(frame["emit_us"].to_numpy(), kind="stable"))
    return lines


BAD_LINE_KINDS = (
    "truncated",
    "not_json",
    "missing_order",
    "missing_is_returned",
    "missing_n_items",
    "n_items_word",
    "basket_value_word",
    "null_event_id",
    "epoch_event_time",
    "customer_array",
)


def _bad_lines(rng: np.random.Generator, lines: pl.Series, count: int) -> list[str]:
    """Malformed lines for robustness tests: each kind in turn, built from real events."""
    bad: list[str] = []
    sources = rng.integers(0, len(lines), size=count)
    for i, source in enumerate(sources.tolist()):
        kind = BAD_LINE_KINDS[i % len(BAD_LINE_KINDS)]
        text = lines[source]
        event = json.loads(text)
        event["event_id"] = f"bad-{i:06d}-{event['event_id'][:8]}"
        if kind == "truncated":
            out = json.dumps(event, separators=(",", ":"))
            bad.append(out[: len(out) // 2])
            continue
        if kind == "not_json":
            bad.append(f"this is not an event #{i}")
            continue
        if kind == "missing_order":
            del event["order"]
        elif kind == "missing_is_returned":
            del event["order"]["is_returned"]
        elif kind == "missing_n_items":
            del event["order"]["n_items"]
        elif kind == "n_items_word":
            event["order"]["n_items"] = "three"
        elif kind == "basket_value_word":
            event["order"]["basket_value"] = "lots"
        elif kind == "null_event_id":
            event["event_id"] = None
        elif kind == "epoch_event_time":
            parsed = datetime.strptime(event["event_time"], "%Y-%m-%dT%H:%M:%S.%fZ")
            event["event_time"] = int(parsed.replace(tzinfo=UTC).timestamp() * 1000)
        elif kind == "customer_array":
            event["customer"] = [event["customer"]["customer_id"]]
        bad.append(json.dumps(event, separators=(",", ":")))
    return bad
