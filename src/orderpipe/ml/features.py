"""The model inputs, defined once for training, batch scoring and the stream consumer.

A saved Pipeline reads clean records (the columns in `FeatureSpec.inputs`) and derives what it
needs from them itself: `has_discount` from `discount`, `day_of_week` from the event's date
parts. Identifiers and anything that leaks the target are out; so are calendar parts that cannot
generalise (year, day of month).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

CATEGORICAL = ("country", "device", "channel", "main_category")
DATE_PARTS = ("event_year", "event_month", "event_day")
# Features the Pipeline derives, and the clean columns each is derived from.
DERIVED: dict[str, tuple[str, ...]] = {"has_discount": ("discount",), "day_of_week": DATE_PARTS}


@dataclass(frozen=True)
class FeatureSpec:
    """What one model reads, derives and predicts."""

    name: str
    target: str
    categorical: tuple[str, ...]
    numeric: tuple[str, ...]

    @property
    def columns(self) -> list[str]:
        """The features the model's estimator sees (derived ones included)."""
        return [*self.categorical, *self.numeric]

    @property
    def plain_numeric(self) -> list[str]:
        """Numeric features read as they are from the clean record."""
        return [name for name in self.numeric if name not in DERIVED]

    @property
    def derived(self) -> list[str]:
        return [name for name in self.numeric if name in DERIVED]

    @property
    def inputs(self) -> list[str]:
        """The clean-record columns the saved Pipeline reads (any other column is ignored)."""
        names = [*self.categorical, *self.plain_numeric]
        for feature in self.derived:
            names += [source for source in DERIVED[feature] if source not in names]
        return names

    def dtypes(self) -> dict[str, str]:
        """The inputs' kinds: text for categories, numbers for the rest."""
        return {name: "string" if name in self.categorical else "float" for name in self.inputs}


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
    """The clean columns a model is fitted on, in order (what the saved Pipeline reads)."""
    return clean.select(spec.inputs)
