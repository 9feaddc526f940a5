"""The Pipeline steps orderpipe ships: the same codes from polars and pandas, whatever is
missing, rare, unseen or empty."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from orderpipe.ml.transformers import Categories, Positive, QuantileBins


def _dense(matrix: object) -> np.ndarray:
    return matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)  # type: ignore[union-attr]


def test_categories_code_polars_and_pandas_alike_with_rare_unseen_and_missing_values() -> None:
    train = pl.DataFrame(
        {"device": ["mobile"] * 5 + ["desktop"] * 4 + ["tv"], "country": ["FR"] * 10}
    )
    step = Categories(min_frequency=3).fit(train)
    assert step.get_feature_names_out().tolist() == [
        "device_desktop",
        "device_mobile",
        "device_infrequent",
        "country_FR",
    ]
    new = pl.DataFrame(
        {
            "device": ["tv", "watch", None, "mobile"],  # rare, unseen, missing, known
            "country": ["FR", "DE", "FR", None],  # known, unseen (no infrequent column), missing
        }
    )
    expected = np.array(
        [[0, 0, 1, 1], [0, 0, 1, 0], [0, 0, 1, 1], [0, 1, 0, 0]], dtype=float
    )  # missing is "unknown": never seen here, so infrequent (device) or nothing (country)
    for frame in (new, new.to_pandas(), new.to_pandas().convert_dtypes()):
        np.testing.assert_array_equal(_dense(step.transform(frame)), expected)
    categorical = new.with_columns(pl.col("device").cast(pl.Categorical))
    np.testing.assert_array_equal(_dense(step.transform(categorical)), expected)
    assert step.transform(new.head(0)).shape == (0, 4)


def test_category_codes_for_trees_mark_the_unseen_as_missing() -> None:
    step = Categories(output="codes").fit(
        pl.DataFrame({"c": ["b", "a", None]}, schema={"c": pl.Categorical})
    )
    codes = step.transform(pl.DataFrame({"c": ["a", "b", "zz", None]}))
    np.testing.assert_array_equal(codes[:3, 0], [0.0, 1.0, np.nan])
    assert codes[3, 0] == 2.0  # missing: the "unknown" category seen in training


def test_a_column_that_is_all_missing_in_training_is_one_unknown_category() -> None:
    step = Categories().fit(pl.DataFrame({"c": [None, None]}, schema={"c": pl.String}))
    assert step.categories_[0].tolist() == ["unknown"]
    np.testing.assert_array_equal(
        _dense(step.transform(pl.DataFrame({"c": [None, "x"]}))), [[1], [0]]
    )


def test_quantile_bins_follow_the_training_quantiles_with_a_bin_for_missing() -> None:
    rng = np.random.default_rng(0)
    train = pl.DataFrame({"price": rng.uniform(0, 100, 10_000), "flag": rng.integers(0, 2, 10_000)})
    step = QuantileBins(n_bins=4).fit(train)
    price_edges, flag_edges = step.inner_edges_
    assert np.allclose(price_edges, [25, 50, 75], atol=2)
    assert flag_edges.size == 1  # two distinct values: two bins, not four
    new = pl.DataFrame({"price": [-5.0, 30.0, 1e9, None], "flag": [1, 0, None, 1]})
    coded = _dense(step.transform(new))
    assert coded.shape == (4, (3 + 2) + (1 + 2))
    assert coded.sum(axis=1).tolist() == [2, 2, 2, 2]  # one bin per number, always
    price = coded[:, :5].argmax(axis=1).tolist()
    assert price == [0, 1, 3, 4]  # below the first edge, inside, above the last, missing
    np.testing.assert_array_equal(_dense(step.transform(new.to_pandas())), coded)
    assert step.transform(new.head(0)).shape == (0, 8)


def test_a_number_missing_in_all_training_rows_has_only_its_missing_bin() -> None:
    step = QuantileBins().fit(pl.DataFrame({"x": [None, None]}, schema={"x": pl.Float64}))
    np.testing.assert_array_equal(
        _dense(step.transform(pl.DataFrame({"x": [1.0, None]}))), [[1, 0], [0, 1]]
    )


@pytest.mark.parametrize("sparse_output", [False, True])
def test_positive_is_one_above_zero_and_zero_for_missing(sparse_output: bool) -> None:
    step = Positive(sparse_output=sparse_output).fit(pl.DataFrame({"discount": [1.0]}))
    flags = _dense(step.transform(pl.DataFrame({"discount": [0.0, 4.5, None, -1.0]})))
    np.testing.assert_array_equal(flags.ravel(), [0, 1, 0, 0])
    assert step.get_feature_names_out().tolist() == ["discount_positive"]
