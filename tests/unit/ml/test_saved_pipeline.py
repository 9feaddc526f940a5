"""A saved model is the whole model: loaded with joblib alone, it scores clean records as they
are (polars or pandas, extra columns and missing optional values) exactly as orderpipe does."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import polars as pl
import pytest
from sqlalchemy import create_engine, text

from orderpipe.core.layout import model_files, truth_for
from orderpipe.etl.run import run_etl
from orderpipe.generate.dirt import Dirt
from orderpipe.generate.writer import generate_events
from orderpipe.ingest import run_ingest
from orderpipe.ml.model import load_model
from orderpipe.ml.predict import run_predict
from orderpipe.ml.train import run_train
from orderpipe.ml.transformers import DayOfWeek, day_of_week
from orderpipe.table.export import export_dataset
from orderpipe.table.read import read_clean_dataset
from tests.factories import layout_under, raw_event, write_lines


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("saved")
    raw = generate_events(root / "raw.jsonl", 6000, seed=21, dirt=Dirt(duplicates=40)).output
    paths = layout_under(root)
    run_etl(raw, paths)
    run_train("all", paths.table, paths.artifacts_dir, truth_path=truth_for(raw))
    return paths.artifacts_dir


def _stored(url: str) -> dict[str, float]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT event_id, return_proba FROM table_predictions")).all()
    engine.dispose()
    return dict(rows)  # type: ignore[arg-type]


def _score_by_file_alone(models: Path, root: Path, source: Path, url: str) -> None:
    """Ingest and predict `source` (an etl table) with orderpipe, then score its Parquet and CSV
    exports with nothing but joblib, polars and pandas: the same probabilities, event by event."""
    run_ingest(source, url)
    result = run_predict(source, url, models)
    stored = _stored(url)
    assert len(stored) == result.scored > 0
    model_path, _ = model_files(models, "classification")
    pipeline = joblib.load(model_path)  # no orderpipe call: the file alone

    parquet = export_dataset(source, root / "clean.parquet", "parquet").output
    frame = pl.read_parquet(parquet)
    scores = pipeline.predict_proba(frame)
    assert scores.dtype == np.float64  # float32 would round a logit above 17 to exactly 1.0
    by_polars = dict(zip(frame["event_id"], scores[:, 1], strict=True))

    csv = export_dataset(source, root / "clean.csv", "csv").output
    pandas_frame = pd.read_csv(csv)  # every column, event_time as text, NaN for missing values
    by_pandas = dict(
        zip(pandas_frame["event_id"], pipeline.predict_proba(pandas_frame)[:, 1], strict=True)
    )

    ids = sorted(stored)
    expected = np.array([stored[i] for i in ids])
    np.testing.assert_allclose([by_polars[i] for i in ids], expected, rtol=1e-12, atol=0)
    np.testing.assert_allclose([by_pandas[i] for i in ids], expected, rtol=1e-12, atol=0)
    assert ((expected > 0) & (expected < 1)).all()


def test_the_saved_classifier_scores_parquet_and_csv_alone_as_predict_stored(
    models: Path, tmp_path: Path
) -> None:
    raw = generate_events(tmp_path / "new.jsonl", 1500, seed=77).output
    paths = layout_under(tmp_path)
    run_etl(raw, paths)
    _score_by_file_alone(models, tmp_path, paths.table, f"sqlite:///{tmp_path}/p.db")


def test_hand_written_events_in_the_original_shape_score_alone_as_predict_stored(
    models: Path, tmp_path: Path
) -> None:
    # Not made by our generator: the original project's raw shape with its quirks (an order id
    # reused by several events, missing channel and discount, untidy text, an offset time).
    events = [
        raw_event(event_id="h1", order_id="ORD-1", order__channel=None, order__discount=None),
        raw_event(
            event_id="h2",
            order_id="ORD-1",
            event_time="2025-03-02T23:59:59+02:00",
            order__device=" Desktop ",
            order__n_items=1,
            order__basket_value=349.0,
            order__order_total=349.0,
            order__is_returned=1,
        ),
        raw_event(
            event_id="h3",
            order_id="ORD-1",
            event_time="2024-02-29T08:00:00Z",
            order__channel=...,
            order__discount=12.5,
            order__order_total=108.0,
        ),
        raw_event(
            event_id="h4",
            order_id="ORD-77",
            customer__country="fr",
            order__main_category="ELECTRONICS",
            order__discount=0.0,
            order__shipping_fee=4.99,
            order__basket_value=19.9,
            order__order_total=24.89,
            order__n_items=2,
        ),
        raw_event(event_id="h5", order_id="ORD-78", order__channel="a channel never seen"),
    ]
    paths = layout_under(tmp_path)
    result = run_etl(write_lines(tmp_path / "hand.jsonl", events), paths)
    assert (result.clean, result.rejected) == (len(events), 0)
    _score_by_file_alone(models, tmp_path, paths.table, f"sqlite:///{tmp_path}/h.db")


def test_the_saved_regressor_predicts_alone_as_orderpipe_does(models: Path) -> None:
    clean = read_clean_dataset(models.parent / "data" / "processed" / "orders_events_cleaned")
    model_path, _ = model_files(models, "regression")
    alone = joblib.load(model_path).predict(clean.with_columns(pl.lit("x").alias("extra")))
    np.testing.assert_array_equal(alone, load_model(models, "regression").predict(clean))
    assert np.isfinite(alone).all()


def test_a_frame_without_a_column_the_model_reads_says_which(models: Path) -> None:
    pipeline = joblib.load(model_files(models, "classification")[0])
    frame = read_clean_dataset(models.parent / "data" / "processed" / "orders_events_cleaned")
    with pytest.raises(ValueError, match="event_month"):
        pipeline.predict_proba(frame.drop("event_month"))


def test_day_of_week_matches_the_calendar() -> None:
    days = [date(2000, 1, 1) + (date(2000, 3, 1) - date(2000, 1, 1)) * k for k in range(60)]
    days += [date(1999, 12, 31), date(2024, 2, 29), date(2100, 3, 1), date(2026, 11, 27)]
    parts = np.array([[d.year, d.month, d.day] for d in days], dtype=float)
    got = day_of_week(parts[:, 0], parts[:, 1], parts[:, 2])
    assert got.tolist() == [float(d.isoweekday()) for d in days]
    weird = np.array(
        [
            [np.nan, 1, 1],
            [2026, 13, 1],
            [2026, 1, 0],
            [2026, 2, 29],  # not a leap year
            [2100, 2, 29],  # nor is 2100
            [2026, 4, 31],
            [2026.5, 1, 1],
            [1e19, 1, 1],
        ],
        dtype=float,
    )
    assert np.isnan(day_of_week(weird[:, 0], weird[:, 1], weird[:, 2])).all()


def test_day_of_week_reads_polars_and_pandas_with_nulls() -> None:
    frame = pl.DataFrame(
        {"event_year": [2026, None], "event_month": [11, 11], "event_day": [27, 27]},
        schema={"event_year": pl.Int32, "event_month": pl.Int8, "event_day": pl.Int8},
    )
    step = DayOfWeek().fit(frame)
    from_polars = step.transform(frame)
    from_pandas = step.transform(frame.to_pandas())
    assert from_polars[0, 0] == from_pandas[0, 0] == 5.0  # a Friday
    assert np.isnan(from_polars[1, 0]) and np.isnan(from_pandas[1, 0])
    assert step.get_feature_names_out().tolist() == ["day_of_week"]


def test_a_missing_category_scores_as_unknown_from_polars_pandas_and_pandas_na(
    models: Path,
) -> None:
    clean = read_clean_dataset(models.parent / "data" / "processed" / "orders_events_cleaned")
    rows = clean.head(4)
    filled = rows.with_columns(pl.lit("unknown").alias("channel"))  # what etl imputes
    missing = rows.with_columns(pl.lit(None, dtype=pl.String).alias("channel"))
    for name, method in (("classification", "predict_proba"), ("regression", "predict")):
        pipeline = joblib.load(model_files(models, name)[0])
        expected = getattr(pipeline, method)(filled)
        for frame in (
            missing,  # polars null
            missing.to_pandas(),  # NaN... or None in an object column
            missing.to_pandas().convert_dtypes(),  # pandas NA, nullable dtypes
            missing.to_pandas(use_pyarrow_extension_array=True),  # Arrow-backed
        ):
            np.testing.assert_allclose(getattr(pipeline, method)(frame), expected, rtol=1e-12)


def test_missing_optional_values_in_a_pandas_frame_still_score(models: Path) -> None:
    clean = read_clean_dataset(models.parent / "data" / "processed" / "orders_events_cleaned")
    frame = clean.head(5).to_pandas()
    frame.loc[1, "discount"] = float("nan")
    frame.loc[3, "n_items"] = float("nan")
    frame = frame.drop(columns=["event_id", "is_returned"])  # what is not read may be absent
    proba = joblib.load(model_files(models, "classification")[0]).predict_proba(frame)[:, 1]
    assert ((proba > 0) & (proba < 1)).all()
    predicted = joblib.load(model_files(models, "regression")[0]).predict(frame)
    assert np.isfinite(predicted).all()
