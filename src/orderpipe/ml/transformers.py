"""The one step of a saved model that scikit-learn does not ship: the day of the week.

A model file scores clean records on its own, so what it derives from them lives inside its
Pipeline. This module imports only numpy and scikit-learn (unpickling a model imports it), and
a class here keeps its behaviour for every model it once fitted: change it by adding a class.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

# Sakamoto's month offsets: the weekday of the 0th of each month, in a year starting in March.
_MONTH_OFFSET = np.array([0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4], dtype=np.int64)


class DayOfWeek(TransformerMixin, BaseEstimator):
    """(year, month, day) columns -> ISO day of the week, Monday 1 to Sunday 7.

    Reads the clean record's `event_year`, `event_month`, `event_day` (UTC), from a polars or
    pandas frame or an array; a missing or out-of-range part gives NaN (imputed downstream).
    """

    def fit(self, x: Any, y: Any = None) -> DayOfWeek:
        validate_data(self, x, dtype=np.float64, ensure_all_finite="allow-nan")
        if self.n_features_in_ != 3:
            raise ValueError(f"DayOfWeek reads year, month, day; got {self.n_features_in_} columns")
        return self

    def transform(self, x: Any) -> np.ndarray:
        check_is_fitted(self)
        parts = validate_data(self, x, dtype=np.float64, ensure_all_finite="allow-nan", reset=False)
        return day_of_week(parts[:, 0], parts[:, 1], parts[:, 2]).reshape(-1, 1)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.array(["day_of_week"], dtype=object)


def day_of_week(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """ISO weekday (Monday 1 .. Sunday 7) of Gregorian dates as floats; NaN where invalid."""
    valid = (
        np.isfinite(year)
        & np.isfinite(month)
        & np.isfinite(day)
        & (month >= 1)
        & (month <= 12)
        & (day >= 1)
        & (day <= 31)
        & (year >= 1)
    )
    out = np.full(year.shape, np.nan)
    y = year[valid].astype(np.int64)
    m = month[valid].astype(np.int64)
    d = day[valid].astype(np.int64)
    y = y - (m < 3)
    sunday_0 = (y + y // 4 - y // 100 + y // 400 + _MONTH_OFFSET[m - 1] + d) % 7
    out[valid] = np.where(sunday_0 == 0, 7, sunday_0)
    return out
