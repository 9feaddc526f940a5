"""The models' scikit-learn Pipelines: the features derived from clean columns, the encoders,
the classifier (binned logistic regression) and the regressor candidates (ridge, boosting).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from orderpipe.ml.features import DERIVED, FeatureSpec

# Quantile bins per number: enough to follow a step, few enough to learn each from 60k rows.
NUMBER_BINS = 10


def _derived(spec: FeatureSpec, *, one_hot: bool) -> list[tuple[str, Any, list[str]]]:
    """ColumnTransformer entries that derive the spec's features from clean columns, so the
    saved Pipeline scores clean records with no step outside it. One-hot (linear models) makes
    the weekday seven flags; trees read it as a number (NaN when the date is missing)."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from orderpipe.ml.transformers import DayOfWeek, Positive

    dtype = np.float32 if one_hot else np.float64
    entries: list[tuple[str, Any, list[str]]] = []
    if "has_discount" in spec.derived:  # no discount (missing or 0) -> 0, any discount -> 1
        flag = Positive(dtype=dtype, sparse_output=one_hot)
        entries.append(("has_discount", flag, list(DERIVED["has_discount"])))
    if "day_of_week" in spec.derived:
        steps: list[tuple[str, Any]] = [("weekday", DayOfWeek())]
        if one_hot:
            steps += [
                ("impute", SimpleImputer(strategy="most_frequent")),
                ("encode", OneHotEncoder(handle_unknown="ignore", dtype=dtype)),
            ]
        entries.append(("day_of_week", Pipeline(steps), list(DERIVED["day_of_week"])))
    return entries


def _categories(*, one_hot: bool) -> Any:
    """Category columns, a missing value counted as "unknown" (what etl writes for it): one-hot
    with the categories seen fewer than 20 times pooled (linear models), or codes with NaN for
    a category never seen in training (trees, which handle NaN)."""
    from orderpipe.ml.transformers import Categories

    if one_hot:  # float32: half the memory of the coded rows, which the solver reads as such
        return Categories(output="onehot", min_frequency=20, dtype=np.float32)
    return Categories(output="codes")


def _preprocessor(spec: FeatureSpec, *, one_hot: bool) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    numeric: Any = "passthrough"  # trees: raw numbers
    if one_hot:  # linear models: imputed and scaled numbers
        numeric = Pipeline(
            [("impute", SimpleImputer(strategy="mean")), ("scale", StandardScaler())]
        )
    return ColumnTransformer(
        [
            ("categorical", _categories(one_hot=one_hot), list(spec.categorical)),
            ("numeric", numeric, spec.plain_numeric),
            *_derived(spec, one_hot=one_hot),
        ],
        verbose_feature_names_out=False,
    )


def binned_logistic_regression(spec: FeatureSpec) -> Any:
    """One-hot categories, quantile-binned numbers (each with a bin for a missing value),
    derived features, logistic regression. Every step codes straight into one sparse float32
    matrix, which the solver reads as it is.

    Numbers with few distinct values get fewer bins (edges closer than 1e-8 merge).
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from orderpipe.ml.transformers import QuantileBins

    features = ColumnTransformer(
        [
            ("categorical", _categories(one_hot=True), list(spec.categorical)),
            (
                "numeric",
                QuantileBins(n_bins=NUMBER_BINS, subsample=200_000, dtype=np.float32),
                spec.plain_numeric,
            ),
            *_derived(spec, one_hot=True),
        ],
        verbose_feature_names_out=False,
    )
    return Pipeline([("features", features), ("model", LogisticRegression(C=1.0, max_iter=2000))])


def regressors(spec: FeatureSpec, seed: int) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline

    categorical = list(range(len(spec.categorical)))  # the preprocessor's first columns
    return {
        "ridge": Pipeline(
            [("features", _preprocessor(spec, one_hot=True)), ("model", Ridge(alpha=1.0))]
        ),
        "hist_gradient_boosting": Pipeline(
            [
                ("features", _preprocessor(spec, one_hot=False)),
                (
                    "model",
                    HistGradientBoostingRegressor(
                        categorical_features=categorical,
                        learning_rate=0.1,
                        max_iter=300,
                        early_stopping=True,
                        validation_fraction=0.1,
                        n_iter_no_change=15,
                        random_state=seed,
                    ),
                ),
            ]
        ),
    }
