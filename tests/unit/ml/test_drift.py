"""Drift: the training profile kept in a model's metadata and the PSI of scored events."""

from __future__ import annotations

import numpy as np
import polars as pl

from orderpipe.ml.drift import PSI_FLAG, drift_table, model_features, training_profile
from orderpipe.ml.features import CLASSIFICATION, model_inputs
from orderpipe.ml.pipelines import binned_logistic_regression


def _clean(n: int, seed: int, *, price: float = 50.0, mobile: float = 0.5) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    basket = rng.gamma(2.0, price, n).round(2)
    discount = np.where(rng.random(n) < 0.3, (basket * 0.1).round(2), np.nan)
    return pl.DataFrame(
        {
            "country": rng.choice(["FR", "DE", "ES"], n),
            "device": np.where(rng.random(n) < mobile, "mobile", "desktop"),
            "channel": [c or None for c in rng.choice(["seo", "email", ""], n).tolist()],
            "main_category": rng.choice(["fashion", "home"], n),
            "n_items": rng.integers(1, 6, n),
            "basket_value": basket,
            "shipping_fee": np.where(basket > 50, 0.0, 4.99),
            "discount": discount,
            "order_total": basket,
            "price_average_per_item": basket / 2,
            "event_hour": rng.integers(0, 24, n),
            "event_year": np.full(n, 2026),
            "event_month": rng.integers(1, 13, n),
            "event_day": rng.integers(1, 29, n),
        },
        nan_to_null=True,
    )


def _fitted(clean: pl.DataFrame) -> object:
    returned = np.random.default_rng(0).random(clean.height) < 0.2
    pipeline = binned_logistic_regression(CLASSIFICATION)
    return pipeline.fit(model_inputs(clean, CLASSIFICATION), returned)


def test_the_same_population_does_not_drift_and_a_shifted_one_is_flagged() -> None:
    spec = CLASSIFICATION
    training = _clean(20_000, 1)
    pipeline = _fitted(training)
    profile = training_profile(model_features(training, spec, pipeline), spec)
    assert profile["has_discount"]["shares"][-1] == 0  # derived: never missing
    same = drift_table(profile, _clean(5_000, 2), spec, pipeline)
    assert same["feature"].to_list() == spec.columns
    assert same["psi"].max() < 0.02 and not same["flagged"].any()
    shifted = drift_table(profile, _clean(5_000, 3, price=120.0, mobile=0.95), spec, pipeline)
    flagged = set(shifted.filter(pl.col("flagged"))["feature"])
    assert {"basket_value", "device"} <= flagged
    assert "country" not in flagged and "event_hour" not in flagged
    assert shifted.filter(pl.col("feature") == "basket_value")["psi"][0] > PSI_FLAG


def test_unseen_categories_and_missing_values_count_as_drift() -> None:
    spec = CLASSIFICATION
    training = _clean(10_000, 4)
    pipeline = _fitted(training)
    profile = training_profile(model_features(training, spec, pipeline), spec)
    scored = _clean(2_000, 5).with_columns(
        pl.lit("never-seen").alias("country"), pl.lit(None, dtype=pl.Float64).alias("n_items")
    )
    table = drift_table(profile, scored, spec, pipeline)
    psi = dict(zip(table["feature"], table["psi"], strict=True))
    assert psi["country"] > PSI_FLAG  # all of it in "(other)"
    assert psi["n_items"] > PSI_FLAG  # all of it in the missing bin
    assert profile["channel"]["shares"]["(missing)"] > 0  # a missing category has its share


def test_an_all_missing_number_and_no_scored_event_do_not_break_the_profile() -> None:
    spec = CLASSIFICATION
    training = _clean(3_000, 6)
    pipeline = _fitted(training)
    features = model_features(training, spec, pipeline).with_columns(
        pl.lit(None, dtype=pl.Float64).alias("shipping_fee")
    )
    profile = training_profile(features, spec)
    assert profile["shipping_fee"] == {"kind": "number", "edges": [], "shares": [0.0, 1.0]}
    empty = drift_table(profile, training.head(0), spec, pipeline)
    assert empty["psi"].is_nan().all() and not empty["flagged"].any()
