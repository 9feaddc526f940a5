"""Reading the clean table: its records (or an exported file's) scanned, sampled or streamed,
the data files changed since a version, and the table's id, version and last commit.

No SQLAlchemy here: train reads the table through it and must stay light. `deltalake` is imported
only where the table's log is read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import polars as pl

from orderpipe.core import schema
from orderpipe.core.errors import OrderpipeError, first_line

PARTITION = "event_date"  # the UTC date of event_time: one folder per day of events


def is_table(path: Path) -> bool:
    """True when `path` is a Delta table (a folder with a `_delta_log`)."""
    return (path / "_delta_log").is_dir()


def table_version(path: Path) -> int:
    """The table's latest committed version."""
    from deltalake import DeltaTable

    return DeltaTable(str(path)).version()


def table_id(path: Path) -> str:
    """The table's id (in its metadata): what a database's watermarks of the table are keyed by."""
    from deltalake import DeltaTable

    return DeltaTable(str(path)).metadata().id


def last_commit_info(path: Path) -> tuple[int, dict[str, Any]]:
    """(version, the commit's information: its custom metadata among it) of the table's last
    commit."""
    from deltalake import DeltaTable

    table = DeltaTable(str(path))
    (last,) = table.history(1)
    return table.version(), last


def scan_clean_dataset(path: Path, version: int | None = None) -> pl.LazyFrame:
    """The clean records of etl's table (its latest version, or `version`), or of a Parquet,
    CSV or JSON Lines file, typed as the contract (lazy: nothing is read until collected)."""
    if is_table(path):
        frame = _scan_table(path, version)
    elif not path.is_file():
        raise OrderpipeError(f"clean dataset not found: {path} (run `orderpipe etl` first)")
    elif path.suffix == ".parquet":
        frame = pl.scan_parquet(path)
    elif path.suffix == ".csv":
        frame = pl.scan_csv(path, schema_overrides={"event_time": pl.String})
    elif path.suffix in (".jsonl", ".ndjson", ".json"):
        frame = pl.scan_ndjson(path, schema_overrides={"event_time": pl.String})
    else:
        raise OrderpipeError(f"{path}: expected etl's table or a .parquet, .csv or .jsonl file")
    try:
        names = frame.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise OrderpipeError(f"cannot read {path}: {first_line(exc)}") from None
    missing = [name for name in schema.CLEAN_COLUMNS if name not in names]
    if missing:
        raise OrderpipeError(f"{path} is not a clean dataset: missing {', '.join(missing)}")
    if names["event_time"] == pl.String:
        frame = frame.with_columns(
            pl.col("event_time").str.to_datetime(
                "%Y-%m-%dT%H:%M:%S%.fZ", time_unit="us", time_zone="UTC"
            )
        )
    return frame.select(schema.CLEAN_COLUMNS).cast(dict(schema.CLEAN_SCHEMA))


def read_clean_dataset(path: Path) -> pl.DataFrame:
    """The clean records of etl's table or of a Parquet, CSV or JSON Lines file."""
    try:
        return scan_clean_dataset(path).collect()
    except pl.exceptions.PolarsError as exc:
        raise OrderpipeError(f"cannot read {path}: {first_line(exc)}") from None


@dataclass(frozen=True)
class Sample:
    """How many rows a reader saw and used, and how it chose them."""

    rows_seen: int
    rows_used: int
    method: str


def read_sample(
    path: Path, max_rows: int | None, *, seed: int = 42, columns: list[str] | None = None
) -> tuple[pl.DataFrame, Sample]:
    """The clean records at `path` (only `columns`, when given), or at most `max_rows` of them:
    a sample stratified by is_returned (each class keeps its share), chosen by a seeded hash of
    event_id, so the same table and seed give the same sample. Memory holds the sample and 9
    bytes per row seen."""
    lazy = scan_clean_dataset(path)
    if columns is not None:
        lazy = lazy.select(list(dict.fromkeys(["event_id", "is_returned", *columns])))
    try:
        seen = lazy.select(pl.len()).collect().item()
        if max_rows is None or seen <= max_rows:
            return lazy.collect(), Sample(seen, seen, "every row")
        key = pl.col("event_id").hash(seed=seed).alias("_key")
        keys = lazy.select("is_returned", key).collect(engine="streaming")
        keep = pl.lit(False)
        for (label,), group in keys.partition_by("is_returned", as_dict=True).items():
            quota = max(1, round(max_rows * group.height / seen))
            cutoff = group["_key"].bottom_k(quota).max()
            keep = keep | ((pl.col("is_returned") == label) & (pl.col("_key") <= cutoff))
        sample = lazy.with_columns(key).filter(keep).drop("_key").collect(engine="streaming")
    except pl.exceptions.PolarsError as exc:
        raise OrderpipeError(f"cannot read {path}: {first_line(exc)}") from None
    method = f"stratified by is_returned: per class, the rows of smallest hash(event_id, {seed})"
    return sample, Sample(seen, sample.height, method)


def as_text_records(dataset: pl.DataFrame) -> pl.DataFrame:
    """The clean record with event_time as contract text: the CSV, JSON Lines and Kafka form."""
    return dataset.with_columns(pl.col("event_time").dt.strftime(schema.EVENT_TIME_FORMAT))


def iter_table_frames(path: Path) -> Iterator[pl.DataFrame]:
    """The table's clean records one data file at a time, in event-date order (each file in
    event_time order): memory holds one file, whatever the table's size."""
    from deltalake import DeltaTable

    for file in data_files(DeltaTable(str(path))):
        yield read_table_files(path, [file])


def iter_table_lines(path: Path, chunk_lines: int) -> Iterator[pl.DataFrame]:
    """The table's rows as clean-record JSON text (`line_number` from 1, `line`, and the
    message key `order_id`), at most `chunk_lines` at a time, in event order: what
    `stream produce` sends from the table."""
    number = 1
    for frame in iter_table_frames(path):
        text = as_text_records(frame)
        for offset in range(0, text.height, chunk_lines):
            part = text.slice(offset, chunk_lines)
            yield part.select(
                (pl.int_range(pl.len(), dtype=pl.Int64) + number).alias("line_number"),
                pl.struct(pl.all()).struct.json_encode().alias("line"),
                "order_id",
            )
            number += part.height


@dataclass(frozen=True)
class TableFiles:
    """The data files of the table that a reader has not seen since `since` (all when None)."""

    table_id: str
    version: int
    since: int | None
    files: list[tuple[str, int]]  # (path inside the table, rows), in event-date order
    replaced: list[str] = field(default_factory=list)  # files of `since` no longer in the table

    @property
    def rows(self) -> int:
        return sum(rows for _, rows in self.files)

    def after(self, file: str) -> TableFiles:
        """These changes less their files up to `file`, in the order they are read (the same
        changes when they do not hold it)."""
        names = [name for name, _ in self.files]
        if file not in names:
            return self
        return replace(self, files=self.files[names.index(file) + 1 :])


def table_files_since(path: Path, since: int | None = None, upto: int | None = None) -> TableFiles:
    """The data files of version `upto` of the table (the current one when None, or when that
    version can no longer be read) added after version `since` (every file when None, or when
    that version can no longer be read): each day a run rewrote is one such file."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    table = DeltaTable(str(path))
    if upto is not None and upto < table.version():
        with contextlib.suppress(DeltaError, OSError):
            table = DeltaTable(str(path), version=upto)
    version, table_id = table.version(), table.metadata().id
    current = data_files(table)
    seen: set[str] = set()
    if since is not None and since <= version:
        try:
            seen = set(data_files(DeltaTable(str(path), version=since)))
        except (DeltaError, OSError):
            since = None
    else:
        since = None
    files = [(file, rows) for file, rows in current.items() if file not in seen]
    return TableFiles(table_id, version, since, files, sorted(seen - set(current)))


def file_groups(files: list[tuple[str, int]], rows: int) -> list[list[str]]:
    """Consecutive data files (days) of about `rows` rows together (a larger file alone)."""
    groups: list[list[str]] = []
    held = 0
    for file, count in files:
        if not groups or held + count > rows:
            groups.append([])
            held = 0
        groups[-1].append(file)
        held += count
    return groups


def _scan_table(path: Path, version: int | None) -> pl.LazyFrame:
    """The data files of the table's version, scanned as one frame. Its log says which files
    are live; polars reads them (`pl.scan_delta` reads the same files, but through pyarrow,
    whose import alone takes 0.46 s of every command that reads the table)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    try:
        files = list(data_files(DeltaTable(str(path), version=version)))
    except (DeltaError, OSError, ValueError) as exc:
        raise OrderpipeError(f"cannot read {path}: {first_line(exc)}") from None
    if not files:
        return pl.LazyFrame(schema=schema.CLEAN_SCHEMA)
    return pl.scan_parquet([path / file for file in files], glob=False)


def data_files(table: object) -> dict[str, int]:
    """(path inside the table, rows) of a `DeltaTable`'s live data files, in event-date order."""
    actions = pl.DataFrame(table.get_add_actions(flatten=True))  # type: ignore[attr-defined]
    if actions.height == 0:
        return {}
    actions = actions.sort(f"partition.{PARTITION}", "path")
    return dict(zip(actions["path"].to_list(), actions["num_records"].to_list(), strict=True))


def read_table_files(path: Path, files: list[str]) -> pl.DataFrame:
    """The clean records in these data files of the table."""
    frames = [pl.read_parquet(path / file).select(schema.CLEAN_COLUMNS) for file in files]
    return pl.concat([pl.DataFrame(schema=schema.CLEAN_SCHEMA), *frames]).cast(
        dict(schema.CLEAN_SCHEMA)
    )


def row_keys(path: Path, files: list[str]) -> pl.DataFrame:
    """(event_id, row hash) of every row in these data files of the table (files removed from
    disk since, by a vacuum, are left out)."""
    present = [file for file in files if (path / file).is_file()]
    return read_table_files(path, present).select("event_id", row_hash().alias("row_hash"))


def without_rows_in(frame: pl.DataFrame, keys: pl.DataFrame) -> pl.DataFrame:
    """The rows of `frame` that are not, identical, among `keys` (see `row_keys`)."""
    if keys.height == 0:
        return frame
    hashed = frame.with_columns(row_hash().alias("row_hash"))
    return hashed.join(keys, on=["event_id", "row_hash"], how="anti").drop("row_hash")


def read_changes(
    path: Path, changes: TableFiles, rows: int, unchanged: pl.DataFrame | None = None
) -> Iterator[pl.DataFrame]:
    """The rows of the files in `changes`, about `rows` at a time (whole days), less the rows
    that the files they replaced held identical (`unchanged`: their `row_keys`, read here when
    not given): a day that a run rewrote holds the rows it kept as they were."""
    if unchanged is None:
        unchanged = row_keys(path, changes.replaced)
    for group in file_groups(changes.files, rows):
        yield without_rows_in(read_table_files(path, group), unchanged)


def row_hash() -> pl.Expr:
    """A hash of the whole clean record (every contract column, typed as the contract)."""
    columns = [pl.col(name).cast(dtype) for name, dtype in schema.CLEAN_SCHEMA.items()]
    return pl.struct(columns).hash(seed=0)
