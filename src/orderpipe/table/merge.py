"""Merging a deduplicated run into the clean table, day by day: latest event_time wins, and only
the days (partitions) a run touches are rewritten, each as one new data file, in one commit.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from orderpipe.core import schema
from orderpipe.core.crashpoints import crash_point
from orderpipe.core.progress import Progress
from orderpipe.table.read import PARTITION, is_table, row_hash, table_version

TABLE_SCHEMA: dict[str, pl.DataType] = {**schema.CLEAN_SCHEMA, PARTITION: pl.Date()}
MERGE_INFO = "orderpipe.merge"  # commit info: the table's rows before, events replaced
UNREADABLE = -1  # a table whose log cannot be read now: whether a write committed is unknown
# the name of a data file this module writes (`_data_file`): its writer's pid, then a uuid
DATA_FILE = re.compile(r"^part-p(?P<pid>\d+)-[0-9a-f]+\.parquet$")


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
    progress: Progress | None = None,
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
        return _rebuild(path, run, progress, info)
    stored = pl.scan_delta(str(path))
    skip, replaced = _skipped_and_replaced(run, stored)
    dates = _dates_to_rewrite(run, skip, replaced)
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


def _rebuild(
    path: Path,
    run: Run,
    progress: Progress | None,
    info: dict[str, Any],
) -> MergeResult:
    """The table made from the run alone (a first run, or `replace`), in one commit."""
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


def _skipped_and_replaced(run: Run, stored: pl.LazyFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The run's event_ids that change nothing (`skip`: older than the stored row, or the same
    time and an identical row), and the stored rows the others replace (event_id, and the date
    they are stored under)."""
    matched = (
        run.rows()
        .select("event_id", "event_time", PARTITION, row_hash().alias("row_hash"))
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
            .select("event_id", row_hash().alias("row_hash"))
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
    return skip, replaced


def _dates_to_rewrite(run: Run, skip: pl.DataFrame, replaced: pl.DataFrame) -> list[date]:
    """The partitions that gain a row of the run or lose a stored one, in date order."""
    incoming_dates = (
        run.rows()
        .join(skip.lazy(), on="event_id", how="anti")
        .select(pl.col(PARTITION).unique())
        .collect(engine="streaming")[PARTITION]
    )
    return sorted(set(incoming_dates.to_list()) | set(replaced[PARTITION].to_list()))


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
    progress: Progress | None = None,
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
