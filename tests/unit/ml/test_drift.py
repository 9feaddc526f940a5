"""Drift: the training profile kept in a model's metadata and the PSI of scored events."""

from __future__ import annotations

import numpy as np
import polars as pl

from orderpipe.ml.drift import PSI_FLAG, drift_table, model_features, training_profile
from orderpipe.ml.features import CLASSIFICATION


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


def test_the_same_population_does_not_drift_and_a_shifted_one_is_flagged() -> None:
    spec = CLASSIFICATION
    profile = training_profile(model_features(_clean(20_000, 1), spec), spec)
    same = drift_table(profile, _clean(5_000, 2), spec)
    assert same["feature"].to_list() == spec.columns
    assert same["psi"].max() < 0.02 and not same["flagged"].any()
    shifted = drift_table(profile, _clean(5_000, 3, price=120.0, mobile=0.95), spec)
    flagged = set(shifted.filter(pl.col("flagged"))["feature"])
    assert {"basket_value", "device"} <= flagged
    assert "country" not in flagged and "event_hour" not in flagged
    assert shifted.filter(pl.col("feature") == "basket_value")["psi"][0] > PSI_FLAG


def test_unseen_categories_and_missing_values_count_as_drift() -> None:
    spec = CLASSIFICATION
    profile = training_profile(model_features(_clean(10_000, 4), spec), spec)
    scored = _clean(2_000, 5).with_columns(
        pl.lit("never-seen").alias("country"), pl.lit(None, dtype=pl.Float64).alias("n_items")
    )
    table = drift_table(profile, scored, spec)
    psi = dict(zip(table["feature"], table["psi"], strict=True))
    assert psi["country"] > PSI_FLAG  # all of it in "(other)"
    assert psi["n_items"] > PSI_FLAG  # all of it in the missing bin
    assert profile["channel"]["shares"]["(missing)"] > 0  # a missing category has its share
