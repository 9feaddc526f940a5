"""Models: features without leaks, one Pipeline scoring every source alike, safe artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from orderpipe.core.cleaning import clean_lines, clean_record_lines
from orderpipe.core.errors import OrderpipeError
from orderpipe.core.layout import model_files, truth_for
from orderpipe.etl.run import run_etl
from orderpipe.generate.dirt import Dirt
from orderpipe.generate.writer import generate_events
from orderpipe.ingest import run_ingest
from orderpipe.ml.features import CLASSIFICATION, REGRESSION, model_inputs
from orderpipe.ml.model import load_model
from orderpipe.ml.predict import run_predict
from orderpipe.ml.train import run_train
from orderpipe.table.export import EXPORT_FORMATS, export_dataset
from orderpipe.table.read import read_clean_dataset
from tests.factories import layout_under, raw_event


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    raw = generate_events(root / "raw.jsonl", 6000, seed=5, dirt=Dirt(duplicates=60)).output
    paths = layout_under(root)
    run_etl(raw, paths)
    run_train("all", paths.table, root / "artifacts", truth_path=truth_for(raw))
    return {
        "root": root,
        "table": paths.table,
        **{
            fmt: export_dataset(paths.table, paths.export(fmt), fmt).output
            for fmt in EXPORT_FORMATS
        },
        "artifacts": root / "artifacts",
    }


def test_features_leave_out_identifiers_targets_and_leaks() -> None:
    for spec in (CLASSIFICATION, REGRESSION):
        for banned in (
            "event_id",
            "order_id",
            "customer_id",
            "is_returned",
            "event_year",
            "event_day",
            "event_month",
        ):
            assert banned not in spec.columns
    for leak in (
        "basket_value",
        "order_total",
        "shipping_fee",
        "discount",
        "price_average_per_item",
    ):
        assert leak not in REGRESSION.columns


def test_raw_event_clean_row_and_stream_message_score_identically(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    model = load_model(trained["artifacts"], "classification")
    event = raw_event(
        event_id="same",
        event_time="2026-11-21T19:05:00+01:00",
        order__device=" Mobile",
        order__discount=4.5,
        order__order_total=116.0,
    )
    from_raw = clean_lines(pl.DataFrame({"line_number": [1], "line": [json.dumps(event)]})).clean
    frame = from_raw.drop("line_number")
    csv_path = tmp_path / "row.csv"
    frame.with_columns(pl.col("event_time").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")).write_csv(
        csv_path
    )
    from_csv = read_clean_dataset(csv_path)
    message = (
        frame.with_columns(pl.col("event_time").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"))
        .write_ndjson()
        .strip()
    )
    from_stream = clean_record_lines(pl.DataFrame({"line_number": [1], "line": [message]})).clean
    scores = [float(model.predict_proba(f)[0]) for f in (from_raw, from_csv, from_stream)]
    assert scores[0] == scores[1] == scores[2]
    assert 0.0 < scores[0] < 1.0


def test_unknown_categories_and_missing_numbers_still_score(trained: dict[str, Path]) -> None:
    model = load_model(trained["artifacts"], "classification")
    regressor = load_model(trained["artifacts"], "regression")
    clean = (
        read_clean_dataset(trained["parquet"])
        .head(3)
        .with_columns(
            pl.lit("never-seen").alias("main_category"),
            pl.lit("ZZ").alias("country"),
            pl.lit(None, dtype=pl.Int32).alias("n_items"),
            pl.lit(None, dtype=pl.Float64).alias("basket_value"),
        )
    )
    proba = model.predict_proba(clean)
    assert np.isfinite(proba).all() and ((proba > 0) & (proba < 1)).all()
    assert np.isfinite(regressor.predict(clean)).all()


def test_metadata_has_every_field(trained: dict[str, Path]) -> None:
    _, meta_path = model_files(trained["artifacts"], "classification")
    meta = json.loads(meta_path.read_text())
    for key in (
        "model_version",
        "inputs",
        "input_dtypes",
        "features",
        "data_hash",
        "training_rows",
        "libraries",
        "created_at",
        "estimator",
        "metrics",
    ):
        assert key in meta
    test = meta["metrics"]["test"]
    for key in (
        "roc_auc",
        "pr_auc",
        "log_loss",
        "brier",
        "f1",
        "precision",
        "recall",
        "threshold",
        "confusion_matrix",
        "reliability",
    ):
        assert key in test
    assert set(test["confusion_matrix"]) == {"tn", "fp", "fn", "tp"}
    assert sum(row["count"] for row in test["reliability"]) == meta["splits"]["test"]
    assert set(meta["metrics"]["validation"]) == {"binned_logistic_regression"}
    assert meta["metrics"]["fitted_on"] == "train+validation"
    assert "roc_auc" in meta["metrics"]["oracle"]
    assert meta["libraries"]["scikit-learn"]
    regression = json.loads(model_files(trained["artifacts"], "regression")[1].read_text())
    for key in ("mae", "rmse", "r2"):
        assert key in regression["metrics"]["test"]
        assert key in regression["metrics"]["median_baseline"]
    assert regression["metrics"]["test"]["r2"] > regression["metrics"]["median_baseline"]["r2"]


def test_predict_is_idempotent_and_counts_events_not_ingested(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    from sqlalchemy import create_engine, text

    url = f"sqlite:///{tmp_path}/p.db"
    clean = read_clean_dataset(trained["table"])
    ingested = tmp_path / "part.parquet"
    clean.head(4000).write_parquet(ingested)
    run_ingest(ingested, url)
    first = run_predict(trained["table"], url, trained["artifacts"])
    assert (first.scored, first.not_in_database) == (4000, clean.height - 4000)
    query = "SELECT event_id, return_proba, model_version FROM table_predictions ORDER BY event_id"
    engine = create_engine(url)
    with engine.connect() as conn:
        before = conn.execute(text(query)).all()
    run_predict(trained["table"], url, trained["artifacts"])
    with engine.connect() as conn:
        after = conn.execute(text(query)).all()
    engine.dispose()
    assert before == after and len(after) == 4000


def _copy_artifacts(trained: dict[str, Path], tmp_path: Path) -> Path:
    target = tmp_path / "artifacts"
    target.mkdir()
    for path in trained["artifacts"].iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda meta: meta.update(features=["n_items"]), "provides"),
        (lambda meta: meta["inputs"].remove("event_day"), "provides"),
        (lambda meta: meta.pop("inputs"), "older orderpipe whose model needs features built"),
        (
            lambda meta: meta["libraries"].update({"scikit-learn": "0.24.2"}),
            "trained with scikit-learn 0.24.2",
        ),
        (lambda meta: meta.update(model_sha256="0" * 64), "does not match its metadata"),
    ],
)
def test_incompatible_model_is_a_clear_error(
    trained: dict[str, Path], tmp_path: Path, tamper: object, message: str
) -> None:
    artifacts = _copy_artifacts(trained, tmp_path)
    _, meta_path = model_files(artifacts, "classification")
    meta = json.loads(meta_path.read_text())
    tamper(meta)  # type: ignore[operator]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(OrderpipeError) as caught:
        load_model(artifacts, "classification")
    assert message in str(caught.value)
    assert str(caught.value).endswith("run `orderpipe train classification`")


def test_missing_model_says_which_command_to_run(tmp_path: Path) -> None:
    with pytest.raises(OrderpipeError, match="run `orderpipe train classification`"):
        load_model(tmp_path, "classification")


def test_failed_training_leaves_the_previous_model_whole(
    trained: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import joblib

    artifacts = _copy_artifacts(trained, tmp_path)
    before = {p.name: p.read_bytes() for p in artifacts.iterdir()}

    def broken_dump(*_args: object, **_kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(joblib, "dump", broken_dump)
    with pytest.raises(OSError):
        run_train("classification", trained["table"], artifacts)
    assert {p.name: p.read_bytes() for p in artifacts.iterdir()} == before
    assert load_model(artifacts, "classification").version


def test_too_little_data_is_refused(tmp_path: Path) -> None:
    raw = generate_events(tmp_path / "raw.jsonl", 50).output
    paths = layout_under(tmp_path)
    run_etl(raw, paths)
    with pytest.raises(OrderpipeError, match="too few"):
        run_train("classification", paths.table, tmp_path / "artifacts")
    assert not (tmp_path / "artifacts" / "classification_model.joblib").exists()


def test_models_read_clean_columns_and_derive_the_rest(trained: dict[str, Path]) -> None:
    clean = read_clean_dataset(trained["table"]).head(10)
    for spec in (CLASSIFICATION, REGRESSION):
        assert model_inputs(clean, spec).columns == spec.inputs
        assert set(spec.inputs) <= set(clean.columns)
        assert {"has_discount", "day_of_week"} & set(spec.columns) == set(spec.derived)
    pipeline = load_model(trained["artifacts"], "classification").pipeline
    assert list(pipeline.feature_names_in_) == CLASSIFICATION.inputs


def test_classifier_never_says_certain(tmp_path: Path) -> None:
    # Isotonic calibration made flat steps at exactly 0 and 1 on data this size: a coin flip
    # stored as "certain to be returned" (and infinite log loss).
    raw = generate_events(tmp_path / "raw.jsonl", 30_000, seed=11, dirt=Dirt(duplicates=0)).output
    paths = layout_under(tmp_path)
    run_etl(raw, paths)
    [result] = run_train("classification", paths.table, tmp_path / "artifacts")
    proba = load_model(tmp_path / "artifacts", "classification").predict_proba(
        read_clean_dataset(paths.table)
    )
    assert ((proba > 0) & (proba < 1)).all()
    assert proba.min() > 0.001 and proba.max() < 0.999
    assert all(row["mean_predicted"] < 0.999 for row in result.metrics["test"]["reliability"])


def test_the_sample_a_model_was_fitted_on_is_in_its_metadata(tmp_path: Path) -> None:
    raw = generate_events(tmp_path / "raw.jsonl", 6_000, seed=8, dirt=Dirt(duplicates=0)).output
    paths = layout_under(tmp_path)
    run_etl(raw, paths)
    [result] = run_train("classification", paths.table, tmp_path / "artifacts", max_rows=3_000)
    meta = json.loads(result.meta_path.read_text())
    assert meta["sampling"]["rows_seen"] == 6_000
    assert meta["sampling"]["rows_used"] == meta["training_rows"] == result.rows
    assert abs(result.rows - 3_000) <= 1
    assert meta["sampling"]["how"].startswith("stratified by is_returned")


def test_extreme_groups_on_little_data_never_give_a_certain_probability(tmp_path: Path) -> None:
    # Isotonic calibration on a small validation split made flat steps at exactly 0 and 1 for
    # groups that always (or never) return. Here: 900 events, "luxury" always returned,
    # "grocery" never, and a validation split of 180 rows.
    import random

    from orderpipe.table.read import read_clean_dataset
    from tests.factories import write_lines

    rng = random.Random(3)
    events = []
    for i in range(900):
        category = ("luxury", "grocery", "fashion", "home")[i % 4]
        returned = {"luxury": 1, "grocery": 0}.get(category, int(rng.random() < 0.2))
        basket = round(rng.uniform(5, 400), 2)
        events.append(
            raw_event(
                event_id=f"x{i:05d}",
                order_id=f"ORD-{i:05d}",
                event_time=f"2026-03-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
                customer__customer_id=f"C{i % 300}",
                order__main_category=category,
                order__device=rng.choice(["mobile", "desktop"]),
                order__n_items=1 + i % 5,
                order__basket_value=basket,
                order__order_total=basket,
                order__is_returned=returned,
            )
        )
    paths = layout_under(tmp_path)
    run_etl(write_lines(tmp_path / "extreme.jsonl", events), paths)
    [result] = run_train("classification", paths.table, paths.artifacts_dir)
    clean = read_clean_dataset(paths.table)
    proba = load_model(paths.artifacts_dir, "classification").predict_proba(clean)
    assert ((proba > 0) & (proba < 1)).all()
    assert proba.min() > 1e-6 and proba.max() < 1 - 1e-6
    # the groups are still told apart: near-certain, but never certain
    luxury = proba[clean["main_category"].to_numpy() == "luxury"]
    grocery = proba[clean["main_category"].to_numpy() == "grocery"]
    assert luxury.min() > 0.5 > grocery.max()
    assert all(0 < row["mean_predicted"] < 1 for row in result.metrics["test"]["reliability"])
    url = f"sqlite:///{tmp_path}/x.db"
    run_ingest(paths.table, url)
    run_predict(paths.table, url, paths.artifacts_dir)
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        low, high = conn.execute(
            text("SELECT MIN(return_proba), MAX(return_proba) FROM table_predictions")
        ).one()
    engine.dispose()
    assert low > 0 and high < 1
