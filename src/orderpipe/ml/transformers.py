"""The steps of a saved model that scikit-learn does not ship: category columns coded fast
from any frame, the day of the week, and one missing-value marker for text columns.

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


MISSING = "unknown"  # what etl writes for a missing category, and what a missing one scores as


class Categories(TransformerMixin, BaseEstimator):
    """Category (text) columns -> one-hot columns (`output="onehot"`, sparse) or integer codes
    (`output="codes"`, float, NaN for a category not seen in training), for a polars or pandas
    frame or an array.

    A missing value (polars null, pandas NaN/None/NA) counts as "unknown", as etl writes it.
    One-hot: a category seen fewer than `min_frequency` times in training shares one
    "infrequent" column with the others like it, and so does one never seen, when there is
    such a column (else its row is all zeros).

    scikit-learn's encoders count object arrays in Python (8 s for 800k rows x 4 columns);
    polars frames are coded here by polars itself and other frames by numpy, both vectorised.
    """

    def __init__(
        self, output: str = "onehot", min_frequency: int = 1, dtype: Any = np.float64
    ) -> None:
        self.output = output
        self.min_frequency = min_frequency
        self.dtype = dtype

    def fit(self, x: Any, y: Any = None) -> Categories:
        validate_data(self, x, skip_check_array=True)
        if self.output not in ("onehot", "codes"):
            raise ValueError(f"output is 'onehot' or 'codes', not {self.output!r}")
        self.categories_: list[np.ndarray] = []
        self.infrequent_: list[bool] = []
        for column in _text_columns(x):
            names, counts = _counted(column)
            frequent = counts >= self.min_frequency if self.output == "onehot" else counts > 0
            self.categories_.append(names[frequent])
            self.infrequent_.append(bool((~frequent).any()))
        return self

    def transform(self, x: Any) -> Any:
        from scipy import sparse

        check_is_fitted(self)
        validate_data(self, x, skip_check_array=True, reset=False)
        codes = [
            _codes(column, known, len(known) if infrequent else -1)
            for column, known, infrequent in zip(
                _text_columns(x), self.categories_, self.infrequent_, strict=True
            )
        ]
        if self.output == "codes":
            out = np.column_stack(codes).astype(np.float64) if codes else np.empty((0, 0))
            out[out < 0] = np.nan
            return out
        widths = np.array(
            [
                len(known) + infrequent
                for known, infrequent in zip(self.categories_, self.infrequent_, strict=True)
            ],
            dtype=np.int64,
        )
        offsets = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
        rows = len(codes[0]) if codes else 0
        # CSR built directly (no COO): at most one 1 per row and column, in column order
        columns = np.column_stack(codes) if codes else np.empty((rows, 0), dtype=np.int64)
        kept = columns >= 0
        index = _index_dtype(columns.size)
        indices = (columns + offsets)[kept].astype(index)  # row by row, in order
        indptr = np.concatenate([[0], np.cumsum(kept.sum(axis=1))]).astype(index)
        data = np.ones(len(indices), dtype=self.dtype)
        return sparse.csr_matrix((data, indices, indptr), shape=(rows, int(widths.sum())))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self)
        inputs = _input_names(self)
        if self.output == "codes":
            return np.asarray(inputs, dtype=object)
        names = []
        for name, known, infrequent in zip(inputs, self.categories_, self.infrequent_, strict=True):
            names += [f"{name}_{value}" for value in known]
            names += [f"{name}_infrequent"] if infrequent else []
        return np.asarray(names, dtype=object)


def _numbers(step: Any, x: Any, *, fit: bool) -> np.ndarray:
    """A frame or array of numbers as float64 (NaN for missing), checked against what the step
    was fitted on (`fit`: recorded as that); a transform may get no row."""
    return validate_data(
        step,
        x,
        dtype=np.float64,
        ensure_all_finite="allow-nan",
        reset=fit,
        ensure_min_samples=1 if fit else 0,
    )


def _input_names(step: Any) -> list[str]:
    """The column names a fitted step was given (x0, x1... for an array)."""
    names = getattr(step, "feature_names_in_", None)
    return list(names) if names is not None else [f"x{i}" for i in range(step.n_features_in_)]


def _index_dtype(entries: int) -> Any:
    """int32 sparse indices while they fit (scipy's own choice, so blocks stack without a
    copy), int64 beyond."""
    return np.int32 if entries < np.iinfo(np.int32).max else np.int64


def _text_columns(x: Any) -> list[Any]:
    """Each column of a frame or array: a polars Series (nulls filled with "unknown") for a
    polars frame, else a numpy array of str with missing values as "unknown"."""
    if type(x).__module__.startswith("polars"):
        import polars as pl

        return [  # a Categorical column stays one: its strings are not made again
            (x[name] if x[name].dtype == pl.Categorical else x[name].cast(pl.String)).fill_null(
                MISSING
            )
            for name in x.columns
        ]
    values = _object_values(x)
    missing = np.equal(values, None) | _is_nan(values)
    values = np.where(missing, MISSING, values)
    return [values[:, i].astype(str) for i in range(values.shape[1])]


def _counted(column: Any) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of a column, sorted, and how many times each occurs."""
    if isinstance(column, np.ndarray):
        return np.unique(column, return_counts=True)
    import polars as pl

    counts = column.rename("value").value_counts(name="count")  # whatever the column's name
    counts = counts.with_columns(counts["value"].cast(pl.String)).sort("value")
    return counts["value"].to_numpy().astype(str), counts["count"].to_numpy()


def _codes(column: Any, known: np.ndarray, other: int) -> np.ndarray:
    """Each value's index in `known` (sorted), else `other` (-1: none)."""
    if not isinstance(column, np.ndarray):  # a polars Series: coded by an Enum cast
        import polars as pl

        if len(known) == 0:
            return np.full(column.len(), other, dtype=np.int64)
        coded = column.cast(pl.Enum(known.tolist()), strict=False).to_physical()
        return coded.cast(pl.Int64).fill_null(other).to_numpy()
    if len(known) == 0:
        return np.full(len(column), other, dtype=np.int64)
    where = np.minimum(np.searchsorted(known, column), len(known) - 1)
    return np.where(known[where] == column, where, other).astype(np.int64)


def _object_values(x: Any) -> np.ndarray:
    """A frame or array as a 2-D object array whose missing values are None or NaN."""
    if hasattr(x, "iloc"):  # pandas: its NA, NaN and None all become NaN here
        values = x.to_numpy(dtype=object, na_value=np.nan)
    elif hasattr(x, "to_numpy"):  # polars: nulls come out as None
        values = x.to_numpy().astype(object)
    else:
        values = np.array(x, dtype=object)
    return values.reshape(-1, 1) if values.ndim == 1 else values


def _is_nan(values: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.not_equal(values, values)  # NaN is the one value unequal to itself


class QuantileBins(TransformerMixin, BaseEstimator):
    """Number columns -> one-hot quantile bins, plus one column per number for a missing value,
    sparse: what a logistic regression needs to follow steps in a number.

    Edges are the training quantiles (`n_bins` of them, on at most `subsample` rows, seeded);
    edges closer than 1e-8 merge. A number with at most `n_bins` distinct values gets a bin per
    value instead (scikit-learn's quantile bins put both values of a 0/1 flag in one bin when
    most rows share one). Values below the first edge or above the last fall in the first or
    last bin. Built for speed and
    memory at a million rows (scikit-learn's KBinsDiscretizer one-hot-encodes its codes with a
    generic encoder: 2 s and 370 MB more for 800k rows x 7 numbers).
    """

    def __init__(
        self,
        n_bins: int = 10,
        subsample: int = 200_000,
        random_state: int = 0,
        dtype: Any = np.float64,
    ) -> None:
        self.n_bins = n_bins
        self.subsample = subsample
        self.random_state = random_state
        self.dtype = dtype

    def fit(self, x: Any, y: Any = None) -> QuantileBins:
        values = _numbers(self, x, fit=True)
        if len(values) > self.subsample:
            rng = np.random.default_rng(self.random_state)
            values = values[np.sort(rng.choice(len(values), self.subsample, replace=False))]
        self.inner_edges_: list[np.ndarray] = []
        for column in values.T:
            known = column[~np.isnan(column)]
            distinct = np.unique(known)
            if distinct.size <= self.n_bins:  # a bin per value (a flag keeps its two)
                self.inner_edges_.append((distinct[1:] + distinct[:-1]) / 2)
                continue
            edges = np.quantile(
                known, np.linspace(0, 1, self.n_bins + 1), method="averaged_inverted_cdf"
            )
            kept = edges[np.concatenate([[True], np.diff(edges) > 1e-8])]
            self.inner_edges_.append(kept[1:-1])
        return self

    def transform(self, x: Any) -> Any:
        from scipy import sparse

        check_is_fitted(self)
        values = _numbers(self, x, fit=False)
        rows = len(values)
        widths = np.array([len(edges) + 2 for edges in self.inner_edges_], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(widths)[:-1]])
        codes = np.empty(values.shape, dtype=np.int32)
        for i, edges in enumerate(self.inner_edges_):
            column = values[:, i]
            bins = np.searchsorted(edges, column, side="right")
            codes[:, i] = np.where(np.isnan(column), len(edges) + 1, bins) + offsets[i]
        # one 1 per row and number: CSR built directly
        index = _index_dtype(codes.size)
        indices = codes.ravel().astype(index, copy=False)
        step = max(codes.shape[1], 1)
        indptr = np.arange(0, rows * codes.shape[1] + 1, step, dtype=index)
        if codes.shape[1] == 0:
            indptr = np.zeros(rows + 1, dtype=index)
        data = np.ones(indices.size, dtype=self.dtype)
        return sparse.csr_matrix((data, indices, indptr), shape=(rows, int(widths.sum())))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self)
        names = []
        for name, edges in zip(_input_names(self), self.inner_edges_, strict=True):
            names += [f"{name}_bin{b}" for b in range(len(edges) + 1)] + [f"{name}_missing"]
        return np.asarray(names, dtype=object)


class Positive(TransformerMixin, BaseEstimator):
    """One number column -> 1 where it is above 0, else 0 (missing included), as `dtype`:
    `has_discount` from `discount`."""

    def __init__(self, dtype: Any = np.float64, sparse_output: bool = False) -> None:
        self.dtype = dtype
        self.sparse_output = sparse_output

    def fit(self, x: Any, y: Any = None) -> Positive:
        _numbers(self, x, fit=True)
        return self

    def transform(self, x: Any) -> np.ndarray:
        check_is_fitted(self)
        values = _numbers(self, x, fit=False)
        with np.errstate(invalid="ignore"):
            flags = (values > 0).astype(self.dtype)
        if not self.sparse_output:
            return flags
        from scipy import sparse

        return sparse.csr_matrix(flags)  # beside other CSR blocks, stacked without a COO copy

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self)
        return np.array([f"{_input_names(self)[0]}_positive"], dtype=object)


class MissingAsNaN(TransformerMixin, BaseEstimator):
    """Text columns as an object array whose missing values are all NaN: a polars null (None)
    and a pandas NA are what `SimpleImputer` then imputes, exactly like a pandas NaN."""

    def fit(self, x: Any, y: Any = None) -> MissingAsNaN:
        validate_data(self, x, skip_check_array=True)
        return self

    def transform(self, x: Any) -> np.ndarray:
        check_is_fitted(self)
        validate_data(self, x, skip_check_array=True, reset=False)
        values = _object_values(x)
        values[np.equal(values, None)] = np.nan
        return values

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self)
        return np.asarray(_input_names(self), dtype=object)


class DayOfWeek(TransformerMixin, BaseEstimator):
    """(year, month, day) columns -> ISO day of the week, Monday 1 to Sunday 7.

    Reads the clean record's `event_year`, `event_month`, `event_day` (UTC), from a polars or
    pandas frame or an array; a missing part or an impossible date (13th month, 30 February,
    a fraction) gives NaN, imputed downstream.
    """

    def fit(self, x: Any, y: Any = None) -> DayOfWeek:
        _numbers(self, x, fit=True)
        if self.n_features_in_ != 3:
            raise ValueError(f"DayOfWeek reads year, month, day; got {self.n_features_in_} columns")
        return self

    def transform(self, x: Any) -> np.ndarray:
        check_is_fitted(self)
        parts = _numbers(self, x, fit=False)
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
