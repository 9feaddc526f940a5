"""How untidy the generated file is (`Dirt`), and the untidiness itself: missing values, dirty
text, re-sent copies and later corrections of events, and malformed lines of every kind."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from orderpipe.core.errors import OrderpipeError

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


def make_untidy(frame: pl.DataFrame, drawn: dict[str, Any]) -> pl.DataFrame:
    """The order frame with the drawn missing values and untidy spellings of its text columns."""
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


def copies(frame: pl.DataFrame, picks: dict[str, np.ndarray], first_copy: int) -> pl.DataFrame:
    """Re-sent copies of the events at `picks["index"]`, emitted `delay` later; a correction
    also moves its event time and changes its discount (and so its total)."""
    is_correction = pl.Series(picks["correction"])
    delay = pl.Series(picks["delay"])
    corrected_discount = (pl.col("basket_value") * pl.Series(picks["share"])).round(2)
    return (
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
            .then((pl.col("basket_value") + pl.col("shipping_fee") - pl.col("discount")).round(2))
            .otherwise(pl.col("order_total"))
            .alias("order_total"),
        )
    )


def bad_frame(lines: pl.DataFrame, sources: np.ndarray, first: int) -> pl.DataFrame:
    """Bad lines number `first`, ... made from the events at `sources`, each placed right after
    its source."""
    picked = lines[sources]
    return pl.DataFrame(
        {
            "emit_us": picked["emit_us"],
            "rank": pl.Series([2] * len(sources), dtype=pl.Int8),
            "tie": pl.Series(range(first, first + len(sources)), dtype=pl.Int64),
            "line": [bad_line(first + i, text) for i, text in enumerate(picked["line"])],
        }
    )


def bad_line(i: int, text: str) -> str:
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
