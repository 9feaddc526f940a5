"""One chunk of the events file: its units' orders as JSON lines in the file's order (with
their copies and bad lines), their truth, and what carries over to the next chunk (`State`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from orderpipe.core import schema
from orderpipe.generate.dirt import Dirt, bad_frame, copies, make_untidy
from orderpipe.generate.draw import DAY_US, Plan, draw_unit
from orderpipe.generate.world import (
    CATEGORY_SHARE,
    CHANNEL_SHARE,
    COUNTRY_SHARE,
    DEVICE_SHARE,
    names,
    order_values,
)


@dataclass
class State:
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


def chunk(plan: Plan, units: range, state: State, dirt: Dirt) -> tuple[pl.Series, pl.DataFrame]:
    """The lines of `units` due now (later copies wait in `state`) and their truth."""
    drawn = [draw_unit(plan, unit, dirt) for unit in units]
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
    frame = orders(plan, arrays, state)
    truth = frame.select("event_id", "return_proba")
    frame = make_untidy(frame, arrays)
    lines = json_lines(
        frame, picks, int(plan.offsets[units[0]]), int(plan.copies[: units[0]].sum())
    )
    if len(arrays["bad"]):
        first = state.bad_made
        state.bad_made += len(arrays["bad"])
        lines = pl.concat([lines, bad_frame(lines, arrays["bad"], first)])
    last = units[-1] == plan.units - 1
    return state.due(lines, None if last else int(frame["event_us"][-1])), truth


def orders(plan: Plan, drawn: dict[str, Any], state: State) -> pl.DataFrame:
    """The drawn orders, tidy, in the contract's flat shape (and their true return probability)."""
    values = order_values(drawn)
    day = drawn["event_us"] // DAY_US
    return pl.DataFrame(
        {
            "event_id": hex_ids(drawn["id_bytes"]),
            "event_us": drawn["event_us"],
            "order_day": day,
            "order_number": state.order_numbers(day),
            "customer_id": drawn["customer"] + 1,
            "country": names(COUNTRY_SHARE, drawn["country"]),
            "device": names(DEVICE_SHARE, drawn["device"]),
            "channel": names(CHANNEL_SHARE, drawn["channel"]),
            "main_category": names(CATEGORY_SHARE, drawn["category"]),
            **values,
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


def json_lines(
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
        frame = pl.concat([frame, copies(frame, picks, first_copy)])
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


def hex_ids(raw: np.ndarray) -> pl.Series:
    """Event ids: 32 lowercase hex digits of 16 drawn bytes each."""
    size = len(raw)
    nibbles = np.empty((size, 32), dtype=np.uint8)
    nibbles[:, 0::2] = raw >> 4
    nibbles[:, 1::2] = raw & 15
    ascii_hex = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[nibbles]
    return pl.Series("event_id", ascii_hex.view("S32").ravel()).cast(pl.String)
