"""Drift of a model's inputs: the training data's profile, kept in the model's metadata, and the
population stability index (PSI) of the events scored since against it.

PSI = sum over bins of (new share - training share) * ln(new share / training share); bins are
the training deciles of a number (plus one for a missing value) or the training categories.
Above 0.2 is the usual line for a shift worth a look.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from orderpipe.ml.features import DERIVED, FeatureSpec

PSI_FLAG = 0.2
MAX_CATEGORIES = 30  # a category beyond the 30 most frequent counts as "(other)"
OTHER, MISSING = "(other)", "(missing)"
_FLOOR = 1e-4  # an empty bin's share, so ln() stays finite


def model_features(clean: pl.DataFrame, spec: FeatureSpec, pipeline: Any) -> pl.DataFrame:
    """The features the model's estimator sees, derived by the fitted Pipeline's own steps (the
    weekday before it is one-hot encoded)."""
    steps = pipeline[0].named_transformers_  # the fitted ColumnTransformer's transformers
    derived: dict[str, pl.Series] = {}
    for name in spec.derived:
        step = steps[name]
        if name == "day_of_week" and hasattr(step, "steps"):
            step = step[0]  # DayOfWeek, before the imputer and the encoder
        values = step.transform(clean.select(DERIVED[name])) if clean.height else []
        if hasattr(values, "toarray"):  # a sparse block
            values = values.toarray()
        derived[name] = pl.Series(name, np.asarray(values, dtype=np.float64).ravel())
    return pl.DataFrame(
        [derived[name] if name in derived else clean[name] for name in spec.columns]
    )


def training_profile(features: pl.DataFrame, spec: FeatureSpec) -> dict[str, Any]:
    """Per feature: its bins and the share of the training rows in each."""
    profile: dict[str, Any] = {}
    for name in spec.columns:
        column = features[name]
        if name in spec.categorical:
            shares = (
                column.cast(pl.String).fill_null(MISSING).value_counts(normalize=True, sort=True)
            )
            top = shares.head(MAX_CATEGORIES)
            kept = dict(zip(top[name].to_list(), top["proportion"].to_list(), strict=True))
            rest = 1.0 - sum(kept.values())
            profile[name] = {"kind": "category", "shares": {**kept, OTHER: max(rest, 0.0)}}
        else:
            values = column.cast(pl.Float64).drop_nulls().drop_nans()
            edges = (
                sorted({float(values.quantile(q / 10, "lower")) for q in range(1, 10)})
                if values.len()
                else []
            )
            profile[name] = {
                "kind": "number",
                "edges": edges,
                "shares": _number_shares(column, edges),
            }
    return profile


def _number_shares(column: pl.Series, edges: list[float]) -> list[float]:
    """Shares per bin (-inf, e1], (e1, e2], ..., (ek, inf), then missing."""
    values = column.cast(pl.Float64).to_numpy()
    missing = np.isnan(values)
    counts = np.bincount(
        np.searchsorted(np.asarray(edges), values[~missing], side="left"),
        minlength=len(edges) + 1,
    )
    total = max(len(values), 1)
    return [*(counts / total).tolist(), float(missing.sum() / total)]


def stability_index(entry: dict[str, Any], column: pl.Series) -> float:
    """PSI of `column` (new values) against one feature's training profile; NaN when there
    is no new value to compare."""
    if column.len() == 0:
        return math.nan
    if entry["kind"] == "category":
        expected = entry["shares"]
        counts = column.cast(pl.String).fill_null(MISSING).value_counts()
        name = column.name
        actual: dict[str, float] = {}
        for value, count in zip(counts[name].to_list(), counts["count"].to_list(), strict=True):
            key = value if value in expected else OTHER
            actual[key] = actual.get(key, 0.0) + count / max(column.len(), 1)
        pairs = [(actual.get(key, 0.0), share) for key, share in expected.items()]
    else:
        pairs = list(zip(_number_shares(column, entry["edges"]), entry["shares"], strict=True))
    total = 0.0
    for new, old in pairs:
        new, old = max(new, _FLOOR), max(old, _FLOOR)
        total += (new - old) * math.log(new / old)
    return total


def drift_table(
    profile: dict[str, Any], scored: pl.DataFrame, spec: FeatureSpec, pipeline: Any
) -> pl.DataFrame:
    """feature, psi, flagged: the scored events' features against the training profile."""
    features = model_features(scored, spec, pipeline)
    rows = [
        (name, stability_index(profile[name], features[name]))
        for name in spec.columns
        if name in profile
    ]
    return pl.DataFrame(
        {
            "feature": [name for name, _ in rows],
            "psi": [value for _, value in rows],
            "flagged": [value > PSI_FLAG for _, value in rows],
        },
        schema={"feature": pl.String, "psi": pl.Float64, "flagged": pl.Boolean},
    )
