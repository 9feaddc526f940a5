"""Ingest: the clean table -> table_customers, table_orders, table_events (bulk, idempotent).

Through the one write path (`db.writer.TableWriter`), customers first, then units of whole days
(about READ_ROWS events): a unit's orders and events are one transaction, so a reader never
sees an order without its events. From etl's table, only the data files added since the version
last ingested into that database are read (its watermark, `orderpipe_ingest_watermark`); each
unit's transaction also records the last day it stored, so a run cut short (a kill, a database
that stayed away) is carried on by the next one, and the last unit moves the watermark.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orderpipe.core.crashpoints import crash_point
from orderpipe.core.errors import OrderpipeError
from orderpipe.db.queries import ingest_progress, ingested_version

if TYPE_CHECKING:
    import polars as pl
    from sqlalchemy import Connection, Engine
    from sqlalchemy.engine import URL

    from orderpipe.core.progress import Progress
    from orderpipe.db.writer import TableWriter
    from orderpipe.table.read import TableFiles


@dataclass(frozen=True)
class IngestResult:
    """What one ingest wrote."""

    source: Path
    database: str
    method: str
    chunk_size: int
    events: int
    customers: int
    orders: int
    seconds: float
    events_per_second: float
    table_version: int | None = None  # etl's table: the version now in the database
    since_version: int | None = None  # etl's table: only what changed after this version


# Rows read from etl's table and written at a time (whole days: a day is one data file).
READ_ROWS = 500_000


def ingest_dataset(
    clean: pl.DataFrame,
    database_url: str | URL,
    *,
    chunk_size: int | None = None,
    local_infile: bool = True,
    source: Path = Path("-"),
    progress: Progress | None = None,
) -> IngestResult:
    """Upsert the clean records into the three tables: customers first, then each unit of
    READ_ROWS records' orders and events in one transaction."""
    from orderpipe.db.engine import database_errors, masked
    from orderpipe.db.models import latest_customers

    began = time.perf_counter()
    units = [clean.slice(offset, READ_ROWS) for offset in range(0, clean.height, READ_ROWS)]
    with database_errors(database_url), _writer(database_url, local_infile) as w:
        customers = latest_customers(units)
        w.write_chunked({"table_customers": customers}, chunk_size=chunk_size)
        counts = _write_units(w, iter(units), clean.height, chunk_size, progress)
        method, size = w.method, w.chunk_size(chunk_size)
    # an order whose events fall in two units is written by both: count it once
    counts.update(customers=customers.height, orders=clean["order_id"].n_unique())
    return _result(source, masked(database_url), method, size, counts, began)


def _result(
    source: Path,
    database: str,
    method: str,
    chunk_size: int,
    counts: dict[str, int],
    began: float,
    **table: int | None,
) -> IngestResult:
    seconds = time.perf_counter() - began
    events = counts["events"]
    return IngestResult(
        source=source,
        database=database,
        method=method,
        chunk_size=chunk_size,
        events=events,
        customers=counts["customers"],
        orders=counts["orders"],
        seconds=seconds,
        events_per_second=events / seconds if seconds else 0.0,
        **table,  # type: ignore[arg-type]
    )


def run_ingest(
    source: Path,
    database_url: str | URL,
    *,
    chunk_size: int | None = None,
    local_infile: bool = True,
    progress: Progress | None = None,
    full: bool = False,
) -> IngestResult:
    """Ingest the clean dataset at `source`: from etl's table, what changed since the last
    ingest into this database (everything with `full`); from a file, everything."""
    from orderpipe.db.engine import masked
    from orderpipe.db.writer import DatabaseGone
    from orderpipe.table.read import is_table, read_clean_dataset

    try:
        if is_table(source):
            return _ingest_table(
                source,
                database_url,
                chunk_size=chunk_size,
                local_infile=local_infile,
                progress=progress,
                full=full,
            )
        return ingest_dataset(
            read_clean_dataset(source),
            database_url,
            chunk_size=chunk_size,
            local_infile=local_infile,
            source=source,
            progress=progress,
        )
    except DatabaseGone as exc:
        again = (
            "it carries on from the last day stored"
            if is_table(source) and not full
            else "it writes everything again"
        )
        raise OrderpipeError(
            f"ingest stopped: {masked(database_url)}: {exc}; each order is stored with its "
            f"events or not at all, and running the same `orderpipe ingest` again is safe: "
            f"{again}"
        ) from exc


def _ingest_table(
    source: Path,
    database_url: str | URL,
    *,
    chunk_size: int | None,
    local_infile: bool,
    progress: Progress | None,
    full: bool,
) -> IngestResult:
    from orderpipe.db.engine import database_errors, deferred_indexes, masked
    from orderpipe.db.writer import BATCH_RETRY, retrying
    from orderpipe.table.read import table_files_since, table_id

    began = time.perf_counter()
    counts = {"events": 0, "customers": 0, "orders": 0}
    with database_errors(database_url), _writer(database_url, local_infile) as w:
        watermark = _Watermark(table_id(source), source)

        def where_from() -> tuple[int | None, Resume | None]:
            if full:
                return None, None
            since = ingested_version(w.engine, watermark.table_id)
            return since, watermark.resume(w.engine, since)

        since, resume = retrying(where_from, BATCH_RETRY)
        changes = table_files_since(source, since, upto=resume.version if resume else None)
        first_since = changes.since
        with deferred_indexes(w.engine) as fresh:
            w.fresh = fresh
            while True:
                done = _ingest_changes(w, source, changes, watermark, resume, chunk_size, progress)
                for name in counts:
                    counts[name] += done[name]
                if resume is None:
                    break
                # a resumed run finished the version it was writing: on to the latest one
                latest = table_files_since(source, changes.version)
                if latest.version == changes.version:
                    break
                changes, resume = latest, None
        method, size = w.method, w.chunk_size(chunk_size)
    versions = {"table_version": changes.version, "since_version": first_since}
    return _result(source, masked(database_url), method, size, counts, began, **versions)


def _writer(database_url: str | URL, local_infile: bool, *, create: bool = True) -> TableWriter:
    from orderpipe.db.writer import BATCH_RETRY, TableWriter

    return TableWriter(database_url, local_infile=local_infile, retry=BATCH_RETRY, create=create)


def _ingest_changes(
    w: TableWriter,
    source: Path,
    changes: TableFiles,
    watermark: _Watermark,
    resume: Resume | None,
    chunk_size: int | None,
    progress: Progress | None,
) -> dict[str, int]:
    """Write what `changes` holds: customers first (each once, its latest state over every
    day read), then whole days of orders and events a transaction at a time, each with the
    watermark's progress; the last one moves the watermark to the changes' version."""
    from orderpipe.db.models import latest_customers
    from orderpipe.table.read import file_groups, read_changes, row_keys

    if resume is not None and resume.since == changes.since and resume.version == changes.version:
        changes = changes.after(resume.through)  # the days up to it are in the database already
    groups = file_groups(changes.files, READ_ROWS)  # the units read_changes reads
    unchanged = row_keys(source, changes.replaced)  # read once, for both passes

    def read_all() -> Iterator[pl.DataFrame]:
        seen = 0
        for rows in read_changes(source, changes, READ_ROWS, unchanged):
            seen += rows.height
            if progress:
                progress("customers", seen, changes.rows)
            yield rows

    # Parents first. A customer orders on many days: its latest state over all the groups is
    # written once (a write per group was 3.9M customer rows for 1.3M at 10M events).
    customers = latest_customers(read_all())
    w.write_chunked({"table_customers": customers}, chunk_size=chunk_size)
    units = read_changes(source, changes, READ_ROWS, unchanged)
    marks = [watermark.through(changes, group[-1]) for group in groups[:-1]]
    counts = _write_units(
        w, units, changes.rows, chunk_size, progress, [*marks, watermark.complete(changes)]
    )
    if not groups:  # nothing new: the watermark moves on all the same
        w.write({}, before_commit=watermark.complete(changes))
    return {**counts, "customers": customers.height}


def _write_units(
    w: TableWriter,
    units: Iterator[pl.DataFrame],
    total: int,
    chunk_size: int | None,
    progress: Progress | None,
    marks: list[Callable[[Connection], None]] | None = None,
) -> dict[str, int]:
    """Each unit's orders and events in one transaction (with its mark, when given): a reader
    never sees an order without its events, nor an event without its order."""
    with _Units(w) as writing:
        return writing.write_all(units, total, chunk_size, progress, marks or [])


class _Units:
    """Writes units in order, each in one transaction. On MySQL/MariaDB, two at a time on two
    connections: the server runs one statement per connection on one core, so two units use
    two (1M events into MariaDB, whole process: 16.4 s; 25.6 s with one connection). SQLite has
    one writer at a time: there, in line.

    A unit's mark (the run's progress: "stored through this day") goes into its transaction
    only when every unit before it has committed, and then it marks through the later units
    already committed too (the second connection's unit that committed first). Otherwise it
    records nothing, and a run cut short redoes that unit (upserts are idempotent). The last
    mark (the watermark) is written on its own at the end when no unit carried it.
    """

    def __init__(self, w: TableWriter) -> None:
        import threading
        from concurrent.futures import ThreadPoolExecutor

        self.writers = [w]
        self.pool: ThreadPoolExecutor | None = None
        if w.engine.dialect.name != "sqlite":
            self.pool = ThreadPoolExecutor(2, thread_name_prefix="orderpipe-unit")
        self.lock = threading.Lock()
        self.committed: set[int] = set()
        self.marked: set[int] = set()

    def __enter__(self) -> _Units:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        for writer in self.writers[1:]:
            writer.close()

    def _writer_for(self, index: int) -> TableWriter:
        """Unit `index`'s writer: on MySQL/MariaDB, every other unit goes to a second one,
        opened when the second unit comes (retried like a write when the server is away)."""
        from orderpipe.db.writer import BATCH_RETRY, retrying

        if self.pool is None or index % 2 == 0:
            return self.writers[0]
        if len(self.writers) == 1:
            first = self.writers[0]
            self.writers.append(
                retrying(
                    # not create_tables: it would add back the keys the load defers
                    lambda: _writer(first.engine.url, first.load_data, create=False),
                    BATCH_RETRY,
                )
            )
            self.writers[1].fresh = first.fresh
        return self.writers[1]

    def write_all(
        self,
        units: Iterator[pl.DataFrame],
        total: int,
        chunk_size: int | None,
        progress: Progress | None,
        marks: list[Callable[[Connection], None]],
    ) -> dict[str, int]:
        from collections import deque
        from concurrent.futures import Future

        from orderpipe.db.models import table_frames

        counts = {"events": 0, "customers": 0, "orders": 0}
        size = self.writers[0].chunk_size(chunk_size)
        in_flight: deque[Future[None]] = deque()
        written = 0
        for index, rows in enumerate(units):
            frames = table_frames(rows, ("table_orders", "table_events"))
            on_progress = _events_progress(progress, counts["events"], total)
            counts["orders"] += frames["table_orders"].height
            counts["events"] += frames["table_events"].height
            if self.pool is None:
                self._write(self.writers[0], index, frames, size, marks, on_progress)
            else:
                if len(in_flight) == 2:
                    in_flight.popleft().result()
                args = (self._writer_for(index), index, frames, size, marks, on_progress)
                in_flight.append(self.pool.submit(self._write, *args))
            written += 1
        while in_flight:
            in_flight.popleft().result()
        if marks and written and written - 1 not in self.marked:  # the last mark, on its own
            self.writers[0].write({}, before_commit=marks[written - 1])
        return counts

    def _write(
        self,
        writer: TableWriter,
        index: int,
        frames: dict[str, pl.DataFrame],
        size: int,
        marks: list[Callable[[Connection], None]],
        progress: Progress | None,
    ) -> None:
        def before_commit(conn: Connection) -> None:
            with self.lock:
                if not all(earlier in self.committed for earlier in range(index)):
                    return
                last = index  # and the later units that committed before this one
                while last + 1 in self.committed:
                    last += 1
            if last < len(marks):
                marks[last](conn)
                self.marked.update(range(index, last + 1))

        writer.write(frames, chunk_size=size, before_commit=before_commit, progress=progress)
        with self.lock:
            self.committed.add(index)
        crash_point("ingest.unit-committed")


def _events_progress(progress: Progress | None, before: int, total: int) -> Progress | None:
    """The writer's progress of table_events in one unit, as progress over all of them."""
    if progress is None:
        return None

    def on_progress(name: str, done: int, _total: int) -> None:
        if name == "table_events":
            progress("events", before + done, total)

    return on_progress


@dataclass(frozen=True)
class Resume:
    """Where a run that was cut short stopped: its changes (`since` -> `version`) are stored
    up to the data file `through` (in the order ingest reads them)."""

    since: int | None
    version: int
    through: str


class _Watermark:
    """The ingest watermark of one etl table, and the progress of a run towards a version.

    The watermark row (source_id = the table's id) holds the version fully ingested. A second
    row of the same table (source_id = id + "+run") holds the run in progress: the version it
    writes, and the last data file stored, as JSON in `source_path`; empty once it is done.
    Both change only inside the transaction of the unit they describe.
    """

    def __init__(self, table_id: str, source: Path) -> None:
        self.table_id = table_id
        self.run_id = f"{table_id}+run"
        self.path = str(source.resolve())[:1024]

    def resume(self, engine: Engine, since: int | None) -> Resume | None:
        """The progress a run cut short left for these changes (since `since`), if any."""
        if (stored := ingest_progress(engine, self.run_id)) is None:
            return None
        version, progress = stored
        try:
            state = json.loads(progress)
            resume = Resume(state["since"], int(version), str(state["through"]))
        except (ValueError, KeyError, TypeError):
            return None  # not ours to read: start from the watermark
        return resume if resume.since == since else None

    def through(self, changes: TableFiles, file: str) -> Callable[[Connection], None]:
        """Record that the changes are stored up to `file` (run in the unit's transaction)."""
        state = json.dumps({"since": changes.since, "through": file})
        return lambda conn: self._set(conn, self.run_id, state, changes.version)

    def complete(self, changes: TableFiles) -> Callable[[Connection], None]:
        """Move the watermark to the changes' version, and clear the run's progress."""

        def mark(conn: Connection) -> None:
            self._set(conn, self.table_id, self.path, changes.version)
            self._set(conn, self.run_id, "", changes.version)

        return mark

    @staticmethod
    def _set(conn: Connection, source_id: str, path: str, version: int) -> None:
        from datetime import UTC, datetime

        from orderpipe.db.models import IngestWatermark
        from orderpipe.db.upsert import set_row

        row = {
            "source_id": source_id,
            "source_path": path,
            "table_version": version,
            "ingested_at": datetime.now(UTC).replace(tzinfo=None),
        }
        set_row(conn, IngestWatermark.__table__, row)
