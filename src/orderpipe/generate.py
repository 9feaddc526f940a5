"""Synthetic order events in the raw contract shape, vectorised with numpy and polars.

Seeded and byte-for-byte reproducible; recurring customers, price levels per category, return
probability from clear rules (the truth is saved beside the file), and optional dirt.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from orderpipe import schema
from orderpipe.errors import OrderpipeError
from orderpipe.faults import crash_point
from orderpipe.fileio import (
    atomic_path,
    disk_full_as_error,
    leftovers,
    remove_leftovers,
    temporary_path,
)
from orderpipe.layout import truth_for

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
# For a full disk's message before a chunk is written: bytes per event of the JSON Lines file
# (~370 at the default dirt), and the truth file's size beside it (~5 %).
BYTES_PER_EVENT, TRUTH_SHARE = 400, 0.06

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


# Events come from fixed units of UNIT events, each with a random stream of its own (keyed by the
# run's seed, start, days and size, and the unit's index), so the file does not depend on how many
# units are generated and written at a time: memory follows `chunk_size`, not `--events`.
UNIT = 1 << 16
DEFAULT_CHUNK = 1 << 18  # events generated, encoded and written at a time
DAY_US, HOUR_US = 86_400_000_000, 3_600_000_000
HOUR_CDF = np.concatenate([[0.0], np.cumsum(HOUR_WEIGHTS) / HOUR_WEIGHTS.sum()])
COPY_DELAY_US = (1_000_000, 3_600_000_000)  # a re-sent or corrected event follows within an hour
CUSTOMER_SALT = {"country": 0x5C0FFEE, "device": 0xDE71CE}
Progress = Callable[[int, int], None]  # (events done, events in all)


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
    start: datetime = DEFAULT_START
    days: int = 60


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
    chunk_size: int = DEFAULT_CHUNK,
    progress: Progress | None = None,
) -> GenerateResult:
    """Write `events` distinct raw events (plus duplicates and bad lines) as JSON Lines, in time
    order, `chunk_size` events at a time; the truth (event_id, return_proba) goes beside it.

    Runs with successive `start`/`days` simulate successive days: event ids are random, order
    ids carry their day and the run (ORD-YYYYMMDD-<run>-n), customers recur with the same
    country in every run.
    """
    if events < 1:
        raise OrderpipeError("--events must be at least 1")
    if days < 1:
        raise OrderpipeError("--days must be at least 1")
    if seed < 0:
        raise OrderpipeError("--seed must be 0 or more")
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    dirt = dirt or Dirt()
    began = time.perf_counter()
    finish_pending_truth(truth_for(output))  # of a run killed after its events' rename
    # of generate runs killed before they could (only this output's: the folder is the user's)
    remove_leftovers(output.parent, {output.name, truth_for(output).name})
    plan = _Plan.make(events, seed, start, days, dirt)
    units_per_chunk = max(1, chunk_size // UNIT)
    truth_path = truth_for(output)
    parts = output.with_name(f".{output.name}.truth-parts-{os.getpid()}")
    written = 0
    done = [0, 0]  # events and bytes written so far: what a full disk's message extrapolates

    def needed() -> int:
        per_event = done[1] / done[0] if done[0] else BYTES_PER_EVENT
        return int(per_event * events * (1 + TRUTH_SHARE))

    # The events file's rename is the commit; the truth is written before it and renamed after
    # it (a run killed in between leaves it pending: `finish_pending_truth`).
    pending_truth = temporary_path(truth_path)
    committed = False
    # around the cleanup too: the space is measured once the run's own files are gone
    with disk_full_as_error("the raw events", output, needed):
        try:
            parts.mkdir(parents=True, exist_ok=True)
            with atomic_path(output) as tmp, tmp.open("wb") as sink:
                state = _State()
                for first in range(0, plan.units, units_per_chunk):
                    units = range(first, min(first + units_per_chunk, plan.units))
                    lines, truth = _chunk(plan, units, state, dirt)
                    lines.to_frame("line").write_csv(
                        sink, include_header=False, quote_style="never"
                    )
                    truth.write_parquet(parts / f"{first:08d}.parquet")
                    written += lines.len()
                    done[:] = [int(plan.offsets[units[-1] + 1]), sink.tell()]
                    if progress:
                        progress(done[0], events)
                    crash_point("generate.chunk-written")
                sink.flush()
                pl.scan_parquet(parts / "*.parquet").sink_parquet(pending_truth)
            committed = True  # the events file is in place
            crash_point("generate.events-moved")
            os.replace(pending_truth, truth_path)
        finally:
            shutil.rmtree(parts, ignore_errors=True)
            if not committed:
                pending_truth.unlink(missing_ok=True)
    return GenerateResult(
        output=output,
        truth=truth_path,
        events=events,
        duplicates=plan.duplicates,
        bad_lines=dirt.bad_lines,
        lines=written,
        seed=seed,
        seconds=time.perf_counter() - began,
        start=start,
        days=days,
    )


_EVENT_ID = re.compile(rb'"event_id"\s*:\s*"([^"]{1,64})"')


def finish_pending_truth(truth: Path) -> bool:
    """Move into place the truth file that a generate run killed after its events file's rename
    left pending: a leftover that holds event ids of the first lines of the events file it sits
    beside (ids are random per run). True when it did (train calls this before it reads it)."""
    pending = leftovers(truth.parent, {truth.name})
    if not pending:
        return False
    stem = truth.name.removesuffix(".truth.parquet")
    raws = [
        path
        for path in truth.parent.glob(f"{glob.escape(stem)}.*")
        if path.is_file() and path != truth and truth_for(path) == truth
    ]
    if not raws:
        return False
    with raws[0].open("rb") as lines:
        ids = {
            match[1].decode("utf-8", "replace")
            for line in itertools.islice(lines, 5_000)
            if (match := _EVENT_ID.search(line))
        }
    for candidate in pending:
        try:
            met = (
                pl.scan_parquet(candidate)
                .filter(pl.col("event_id").is_in(sorted(ids)))
                .select(pl.len())
                .collect()
                .item()
            )
        except (pl.exceptions.PolarsError, OSError):
            continue
        if ids and met:
            os.replace(candidate, truth)
            return True
    return False


@dataclass(frozen=True)
class _Plan:
    """What is drawn once for the whole run: unit sizes, where each unit's times fall, and how
    many copies and bad lines each unit gets."""

    key: tuple[int, ...]
    events: int
    start_us: int
    days: int
    customers: int
    offsets: np.ndarray  # first event of each unit (units + 1 entries)
    spans: np.ndarray  # per unit: the Gamma-distributed sum of its exponential spacings
    prefix: np.ndarray  # per unit: the spacings before it
    total: float  # every spacing, the one after the last event included
    copies: np.ndarray  # per unit: duplicate lines
    bad: np.ndarray  # per unit: bad lines
    duplicates: int

    @property
    def units(self) -> int:
        return len(self.spans)

    @classmethod
    def make(cls, events: int, seed: int, start: datetime, days: int, dirt: Dirt) -> _Plan:
        start_us = round(start.timestamp() * 1_000_000)
        key = (seed, start.toordinal(), start_us % DAY_US, days, events)
        rng = np.random.default_rng(np.random.SeedSequence(key))
        sizes = np.full(-(-events // UNIT), UNIT, dtype=np.int64)
        sizes[-1] = events - UNIT * (len(sizes) - 1)
        # The i-th of n sorted uniforms is S_i / S_(n+1), S the running sum of n + 1 exponential
        # spacings. A unit's spacings sum to a Gamma(size) draw made here; the unit draws their
        # shares itself. Times are then in order across units, whatever unit makes them.
        spans = rng.standard_gamma(sizes.astype(float))
        total = float(spans.sum() + rng.standard_exponential())
        share = sizes / events
        duplicates = events // 50 if dirt.duplicates is None else dirt.duplicates
        return cls(
            key=key,
            events=events,
            start_us=start_us,
            days=days,
            customers=max(10, events // 6),
            offsets=np.concatenate([[0], np.cumsum(sizes)]),
            spans=spans,
            prefix=np.concatenate([[0.0], np.cumsum(spans)[:-1]]),
            total=total,
            copies=rng.multinomial(duplicates, share),
            bad=rng.multinomial(dirt.bad_lines, share),
            duplicates=duplicates,
        )

    @property
    def run_tag(self) -> str:
        """Six hex digits naming the run (seed, start, days, events): order ids of two runs
        differ even when their days overlap; the same run again gives the same ids."""
        return f"{int(np.random.SeedSequence(self.key).generate_state(1)[0]) & 0xFFFFFF:06x}"

    def rng(self, unit: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self.key, spawn_key=(unit,)))


@dataclass
class _State:
    """What carries over from one chunk to the next: lines due later (a copy sent within the
    hour after its event), the order number reached on the last day, and the bad lines made."""

    pending: pl.DataFrame | None = None
    day: int | None = None
    day_count: int = 0
    bad_made: int = 0

    def due(self, lines: pl.DataFrame, until_us: int | None) -> pl.Series:
        """The lines due up to the chunk's last event (all when `until_us` is None), in order;
        later ones wait for the next chunk."""
        if self.pending is not None:
            lines = pl.concat([self.pending, lines])
        lines = lines.sort("emit_us", "rank", "tie")
        if until_us is None:
            self.pending = None
            return lines["line"]
        now = (pl.col("emit_us") < until_us) | (
            (pl.col("emit_us") == until_us) & (pl.col("rank") == 0)
        )
        self.pending = lines.filter(~now)
        return lines.filter(now)["line"]

    def order_numbers(self, day: np.ndarray) -> np.ndarray:
        """1, 2, ... per calendar day, counting on from the last chunk's day."""
        index = np.arange(len(day))
        new_day = np.concatenate([[True], day[1:] != day[:-1]])
        numbers = index - np.maximum.accumulate(np.where(new_day, index, 0)) + 1
        if self.day is not None:
            numbers[day == self.day] += self.day_count
        self.day, self.day_count = int(day[-1]), int(numbers[-1])
        return numbers


def _chunk(plan: _Plan, units: range, state: _State, dirt: Dirt) -> tuple[pl.Series, pl.DataFrame]:
    """The lines of `units` due now (later copies wait in `state`) and their truth."""
    drawn = [_draw(plan, unit, dirt) for unit in units]
    arrays = {
        name: np.concatenate([d[name] for d in drawn]) for name in drawn[0] if name != "picks"
    }
    # picks and bad lines point into their unit: make them point into the chunk
    bases = np.asarray(plan.offsets[list(units)] - plan.offsets[units[0]])
    picks = {
        name: np.concatenate([d["picks"][name] for d in drawn])
        for name in ("index", "correction", "delay", "share")
    }
    picks["index"] = picks["index"] + np.repeat(bases, plan.copies[list(units)])
    arrays["bad"] = arrays["bad"] + np.repeat(bases, plan.bad[list(units)])
    frame = _orders(plan, arrays, state)
    truth = frame.select("event_id", "return_proba")
    frame = _make_untidy(frame, arrays)
    lines = _lines(frame, picks, int(plan.offsets[units[0]]), int(plan.copies[: units[0]].sum()))
    if len(arrays["bad"]):
        lines = pl.concat([lines, _bad_frame(lines, arrays["bad"], state)])
    last = units[-1] == plan.units - 1
    return state.due(lines, None if last else int(frame["event_us"][-1])), truth


def _draw(plan: _Plan, unit: int, dirt: Dirt) -> dict[str, Any]:
    """Every random number of one unit, in a fixed order, from the unit's own stream."""
    rng = plan.rng(unit)
    n = int(plan.offsets[unit + 1] - plan.offsets[unit])
    spacing = np.cumsum(rng.standard_exponential(n))
    position = (plan.prefix[unit] + spacing / spacing[-1] * plan.spans[unit]) / plan.total
    customer = _customer_numbers(rng.random(n), plan.customers)
    preferred = _hashed_choice(customer, DEVICE_SHARE, CUSTOMER_SALT["device"])
    drawn: dict[str, Any] = {
        "event_us": plan.start_us + _time_of(position, plan.days),
        "customer": customer,
        "country": _hashed_choice(customer, COUNTRY_SHARE, CUSTOMER_SALT["country"]),
        "device": np.where(rng.random(n) < 0.7, preferred, _choice(rng, DEVICE_SHARE, n)),
        "channel": _choice(rng, CHANNEL_SHARE, n),
        "category": _choice(rng, CATEGORY_SHARE, n),
    }
    drawn["poisson"] = rng.poisson(_effect(CATEGORY_ITEMS, CATEGORY_SHARE, drawn["category"]))
    drawn["price"] = rng.lognormal(0.0, 0.45, n)
    drawn["discount_draw"] = rng.random(n)
    drawn["discount_share"] = rng.uniform(0.05, 0.25, size=n)
    drawn["return_draw"] = rng.random(n)
    drawn["id_bytes"] = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    for column, rate in (
        ("channel", dirt.missing_rate),
        ("device", dirt.missing_rate / 3),
        ("main_category", dirt.missing_rate / 3),
        ("country", dirt.missing_rate / 3),
    ):
        drawn[f"missing_{column}"] = rng.random(n) < rate
    for column in ("country", "device", "channel", "main_category"):
        drawn[f"style_{column}"] = np.where(
            rng.random(n) < dirt.untidy_rate, rng.integers(1, 5, size=n), 0
        )
    copies = int(plan.copies[unit])
    drawn["picks"] = {
        "index": rng.integers(0, n, size=copies),
        "correction": rng.random(copies) < 0.3,
        "delay": rng.integers(*COPY_DELAY_US, size=copies),
        "share": np.round(rng.uniform(0.05, 0.2, size=copies), 2),
    }
    drawn["bad"] = rng.integers(0, n, size=int(plan.bad[unit]))
    return drawn


def _orders(plan: _Plan, drawn: dict[str, Any], state: _State) -> pl.DataFrame:
    category, device, channel = drawn["category"], drawn["device"], drawn["channel"]
    n_items = (1 + drawn["poisson"]).clip(1, 20)
    unit_price = _effect(CATEGORY_PRICE, CATEGORY_SHARE, category) * drawn["price"]
    basket = np.round(n_items * unit_price, 2)
    shipping = np.where(basket >= FREE_SHIPPING_FROM, 0.0, SHIPPING_FEE)
    promo_channel = np.isin(channel, [list(CHANNEL_SHARE).index(c) for c in ("email", "affiliate")])
    discounted = drawn["discount_draw"] < np.where(promo_channel, 0.45, 0.2)
    discount = np.where(discounted, np.round(basket * drawn["discount_share"], 2), np.nan)
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
    returned = (drawn["return_draw"] < proba).astype(np.int8)
    day = drawn["event_us"] // DAY_US

    return pl.DataFrame(
        {
            "event_id": _hex_ids(drawn["id_bytes"]),
            "event_us": drawn["event_us"],
            "order_day": day,
            "order_number": state.order_numbers(day),
            "customer_id": drawn["customer"] + 1,
            "country": _names(COUNTRY_SHARE, drawn["country"]),
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
    ).select(
        "event_id",
        "event_us",
        pl.concat_str(
            pl.lit("ORD-"),
            pl.from_epoch("order_day", time_unit="d").dt.strftime("%Y%m%d"),
            pl.lit(f"-{plan.run_tag}-"),
            pl.col("order_number").cast(pl.String).str.zfill(7),
        ).alias("order_id"),
        pl.concat_str(pl.lit("CUST-"), pl.col("customer_id").cast(pl.String).str.zfill(6)).alias(
            "customer_id"
        ),
        pl.exclude("event_id", "event_us", "order_day", "order_number", "customer_id"),
    )


def _make_untidy(frame: pl.DataFrame, drawn: dict[str, Any]) -> pl.DataFrame:
    frame = frame.with_columns(
        pl.when(pl.Series(drawn[f"missing_{column}"]))
        .then(None)
        .otherwise(pl.col(column))
        .alias(column)
        for column in ("channel", "device", "main_category", "country")
    )
    untidy = []
    for column in ("country", "device", "channel", "main_category"):
        style = pl.Series(drawn[f"style_{column}"])
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


def _lines(
    frame: pl.DataFrame, picks: dict[str, np.ndarray], first: int, first_copy: int
) -> pl.DataFrame:
    """JSON lines of every event, re-sent copies and later corrections, with the key that puts
    them in the file's order: (emit time, original before copy before bad line, number)."""
    frame = frame.with_columns(
        pl.col("event_us").alias("emit_us"),
        pl.lit(0, dtype=pl.Int8).alias("rank"),
        (pl.int_range(pl.len(), dtype=pl.Int64) + first).alias("tie"),
    )
    if len(picks["index"]):
        is_correction = pl.Series(picks["correction"])
        delay = pl.Series(picks["delay"])
        corrected_discount = (pl.col("basket_value") * pl.Series(picks["share"])).round(2)
        copies = (
            frame[picks["index"]]
            .with_columns(
                (pl.col("event_us") + delay).alias("emit_us"),
                pl.when(is_correction)
                .then(pl.col("event_us") + delay)
                .otherwise(pl.col("event_us"))
                .alias("event_us"),
                pl.when(is_correction)
                .then(corrected_discount)
                .otherwise(pl.col("discount"))
                .alias("discount"),
                pl.lit(1, dtype=pl.Int8).alias("rank"),
                (pl.int_range(pl.len(), dtype=pl.Int64) + first_copy).alias("tie"),
            )
            .with_columns(
                pl.when(is_correction)
                .then(
                    (pl.col("basket_value") + pl.col("shipping_fee") - pl.col("discount")).round(2)
                )
                .otherwise(pl.col("order_total"))
                .alias("order_total"),
            )
        )
        frame = pl.concat([frame, copies])
    return frame.select(
        "emit_us",
        "rank",
        "tie",
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
        .alias("line"),
    )


def _bad_frame(lines: pl.DataFrame, sources: np.ndarray, state: _State) -> pl.DataFrame:
    """Bad lines made from the events at `sources`, each placed right after its source."""
    first = state.bad_made
    state.bad_made += len(sources)
    picked = lines[sources]
    return pl.DataFrame(
        {
            "emit_us": picked["emit_us"],
            "rank": pl.Series([2] * len(sources), dtype=pl.Int8),
            "tie": pl.Series(range(first, first + len(sources)), dtype=pl.Int64),
            "line": [_bad_line(first + i, text) for i, text in enumerate(picked["line"])],
        }
    )


def _time_of(position: np.ndarray, days: int) -> np.ndarray:
    """Microseconds from the start for positions in [0, 1): days alike, hours by HOUR_WEIGHTS,
    uniform within the hour; a larger position is never an earlier time."""
    x = position * days
    day = np.minimum(np.floor(x), days - 1)
    fraction = np.clip(x - day, 0.0, 1.0)
    hour = np.clip(np.searchsorted(HOUR_CDF, fraction, side="right") - 1, 0, 23)
    within = (fraction - HOUR_CDF[hour]) / (HOUR_CDF[hour + 1] - HOUR_CDF[hour])
    micros = np.minimum((within * HOUR_US).astype(np.int64), HOUR_US - 1)
    return day.astype(np.int64) * DAY_US + hour * HOUR_US + micros


def _customer_numbers(uniform: np.ndarray, customers: int) -> np.ndarray:
    """Customers 0..customers-1 with popularity ~ 1 / (i + 10)^0.9 (inverse of its CDF)."""
    low, high = 10**0.1, (customers + 10) ** 0.1
    numbers = np.floor((low + uniform * (high - low)) ** 10 - 10)
    return np.clip(numbers, 0, customers - 1).astype(np.int64)


def _hashed_choice(numbers: np.ndarray, shares: dict[str, float], salt: int) -> np.ndarray:
    """Indices into `shares` fixed by each number (the same customer, the same country, in
    every run and with every seed)."""
    z = numbers.astype(np.uint64) + np.uint64(salt) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    uniform = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
    weights = np.array(list(shares.values()))
    cumulative = np.cumsum(weights) / weights.sum()
    return np.minimum(np.searchsorted(cumulative, uniform, side="right"), len(weights) - 1)


def _choice(rng: np.random.Generator, shares: dict[str, float], size: int) -> np.ndarray:
    """Indices into `shares` drawn with its weights."""
    weights = np.array(list(shares.values()))
    return rng.choice(len(weights), size=size, p=weights / weights.sum())


def _names(shares: dict[str, float], index: np.ndarray) -> pl.Series:
    return pl.Series(list(shares), dtype=pl.String).gather(index)


def _effect(table: dict[str, float], shares: dict[str, float], index: np.ndarray) -> np.ndarray:
    return np.array([table[name] for name in shares])[index]


def _hex_ids(raw: np.ndarray) -> pl.Series:
    size = len(raw)
    nibbles = np.empty((size, 32), dtype=np.uint8)
    nibbles[:, 0::2] = raw >> 4
    nibbles[:, 1::2] = raw & 15
    ascii_hex = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[nibbles]
    return pl.Series("event_id", ascii_hex.view("S32").ravel()).cast(pl.String)


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


def _bad_line(i: int, text: str) -> str:
    """Malformed line number `i` (kinds in turn), built from a real event's line."""
    kind = BAD_LINE_KINDS[i % len(BAD_LINE_KINDS)]
    event = json.loads(text)
    event["event_id"] = f"bad-{i:06d}-{event['event_id'][:8]}"
    if kind == "truncated":
        out = json.dumps(event, separators=(",", ":"))
        return out[: len(out) // 2]
    if kind == "not_json":
        return f"this is not an event #{i}"
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
    return json.dumps(event, separators=(",", ":"))
