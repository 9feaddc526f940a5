"""The processed (clean) dataset: a Delta Lake table partitioned by event date, merged run after
run (latest event_time wins) rewriting only the partitions a run touches; its readers and exports.

No SQLAlchemy here: train reads the table through it and must stay light. `deltalake` is imported
only where a table is written or its log is read.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from orderpipe import schema
from orderpipe.errors import OrderpipeError
from orderpipe.fileio import alive, atomic_path, disk_full_as_error, remove_leftovers

PARTITION = "event_date"  # the UTC date of event_time: one folder per day of events
TABLE_SCHEMA: dict[str, pl.DataType] = {**schema.CLEAN_SCHEMA, PARTITION: pl.Date()}
EXPORT_FORMATS = ("csv", "jsonl", "parquet")


def is_table(path: Path) -> bool:
    """True when `path` is a Delta table (a folder with a `_delta_log`)."""
    return (path / "_delta_log").is_dir()


def table_version(path: Path) -> int:
    """The table's latest committed version."""
    from deltalake import DeltaTable

    return DeltaTable(str(path)).version()


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
        raise OrderpipeError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
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
        raise OrderpipeError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None


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
        raise OrderpipeError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    method = f"stratified by is_returned: per class, the rows of smallest hash(event_id, {seed})"
    return sample, Sample(seen, sample.height, method)


def as_text_records(dataset: pl.DataFrame) -> pl.DataFrame:
    """The clean record with event_time as contract text: the CSV, JSON Lines and Kafka form."""
    return dataset.with_columns(pl.col("event_time").dt.strftime(schema.EVENT_TIME_FORMAT))


def iter_table_frames(path: Path) -> Iterator[pl.DataFrame]:
    """The table's clean records one data file at a time, in event-date order (each file in
    event_time order): memory holds one file, whatever the table's size."""
    from deltalake import DeltaTable

    for file in _files(DeltaTable(str(path))):
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
    current = _files(table)
    seen: set[str] = set()
    if since is not None and since <= version:
        try:
            seen = set(_files(DeltaTable(str(path), version=since)))
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
        files = list(_files(DeltaTable(str(path), version=version)))
    except (DeltaError, OSError, ValueError) as exc:
        raise OrderpipeError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    if not files:
        return pl.LazyFrame(schema=schema.CLEAN_SCHEMA)
    return pl.scan_parquet([path / file for file in files], glob=False)


def _files(table: object) -> dict[str, int]:
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
    return read_table_files(path, present).select("event_id", _row_hash().alias("row_hash"))


def without_rows_in(frame: pl.DataFrame, keys: pl.DataFrame) -> pl.DataFrame:
    """The rows of `frame` that are not, identical, among `keys` (see `row_keys`)."""
    if keys.height == 0:
        return frame
    hashed = frame.with_columns(_row_hash().alias("row_hash"))
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


# ---------------------------------------------------------------- merging a run into the table
@dataclass(frozen=True)
class MergeResult:
    """What one run changed in the table."""

    version: int  # the table's version after the run (unchanged when nothing changed)
    committed: bool  # False: the run brought nothing new, no version was written
    rows: int  # rows in the table after the run
    new_events: int  # event_ids the table did not hold
    changed_events: int  # held events whose stored row the run replaced with a different one
    partitions: int  # partitions (event dates) rewritten


def with_partition(frame: pl.DataFrame) -> pl.DataFrame:
    """The clean columns plus the partition column (the UTC date of event_time)."""
    return frame.select(*schema.CLEAN_COLUMNS, pl.col("event_time").dt.date().alias(PARTITION))


class Run:
    """A deduplicated run (one row per event_id, clean columns) read by event date: in memory,
    or staged on disk (`stage`) when it is large, one file per call in date order, whose row
    groups' statistics let a day's read skip the other days."""

    ROW_GROUP = 32_768

    def __init__(self, frame: pl.DataFrame | None = None, folder: Path | None = None) -> None:
        self.folder = folder
        self._days: dict[date, pl.DataFrame] = {}
        self._staged_days: set[date] = set()
        if frame is not None:
            parts = with_partition(frame).partition_by(PARTITION, as_dict=True, maintain_order=True)
            self._days = {day: part for (day,), part in parts.items()}
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def stage(self, frame: pl.DataFrame, name: str) -> None:
        """Add deduplicated rows (no event_id of another call) to a staged run."""
        assert self.folder is not None, "stage() is for a run made with a folder"
        rows = with_partition(frame).sort(PARTITION, "event_time")
        rows.write_parquet(self.folder / f"{name}.parquet", row_group_size=self.ROW_GROUP)
        self._staged_days.update(rows[PARTITION].unique().to_list())

    def dates(self) -> list[date]:
        return sorted(self._days if self.folder is None else self._staged_days)

    def days(self) -> Iterator[tuple[date, pl.DataFrame]]:
        """(date, its rows) in date order, one day in memory at a time: the staged files are
        read once, side by side (each is in date order), a batch of each at a time."""
        if self.folder is None:
            yield from sorted(self._days.items())
            return
        import pyarrow.parquet as pq

        files = sorted(self.folder.glob("*.parquet"))
        # small batches: one of each file is held at a time (16 files x 32k rows was half of a
        # 1M-event run)
        batches = [pq.ParquetFile(file).iter_batches(batch_size=4_096) for file in files]
        held = [_empty() for _ in files]  # rows read from each file, not handed over yet
        for day in self.dates():
            parts = []
            for index, reader in enumerate(batches):
                while True:
                    if held[index].height == 0:
                        batch = next(reader, None)
                        if batch is None:
                            break
                        held[index] = pl.from_arrow(batch).cast(TABLE_SCHEMA)  # type: ignore[union-attr]
                    rows = held[index]
                    count = rows.select((pl.col(PARTITION) == day).sum()).item()
                    parts.append(rows.head(count))
                    held[index] = rows.slice(count)
                    if held[index].height:  # the file's next rows are of a later day
                        break
            yield day, pl.concat(parts)

    def rows(self) -> pl.LazyFrame:
        if self.folder is None:
            return pl.concat([_empty(), *self._days.values()]).lazy()
        if not self._staged_days:
            return _empty().lazy()
        return pl.scan_parquet(self.folder / "*.parquet")


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema=TABLE_SCHEMA)


def merge_into_table(
    path: Path,
    run: Run,
    *,
    replace: bool = False,
    progress: Callable[[str, int, int | None], None] | None = None,
    commit_info: dict[str, Any] | None = None,
) -> MergeResult:
    """Merge a deduplicated run into the table at `path`.

    Latest event_time wins; on a tie the run wins, and a row identical to the stored one changes
    nothing. Only the partitions that gain or lose a row are rewritten, in one commit; a run that
    changes nothing commits nothing. `replace` rebuilds the table from the run alone.
    `commit_info` is kept in the commit (`last_commit_info`), with the merge's own figures
    (`MERGE_INFO`): what the caller must finish after the commit, if it dies first.
    """
    info = dict(commit_info or {})
    if replace or not is_table(path):
        dates = run.dates()
        info[MERGE_INFO] = json.dumps({"rows_before": 0, "changed_events": 0})
        version = _write(
            path,
            run,
            dates,
            skip=None,
            stored=None,
            overwrite=is_table(path),
            progress=progress,
            info=info,
        )
        rows = _rows(path)
        return MergeResult(version, True, rows, rows, 0, len(dates))
    stored = pl.scan_delta(str(path))
    matched = (
        run.rows()
        .select("event_id", "event_time", PARTITION, _row_hash().alias("row_hash"))
        .join(
            stored.select("event_id", "event_time", PARTITION),
            on="event_id",
            how="inner",
            suffix="_stored",
        )
        .collect(engine="streaming")
    )
    ties = matched.filter(pl.col("event_time") == pl.col("event_time_stored"))
    identical = pl.DataFrame(schema={"event_id": pl.String})
    if ties.height:
        stored_hashes = (
            stored.filter(pl.col(PARTITION).is_in(ties[f"{PARTITION}_stored"].unique().implode()))
            .join(ties.lazy().select("event_id"), on="event_id", how="semi")
            .select("event_id", _row_hash().alias("row_hash"))
            .collect(engine="streaming")
        )
        identical = ties.join(stored_hashes, on=["event_id", "row_hash"], how="semi").select(
            "event_id"
        )
    older = matched.filter(pl.col("event_time") < pl.col("event_time_stored")).select("event_id")
    skip = pl.concat([older, identical])  # run rows that change nothing
    replaced = matched.join(skip, on="event_id", how="anti").select(
        "event_id", pl.col(f"{PARTITION}_stored").alias(PARTITION)
    )
    incoming_dates = (
        run.rows()
        .join(skip.lazy(), on="event_id", how="anti")
        .select(pl.col(PARTITION).unique())
        .collect(engine="streaming")[PARTITION]
    )
    dates = sorted(set(incoming_dates.to_list()) | set(replaced[PARTITION].to_list()))
    if not dates:
        return MergeResult(table_version(path), False, _rows(path), 0, 0, 0)
    rows_before = _rows(path)
    info[MERGE_INFO] = json.dumps({"rows_before": rows_before, "changed_events": replaced.height})
    version = _write(
        path,
        run,
        dates,
        skip=skip,
        stored=(stored, replaced),
        overwrite=True,
        progress=progress,
        info=info,
    )
    rows = _rows(path)
    return MergeResult(version, True, rows, rows - rows_before, replaced.height, len(dates))


def _row_hash() -> pl.Expr:
    columns = [pl.col(name).cast(dtype) for name, dtype in schema.CLEAN_SCHEMA.items()]
    return pl.struct(columns).hash(seed=0)


def _rows(path: Path) -> int:
    return pl.scan_delta(str(path)).select(pl.len()).collect().item()


def _write(
    path: Path,
    run: Run,
    dates: list[date],
    *,
    skip: pl.DataFrame | None,
    stored: tuple[pl.LazyFrame, pl.DataFrame] | None,
    overwrite: bool,
    progress: Callable[[str, int, int | None], None] | None = None,
    info: dict[str, Any] | None = None,
) -> int:
    """One commit: each partition of `dates` becomes its stored rows (minus the `replaced` ones)
    plus the run's rows of that date (minus `skip`), in event_time order.

    Each partition is written as one Parquet file as soon as it is made (one partition in
    memory at a time: delta-rs' own writer held every partition of a write until its end), then
    one transaction adds them all and removes the files they replace. A write that fails
    before its commit (a full disk, an error) removes the data files it wrote: the table is as
    it was, and so is the space it takes."""
    from deltalake import DeltaTable, Schema
    from deltalake.transaction import CommitProperties, create_table_with_add_actions

    from orderpipe.faults import crash_point

    commit = CommitProperties(custom_metadata=info) if info else None
    with _removed_unless_committed(path) as written:
        actions = []
        days = run.days()
        upcoming = next(days, None)
        for day in dates:
            while upcoming is not None and upcoming[0] < day:  # every row of that day skipped
                upcoming = next(days, None)
            incoming = _empty().lazy()
            if upcoming is not None and upcoming[0] == day:
                incoming = upcoming[1].lazy()
            if skip is not None:
                incoming = incoming.join(skip.lazy(), on="event_id", how="anti")
            parts = [incoming.select(list(TABLE_SCHEMA))]
            if stored is not None:
                table, replaced = stored
                gone = replaced.filter(pl.col(PARTITION) == day).select("event_id").lazy()
                kept = table.filter(pl.col(PARTITION) == day).join(gone, on="event_id", how="anti")
                parts.append(kept.select(list(TABLE_SCHEMA)))
            frame = pl.concat(parts).cast(TABLE_SCHEMA).sort("event_time", "event_id").collect()
            if frame.height:  # a day left with no row keeps no file
                actions.append(_data_file(path, day, frame.drop(PARTITION), written))
            if progress:
                progress("days written", len(actions), len(dates))
            crash_point("etl.day-written")
        schema = _empty().to_arrow().schema
        if not is_table(path):
            create_table_with_add_actions(
                str(path),
                Schema.from_arrow(schema),
                actions,
                mode="error",
                partition_by=[PARTITION],
                commit_properties=commit,
            )
        else:
            filters = None
            if stored is not None:  # replace these days only; without, the whole table (overwrite)
                filters = [(PARTITION, "in", [day.isoformat() for day in dates])]
            DeltaTable(str(path)).create_write_transaction(
                actions,
                mode="overwrite" if overwrite or stored is not None else "append",
                schema=schema,
                partition_by=[PARTITION],
                partition_filters=filters,
                commit_properties=commit,
            )
        return table_version(path)


UNREADABLE = -1  # a table whose log cannot be read now: whether a write committed is unknown


@contextlib.contextmanager
def _removed_unless_committed(path: Path) -> Iterator[list[Path]]:
    """Yield a list for the data files a write makes (each listed before it is written); if the
    block fails before its commit, they are removed, with the folders they alone needed."""
    written: list[Path] = []
    before, existed = _committed_version(path), path.exists()
    try:
        yield written
    except BaseException:
        after = _committed_version(path)
        if after is not UNREADABLE and after == before:  # it did not commit
            for file in written:
                file.unlink(missing_ok=True)
            for folder in {file.parent for file in written}:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # a partition folder this write made, if it is empty
            if not existed:
                shutil.rmtree(path, ignore_errors=True)  # the table this write was making
        raise


def _committed_version(path: Path) -> int | None:
    """The table's latest committed version; None when there is no table (yet)."""
    from deltalake.exceptions import DeltaError

    if not is_table(path):
        return None
    try:
        return table_version(path)
    except (DeltaError, OSError):
        return UNREADABLE


def _data_file(table: Path, day: date, frame: pl.DataFrame, written: list[Path]) -> Any:
    """Write one partition's rows as a new data file of the table; its add action (with the
    row count and event_time range readers use to skip files)."""
    import time
    import uuid

    from deltalake.transaction import AddAction

    # the writer's pid in the name: a file no commit took, of a process no longer alive, is an
    # orphan (`orphan_files`)
    relative = f"{PARTITION}={day.isoformat()}/part-p{os.getpid()}-{uuid.uuid4().hex}.parquet"
    file = table / relative
    file.parent.mkdir(parents=True, exist_ok=True)
    written.append(file)  # before the write: a failed write leaves part of a file
    frame.write_parquet(file, statistics=True)
    times = frame["event_time"]
    stats = {
        "numRecords": frame.height,
        # milliseconds, rounded outwards: a reader's range check never skips a row
        "minValues": {"event_time": f"{times.min():%Y-%m-%dT%H:%M:%S.%f}"[:-3] + "Z"},
        "maxValues": {
            "event_time": f"{times.max() + timedelta(milliseconds=1):%Y-%m-%dT%H:%M:%S.%f}"[:-3]
            + "Z"
        },
        "nullCount": {"event_time": 0, "event_id": 0},
    }
    return AddAction(
        path=relative,
        size=file.stat().st_size,
        partition_values={PARTITION: day.isoformat()},
        modification_time=int(time.time() * 1000),
        data_change=True,
        stats=json.dumps(stats),
    )


MERGE_INFO = "orderpipe.merge"  # commit info: the table's rows before, events replaced
_DATA_FILE = re.compile(r"^part-p(?P<pid>\d+)-[0-9a-f]+\.parquet$")


def last_commit_info(path: Path) -> tuple[int, dict[str, Any]]:
    """(version, the commit's information: its custom metadata among it) of the table's last
    commit."""
    from deltalake import DeltaTable

    table = DeltaTable(str(path))
    (last,) = table.history(1)
    return table.version(), last


def orphan_files(path: Path) -> list[Path]:
    """Data files that a write killed before its commit left in the table: named by a process
    that is no longer alive, and in no version of the table's log (so no reader can see them).
    Files of a running write, and files orderpipe did not name, are never listed."""
    if not is_table(path):
        return []
    candidates = [
        file
        for file in path.glob(f"{PARTITION}=*/part-p*.parquet")
        if (match := _DATA_FILE.match(file.name)) and not alive(int(match["pid"]))
    ]
    if not candidates:
        return []
    from deltalake.exceptions import DeltaError

    try:
        referenced = _referenced_files(path)
    except (DeltaError, OSError):  # a log that cannot be read now: no file is known to be unused
        return []
    return sorted(f for f in candidates if f.relative_to(path).as_posix() not in referenced)


def _referenced_files(path: Path) -> set[str]:
    """Every data file a version still in the log adds or removes, and the current ones."""
    from urllib.parse import unquote

    from deltalake import DeltaTable

    referenced = set(_files(DeltaTable(str(path))))
    for log in (path / "_delta_log").glob("*.json"):
        with contextlib.suppress(OSError), log.open(encoding="utf-8") as lines:
            for line in lines:
                with contextlib.suppress(ValueError):
                    action = json.loads(line)
                    for kind in ("add", "remove"):
                        if kind in action:
                            referenced.add(unquote(action[kind]["path"]))
    return referenced


def remove_orphans(path: Path) -> list[Path]:
    """Remove the `orphan_files` of the table; returns what was removed."""
    removed = []
    for file in orphan_files(path):
        with contextlib.suppress(FileNotFoundError):
            file.unlink()
        removed.append(file)
        with contextlib.suppress(OSError):
            file.parent.rmdir()  # a partition folder that only the orphan needed
    return removed


# ---------------------------------------------------------------- exports
@dataclass(frozen=True)
class ExportResult:
    """One export of the table."""

    output: Path
    format: str
    rows: int
    table_version: int | None
    seconds: float


# bytes per row of each export (measured at 200k rows: 169, 437 and 39), with some margin
EXPORT_ROW_BYTES = {"csv": 180, "jsonl": 460, "parquet": 45}


def export_dataset(source: Path, output: Path, fmt: str) -> ExportResult:
    """Stream the clean dataset at `source` into one CSV, JSON Lines or Parquet file, written
    atomically; memory does not grow with the table."""
    import time

    if fmt not in EXPORT_FORMATS:
        raise OrderpipeError(f"unknown export format {fmt!r}: choose {', '.join(EXPORT_FORMATS)}")
    began = time.perf_counter()
    version = table_version(source) if is_table(source) else None
    frame = scan_clean_dataset(source, version)  # one version, whatever etl commits meanwhile
    if fmt != "parquet":
        frame = frame.with_columns(pl.col("event_time").dt.strftime(schema.EVENT_TIME_FORMAT))
    remove_leftovers(output.parent, {output.name})  # of exports killed before they could

    def needed() -> int | None:
        return (
            None if version is None else int(table_files_since(source).rows * EXPORT_ROW_BYTES[fmt])
        )

    try:
        with disk_full_as_error(f"the {fmt} export", output, needed), atomic_path(output) as tmp:
            if fmt == "csv":
                frame.sink_csv(tmp)
            elif fmt == "jsonl":
                frame.sink_ndjson(tmp)
            else:
                frame.sink_parquet(tmp, statistics=True)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise OrderpipeError(f"cannot export to {output}: {str(exc).splitlines()[0]}") from None
    rows = scan_clean_dataset(source, version).select(pl.len()).collect().item()
    return ExportResult(output, fmt, rows, version, time.perf_counter() - began)
