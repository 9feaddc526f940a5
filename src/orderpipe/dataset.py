"""The processed (clean) dataset: read it typed as the contract, and its text form.

No SQLAlchemy here: train reads the Parquet through it and must stay light.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from orderpipe import schema
from orderpipe.errors import OrderpipeError


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
