"""The processed (clean) dataset: read it typed as the contract, merge a run into it, write it
and its text form. No SQLAlchemy here: train reads the Parquet through it and must stay light.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from orderpipe import schema
from orderpipe.errors import OrderpipeError
from orderpipe.fileio import write_atomic

if TYPE_CHECKING:
    from orderpipe.layout import Layout


def read_clean_dataset(path: Path) -> pl.DataFrame:
    """The clean records from etl's Parquet, CSV or JSON Lines, typed as the contract."""
    if not path.is_file():
        raise OrderpipeError(f"clean dataset not found: {path} (run `orderpipe etl` first)")
    try:
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
        elif path.suffix == ".csv":
            frame = pl.read_csv(path, schema_overrides={"event_time": pl.String})
        elif path.suffix in (".jsonl", ".ndjson", ".json"):
            frame = pl.read_ndjson(path, schema_overrides={"event_time": pl.String})
        else:
            raise OrderpipeError(f"{path}: expected a .parquet, .csv or .jsonl clean dataset")
        missing = [name for name in schema.CLEAN_COLUMNS if name not in frame.columns]
        if missing:
            raise OrderpipeError(f"{path} is not a clean dataset: missing {', '.join(missing)}")
        if frame.schema["event_time"] == pl.String:
            frame = frame.with_columns(
                pl.col("event_time").str.to_datetime(
                    "%Y-%m-%dT%H:%M:%S%.fZ", time_unit="us", time_zone="UTC"
                )
            )
        return frame.select(schema.CLEAN_COLUMNS).cast(dict(schema.CLEAN_SCHEMA))
    except pl.exceptions.PolarsError as exc:
        raise OrderpipeError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None


def as_text_records(dataset: pl.DataFrame) -> pl.DataFrame:
    """The clean record with event_time as contract text: the CSV, JSON Lines and Kafka form."""
    return dataset.with_columns(pl.col("event_time").dt.strftime(schema.EVENT_TIME_FORMAT))


def read_previous_dataset(path: Path) -> pl.DataFrame | None:
    """The dataset of earlier runs (None when there is none); a foreign file is an error."""
    if not path.is_file():
        return None
    try:
        previous = pl.read_parquet(path)
    except Exception as exc:  # a corrupt or foreign file must not be silently replaced
        raise OrderpipeError(
            f"cannot read the existing dataset {path}: {exc}; "
            "move it away or run etl with --replace"
        ) from None
    if list(previous.columns) != list(schema.CLEAN_COLUMNS):
        raise OrderpipeError(
            f"{path} does not have the clean record columns; move it away or run etl with --replace"
        )
    return previous.cast({name: dtype for name, dtype in schema.CLEAN_SCHEMA.items()})


def merge_runs(
    previous: pl.DataFrame | None, latest: pl.DataFrame
) -> tuple[pl.DataFrame, int, int]:
    """Union with the existing dataset: latest event_time wins, the new run wins a tie."""
    if previous is None or previous.height == 0:
        return latest, latest.height, 0
    new_ids = latest.join(previous.select("event_id"), on="event_id", how="anti").height
    merged = (
        pl.concat(
            [
                previous.with_columns(pl.lit(0).alias("_run")),
                latest.with_columns(pl.lit(1).alias("_run")),
            ]
        )
        .sort(["event_time", "_run"], maintain_order=True)
        .unique(subset="event_id", keep="last", maintain_order=True)
    )
    winners = merged.filter(pl.col("_run") == 1).drop("_run")
    changed = (
        winners.join(previous, on="event_id", how="semi")
        .join(previous, on=list(schema.CLEAN_COLUMNS), how="anti", nulls_equal=True)
        .height
    )
    return merged.drop("_run"), new_ids, changed


def write_dataset(dataset: pl.DataFrame, layout: Layout) -> None:
    """Parquet, CSV and JSON Lines, each written atomically."""
    text = as_text_records(dataset)
    write_atomic(layout.parquet, lambda tmp: dataset.write_parquet(tmp, statistics=True))
    write_atomic(layout.csv, lambda tmp: text.write_csv(tmp))
    write_atomic(layout.jsonl, lambda tmp: text.write_ndjson(tmp))
