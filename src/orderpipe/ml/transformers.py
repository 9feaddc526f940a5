"""The steps of a saved model that scikit-learn does not ship: the day of the week, and one
missing-value marker for text columns whatever frame they come from.

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
_MONTH_DAYS = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


class MissingAsNaN(TransformerMixin, BaseEstimator):
    """Text columns as an object array whose missing values are all NaN: a polars null (None)
    and a pandas NA are what `SimpleImputer` then imputes, exactly like a pandas NaN."""

    def fit(self, x: Any, y: Any = None) -> MissingAsNaN:
        validate_data(self, x, skip_check_array=True)
        return self

    def transform(self, x: Any) -> np.ndarray:
        check_is_fitted(self)
        validate_data(self, x, skip_check_array=True, reset=False)
        if hasattr(x, "iloc"):  # pandas: its NA, NaN and None all become NaN here
            values = x.to_numpy(dtype=object, na_value=np.nan)
        elif hasattr(x, "to_numpy"):  # polars: nulls come out as None
            values = x.to_numpy().astype(object)
        else:
            values = np.array(x, dtype=object)
        if values.ndim == 1:
            values = values.reshape(-1, 1)
        values[np.equal(values, None)] = np.nan
        return values

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self)
        names = getattr(self, "feature_names_in_", None)
        if names is None:
            names = [f"x{i}" for i in range(self.n_features_in_)]
        return np.asarray(names, dtype=object)


class DayOfWeek(TransformerMixin, BaseEstimator):
    """(year, month, day) columns -> ISO day of the week, Monday 1 to Sunday 7.

    Reads the clean record's `event_year`, `event_month`, `event_day` (UTC), from a polars or
    pandas frame or an array; a missing part or an impossible date (13th month, 30 February,
    a fraction) gives NaN, imputed downstream.
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
    """ISO weekday (Monday 1 .. Sunday 7) of Gregorian dates (years 1-9999) as floats; NaN
    where a part is missing, not a whole number, or the date does not exist."""
    with np.errstate(invalid="ignore"):
        whole = (
            np.isfinite(year)
            & np.isfinite(month)
            & np.isfinite(day)
            & (year == np.floor(year))
            & (month == np.floor(month))
            & (day == np.floor(day))
            & (year >= 1)
            & (year <= 9999)
            & (month >= 1)
            & (month <= 12)
            & (day >= 1)
        )
    out = np.full(np.shape(year), np.nan)
    y = year[whole].astype(np.int64)
    m = month[whole].astype(np.int64)
    d = day[whole].astype(np.int64)
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    exists = d <= _MONTH_DAYS[m - 1] + ((m == 2) & leap)
    y = y - (m < 3)
    sunday_0 = (y + y // 4 - y // 100 + y // 400 + _MONTH_OFFSET[m - 1] + d) % 7
    weekday = np.where(sunday_0 == 0, 7, sunday_0).astype(np.float64)
    out[whole] = np.where(exists, weekday, np.nan)
    return out
