from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from orderpipe.core import schema
from orderpipe.core.cleaning import clean_lines, dedupe_latest
from orderpipe.core.errors import OrderpipeError
from orderpipe.core.rawinput import read_raw_lines
from orderpipe.generate.dirt import Dirt
from orderpipe.generate.writer import generate_events
from orderpipe.table.read import as_text_records, read_clean_dataset
from tests.factories import raw_event, write_lines


@pytest.fixture
def clean(tmp_path: Path) -> pl.DataFrame:
    """A small cleaned dataset: offsets, microseconds, imputed and normalised values."""
    raw = write_lines(
        tmp_path / "raw.jsonl",
        [
            raw_event(event_id="e1"),
            raw_event(event_id="e2", event_time="2026-11-20T10:31:02.5+02:00"),
            raw_event(
                event_id="e3",
                event_time="2026-12-01 23:59:59.000001",
                customer__country="France",
                order__device=" TABLET ",
                order__channel=None,
                order__shipping_fee=None,
                order__order_total=130.0,
                order__is_returned=1,
            ),
        ],
    )
    batch = clean_lines(read_raw_lines(raw))
    assert batch.rejected.height == 0
    return dedupe_latest(batch.clean).drop("line_number").sort("event_id")


def _write(dataset: pl.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        dataset.write_parquet(path)
    elif path.suffix == ".csv":
        as_text_records(dataset).write_csv(path)
    else:
        as_text_records(dataset).write_ndjson(path)
    return path


@pytest.mark.parametrize("name", ["clean.parquet", "clean.csv", "clean.jsonl"])
def test_each_form_reads_back_as_the_typed_contract(
    tmp_path: Path, clean: pl.DataFrame, name: str
) -> None:
    back = read_clean_dataset(_write(clean, tmp_path / name))
    assert back.schema == pl.Schema(schema.CLEAN_SCHEMA)
    assert_frame_equal(back, clean)


def test_text_form_writes_event_time_as_contract_text(clean: pl.DataFrame) -> None:
    text = as_text_records(clean)
    assert text["event_time"].to_list() == [
        "2026-11-20T10:31:02.123456Z",
        "2026-11-20T08:31:02.500000Z",
        "2026-12-01T23:59:59.000001Z",
    ]
    assert text.drop("event_time").equals(clean.drop("event_time"))


def test_extra_columns_are_dropped_and_order_restored(tmp_path: Path, clean: pl.DataFrame) -> None:
    shuffled = clean.select(reversed(clean.columns)).with_columns(pl.lit(1).alias("extra"))
    back = read_clean_dataset(_write(shuffled, tmp_path / "clean.parquet"))
    assert back.columns == list(schema.CLEAN_COLUMNS)


@pytest.mark.parametrize("name", ["clean.parquet", "clean.csv", "clean.jsonl"])
def test_a_missing_column_is_a_one_line_error(
    tmp_path: Path, clean: pl.DataFrame, name: str
) -> None:
    path = _write(clean.drop("order_total", "is_returned"), tmp_path / name)
    with pytest.raises(OrderpipeError) as error:
        read_clean_dataset(path)
    message = str(error.value)
    assert "\n" not in message
    assert message == f"{path} is not a clean dataset: missing order_total, is_returned"


def test_a_missing_file_is_an_orderpipe_error(tmp_path: Path) -> None:
    with pytest.raises(OrderpipeError, match="clean dataset not found"):
        read_clean_dataset(tmp_path / "nope.parquet")


def test_an_unknown_suffix_is_an_orderpipe_error(tmp_path: Path) -> None:
    path = tmp_path / "clean.txt"
    path.write_text("event_id\n")
    with pytest.raises(
        OrderpipeError, match=r"expected etl.s table or a \.parquet, \.csv or \.jsonl"
    ):
        read_clean_dataset(path)


def test_an_unreadable_file_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "clean.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(OrderpipeError, match=r"^cannot read ") as error:
        read_clean_dataset(path)
    assert "\n" not in str(error.value)


def test_a_capped_read_is_a_stratified_sample_and_the_same_every_time(tmp_path: Path) -> None:
    from orderpipe.etl.run import run_etl
    from orderpipe.table.read import read_sample
    from tests.factories import layout_under

    raw = generate_events(tmp_path / "raw.jsonl", 5_000, seed=2, dirt=Dirt(duplicates=0)).output
    layout = layout_under(tmp_path)
    run_etl(raw, layout)
    full, everything = read_sample(layout.table, None)
    part, sample = read_sample(layout.table, 1_000, seed=3)
    again, _ = read_sample(layout.table, 1_000, seed=3)
    other, _ = read_sample(layout.table, 1_000, seed=4)
    assert (everything.rows_seen, everything.rows_used) == (5_000, 5_000)
    assert (sample.rows_seen, sample.rows_used) == (5_000, part.height)
    assert abs(part.height - 1_000) <= 1
    assert "stratified by is_returned" in sample.method
    returned = full["is_returned"].sum() / full.height
    assert abs(part["is_returned"].sum() / part.height - returned) < 0.002  # each class its share
    assert part.sort("event_id").equals(again.sort("event_id"))
    assert not part.sort("event_id").equals(other.sort("event_id"))
    assert set(part["event_id"]) <= set(full["event_id"])


def test_an_export_is_of_the_one_version_it_names(
    tmp_path: Path, clean: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The version read first is the version written, even if etl commits one meanwhile (here:
    the table is at version 1 while the export asked for 0)."""
    from orderpipe.table import export
    from orderpipe.table import read as dataset
    from orderpipe.table.export import export_dataset
    from orderpipe.table.merge import Run, merge_into_table

    table = tmp_path / "table"
    merge_into_table(table, Run(clean.filter(pl.col("event_id") != "e3")))
    merge_into_table(table, Run(clean))
    assert dataset.table_version(table) == 1
    monkeypatch.setattr(export, "table_version", lambda _path: 0)
    result = export_dataset(table, tmp_path / "out.parquet", "parquet")
    assert (result.table_version, result.rows) == (0, 2)
    assert pl.read_parquet(tmp_path / "out.parquet")["event_id"].sort().to_list() == ["e1", "e2"]
