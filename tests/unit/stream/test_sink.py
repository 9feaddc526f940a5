"""stream/sink.py: a clean micro-batch -> the four tables in one transaction, idempotently."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import create_engine, text

from orderpipe.core.settings import Settings
from orderpipe.etl.run import run_etl
from orderpipe.generate.writer import generate_events
from orderpipe.ml.train import run_train
from orderpipe.stream.sink import DatabaseSink
from orderpipe.table.read import read_clean_dataset
from tests.factories import layout_under

TABLES = ("table_customers", "table_orders", "table_events", "table_predictions")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pl.DataFrame]:
    """(artifacts folder with a classifier, the clean dataset it was trained on)."""
    root = tmp_path_factory.mktemp("sink")
    layout = layout_under(root)
    raw = generate_events(root / "raw.jsonl", 600, seed=11).output
    run_etl(raw, layout)
    run_train("classification", layout.table, layout.artifacts_dir, seed=11)
    return layout.artifacts_dir, read_clean_dataset(layout.table)


@pytest.fixture
def sink(trained: tuple[Path, pl.DataFrame], tmp_path: Path) -> Iterator[DatabaseSink]:
    database = DatabaseSink(f"sqlite:///{tmp_path}/sink.db", trained[0])
    yield database
    database.close()


@pytest.fixture
def batch(trained: tuple[Path, pl.DataFrame]) -> pl.DataFrame:
    """Fifty clean rows as the consumer hands them over (with `line_number`)."""
    return trained[1].head(50).with_row_index("line_number").cast({"line_number": pl.Int64})


def _counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        counts = {
            name: conn.execute(text(f"SELECT COUNT(*) FROM {name}")).scalar_one() for name in TABLES
        }
    engine.dispose()
    return counts


def _predictions(url: str) -> dict[str, tuple[float, object]]:
    """event_id -> (return_proba, predicted_at), by event_id."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT event_id, return_proba, predicted_at FROM table_predictions "
                "ORDER BY event_id"
            )
        ).all()
    engine.dispose()
    return {row[0]: (row[1], row[2]) for row in rows}


def _probabilities(url: str) -> list[tuple[str, float]]:
    return [(event_id, proba) for event_id, (proba, _) in _predictions(url).items()]


def test_write_stores_each_event_with_its_customer_order_and_prediction(
    sink: DatabaseSink, batch: pl.DataFrame, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/sink.db"
    assert sink.write(batch) == 50
    assert _counts(url) == {
        "table_customers": batch["customer_id"].n_unique(),
        "table_orders": batch["order_id"].n_unique(),
        "table_events": 50,
        "table_predictions": 50,
    }
    stored = _probabilities(url)
    assert [event_id for event_id, _ in stored] == sorted(batch["event_id"])
    assert all(0.0 < proba < 1.0 for _, proba in stored)


def test_writing_the_same_batch_again_changes_nothing(
    sink: DatabaseSink, batch: pl.DataFrame, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/sink.db"
    sink.write(batch)
    counts, probabilities = _counts(url), _probabilities(url)
    assert sink.write(batch) == 50
    assert _counts(url) == counts
    assert _probabilities(url) == probabilities


def test_the_consumers_sqlite_cache_is_bounded_below_the_batch_loads(
    sink: DatabaseSink, batch: pl.DataFrame
) -> None:
    """A consumer's memory grew with its tables until a 256 MiB page cache was full."""
    from orderpipe.stream.sink import STREAM_SQLITE_CACHE_MIB

    sink.write(batch)
    conn = sink.writer._connection()
    assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -STREAM_SQLITE_CACHE_MIB * 1024
    batch_load = sink.writer.engine.connect()  # ingest's connections keep the engine's 256 MiB
    try:
        assert batch_load.exec_driver_sql("PRAGMA cache_size").scalar() == -262144
    finally:
        batch_load.close()


def test_writing_an_empty_batch_stores_nothing(
    sink: DatabaseSink, batch: pl.DataFrame, tmp_path: Path
) -> None:
    assert sink.write(batch.clear()) == 0
    assert set(_counts(f"sqlite:///{tmp_path}/sink.db").values()) == {0}


@pytest.mark.parametrize("local_infile", [True, False])
def test_the_sink_follows_the_mysql_local_infile_setting(
    settings: Settings, local_infile: bool
) -> None:
    """The stream path used to open LOAD DATA whatever ORDERPIPE_MYSQL_LOCAL_INFILE said."""
    chosen = settings.model_copy(update={"mysql_local_infile": local_infile})
    factory = DatabaseSink.factory(chosen)
    assert factory.keywords["local_infile"] is local_infile
    assert factory.args == (chosen.db_url, chosen.artifacts_dir)


def late_rows(batch: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Five older duplicates of stored events (with other data: another probability if they
    were scored) and five newer versions of stored events."""
    older = batch.head(5).with_columns(
        pl.col("event_time") - pl.duration(hours=1),
        pl.lit(9999.0).alias("basket_value"),
        pl.lit(1).cast(pl.Int32).alias("n_items"),
    )
    newer = batch.slice(5, 5).with_columns(pl.col("event_time") + pl.duration(hours=1))
    return older, newer


def test_a_late_older_duplicate_does_not_replace_the_prediction(
    sink: DatabaseSink, batch: pl.DataFrame, tmp_path: Path
) -> None:
    """Predictions follow the event: the event row that loses its upsert brings no prediction."""
    url = f"sqlite:///{tmp_path}/sink.db"
    sink.write(batch)
    before = _predictions(url)
    older, newer = late_rows(batch)
    sink.write(pl.concat([older, newer]))
    after = _predictions(url)
    for event_id in older["event_id"]:
        assert after[event_id] == before[event_id]  # neither the probability nor its time moved
    for event_id in newer["event_id"]:
        assert after[event_id][1] != before[event_id][1]  # a newer event is scored again


def test_the_stored_times_are_read_back_only_when_an_event_may_have_lost(
    sink: DatabaseSink, batch: pl.DataFrame, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """SQLite counts an upsert whose WHERE (as recent) fails as no change: when every event of
    a batch counts, all won, and the read-back (17 % of the writer) is skipped."""
    from orderpipe.db import queries

    reads: list[int] = []
    real = queries.events_as_stored

    def counted(conn: object, clean: pl.DataFrame) -> pl.DataFrame:
        reads.append(clean.height)
        return real(conn, clean)  # type: ignore[arg-type]

    monkeypatch.setattr(queries, "events_as_stored", counted)
    url = f"sqlite:///{tmp_path}/sink.db"
    sink.write(batch)  # all new
    sink.write(batch)  # a replay: as recent, so all win again
    assert reads == []
    before = _predictions(url)
    older, newer = late_rows(batch)
    sink.write(pl.concat([older, newer]))
    assert reads == [10]  # five lost: the stored times say which
    after = _predictions(url)
    assert all(after[event_id] == before[event_id] for event_id in older["event_id"])
    assert all(after[event_id] != before[event_id] for event_id in newer["event_id"])


def test_scores_made_ahead_are_kept_only_for_the_events_that_win(
    sink: DatabaseSink,
    batch: pl.DataFrame,
    trained: tuple[Path, pl.DataFrame],
    tmp_path: Path,
) -> None:
    """The consumer scores the next batch beside the current write: same rule, same values."""
    url = f"sqlite:///{tmp_path}/sink.db"
    sink.write(batch)
    before = _predictions(url)
    older, newer = late_rows(batch)
    late = pl.concat([older, newer])
    ahead = sink.score(late)
    assert ahead.height == late.height  # every row scored, winners or not
    assert sink.write(late, ahead) == late.height
    after = _predictions(url)
    for event_id in older["event_id"]:
        assert after[event_id] == before[event_id]
    made_here = dict(zip(ahead["event_id"], ahead["return_proba"], strict=True))
    for event_id in newer["event_id"]:
        assert after[event_id][0] == pytest.approx(made_here[event_id])
    # scoring ahead gives what scoring in the write gives
    in_write = dict(_probabilities(url))
    for event_id, proba in zip(ahead["event_id"], ahead["return_proba"], strict=True):
        if event_id in newer["event_id"]:
            assert in_write[event_id] == pytest.approx(proba)
    first = sink.score(batch)
    fresh = DatabaseSink(f"sqlite:///{tmp_path}/fresh.db", trained[0])
    try:
        fresh.write(batch)
    finally:
        fresh.close()
    scored_in_write = dict(_probabilities(f"sqlite:///{tmp_path}/fresh.db"))
    for event_id, proba in zip(first["event_id"], first["return_proba"], strict=True):
        assert scored_in_write[event_id] == pytest.approx(proba)
