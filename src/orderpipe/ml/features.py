"""The model inputs, defined once for training, batch scoring and the stream consumer.

Identifiers and anything that leaks the target are out; so are calendar parts that cannot
generalise (year, day of month). Every source (raw event, clean CSV row, Kafka message) is
cleaned into the clean record first, then `model_inputs` builds the same columns from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

CATEGORICAL = ("country", "device", "channel", "main_category")


@dataclass(frozen=True)
class FeatureSpec:
    """What one model reads and predicts."""

    name: str
    target: str
    categorical: tuple[str, ...]
    numeric: tuple[str, ...]

    @property
    def columns(self) -> list[str]:
        return [*self.categorical, *self.numeric]

    def dtypes(self) -> dict[str, str]:
        return {**dict.fromkeys(self.categorical, "string"), **dict.fromkeys(self.numeric, "float")}


# Return probability: everything known when the order is placed.
CLASSIFICATION = FeatureSpec(
    name="classification",
    target="is_returned",
    categorical=CATEGORICAL,
    numeric=(
        "n_items",
        "basket_value",
        "shipping_fee",
        "discount",
        "order_total",
        "price_average_per_item",
        "has_discount",
        "event_hour",
        "day_of_week",
    ),
)

# Basket value: not order_total, shipping_fee, discount or price per item (all derived from it).
REGRESSION = FeatureSpec(
    name="regression",
    target="basket_value",
    categorical=CATEGORICAL,
    numeric=("n_items", "event_hour", "day_of_week"),
)

SPECS = {spec.name: spec for spec in (CLASSIFICATION, REGRESSION)}


def model_inputs(clean: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """The spec's input columns, in order, from clean records (missing values stay missing)."""
    derived = {
        "has_discount": (pl.col("discount").fill_null(0.0) > 0).cast(pl.Float64),
        "day_of_week": pl.col("event_time").dt.weekday().cast(pl.Float64),
    }
    return clean.select(
        *[pl.col(name).cast(pl.String) for name in spec.categorical],
        *[
            (derived[name] if name in derived else pl.col(name)).cast(pl.Float64).alias(name)
            for name in spec.numeric
        ],
    )


def target(clean: pl.DataFrame, spec: FeatureSpec) -> pl.Series:
    """The column the model learns."""
    return clean[spec.target]
