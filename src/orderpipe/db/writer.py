"""The one database write path: table frames -> upserts, one transaction per call or per chunk.

Batch commands (ingest, predict) write in chunks; the stream sink writes a micro-batch at once.
On SQLite, the WAL checkpoints run in a thread of their own (`db.engine.WalCheckpointer`), beside
the next write instead of inside each commit (stream into 2M stored events: +11-17 % events/s).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from orderpipe.core.errors import OrderpipeError
from orderpipe.core.progress import Progress
from orderpipe.db.errors import Fault, classify_database, reason_of

if TYPE_CHECKING:
    import polars as pl
    from sqlalchemy import Connection
    from sqlalchemy.engine import URL

# (connection, rows each table's upsert inserted or updated, where known) -> more frames
Then = Callable[["Connection", Mapping[str, int | None]], Mapping[str, "pl.DataFrame"]]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Retry:
    """How a batch write meets a database that goes away: a transaction that fails on a
    transient fault (connection lost, server restarting, deadlock, lock timeout: the taxonomy
    of `db.errors`) is rolled back and run again, after a capped, jittered backoff."""

    attempts: int = 8  # tries in all: 0.5 + 1 + 2 + 4 + 8 + 8 + 8 = ~32 s of waiting
    first_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try `attempt` (1, 2, ...): doubling, capped, +-25 %."""
        base = min(self.max_delay, self.first_delay * 2 ** (attempt - 1))
        return base * random.uniform(0.75, 1.25)


BATCH_RETRY = Retry()


class DatabaseGone(OrderpipeError):
    """A transaction still failed on a transient fault after every retry: nothing of it was
    committed; what earlier transactions committed stays."""


def retrying(call: Callable[[], T], retry: Retry | None) -> T:
    """`call()`, run again after a transient database fault as `retry` says (once when None);
    DatabaseGone when the fault outlasts the tries. `call` must be safe to run again: one
    transaction, or a read."""
    attempt, began = 1, time.monotonic()
    while True:
        try:
            return call()
        except Exception as exc:
            if retry is None or classify_database(exc) is not Fault.transient:
                raise
            if attempt >= retry.attempts:
                raise DatabaseGone(
                    f"the database kept failing ({reason_of(exc)}) for "
                    f"{time.monotonic() - began:.0f} s over {attempt} tries"
                ) from exc
            wait = retry.delay(attempt)
            log.warning(
                "database failed (%s); trying again in %.1f s (try %d of %d)",
                reason_of(exc),
                wait,
                attempt + 1,
                retry.attempts,
            )
            time.sleep(wait)
            attempt += 1


class TableWriter:
    """Upserts table frames into one database, parents first, one transaction per write.

    Keeps one connection with per-row foreign-key lookups off (they cost 25-40 % of a bulk load):
    callers write each row's parents first, from the same data, so the keys hold by construction
    (the integration tests check them). A failed connection is dropped and reopened on the next
    write. MySQL/MariaDB use LOAD DATA LOCAL INFILE when `local_infile` and the server allow it.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        local_infile: bool = True,
        cache_mib: int | None = None,
        retry: Retry | None = None,
        create: bool = True,
    ) -> None:
        from orderpipe.db.engine import WalCheckpointer, create_tables, make_engine, sqlite_file
        from orderpipe.db.upsert import local_infile_available

        self.engine = make_engine(url, local_infile=local_infile)
        guarded = self.engine.url.get_driver_name() == "pymysql"  # see db.mysql
        try:
            if create:  # False: a second writer of a load whose first one created them
                create_tables(self.engine)
            with self.engine.connect() as conn:
                self.load_data = local_infile and guarded and local_infile_available(conn)
            database = sqlite_file(self.engine.url)
            self.checkpointer = WalCheckpointer(database) if database else None
        except BaseException:
            self.engine.dispose()
            raise
        # A load into tables that were empty when it began (`deferred_indexes`): on PostgreSQL,
        # each chunk first tries a plain INSERT (see `upsert_via_copy`)
        self.fresh = False
        # PostgreSQL through psycopg: COPY into a staging table, then one upsert
        copy = self.engine.url.get_driver_name() == "psycopg"
        self.method = "load-data" if self.load_data else "copy" if copy else "executemany"
        self.cache_mib = cache_mib  # SQLite: this connection's page cache (None: the engine's)
        self.retry = retry  # None: a failed transaction is raised at once (the stream's sink)
        self._conn: Connection | None = None

    def write(
        self,
        frames: Mapping[str, pl.DataFrame],
        then: Then | None = None,
        *,
        count_won: Collection[str] = (),
        chunk_size: int | None = None,
        before_commit: Callable[[Connection], None] | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Upsert every frame into the table of its name, in order, in one transaction.

        `then(connection, won)`, when given, sees the tables as written so far and returns more
        frames for the same transaction (the stream's predictions follow the events that won);
        `won` maps each table to the rows its upsert inserted or updated, where that is known
        exactly (`db.upsert.Upserted`): SQLite and PostgreSQL's COPY path say so; MySQL's LOAD
        DATA path counts them, by a join, for the tables in `count_won`. `chunk_size` splits
        each frame into statements of that many rows (still one transaction, `progress` after
        each); `before_commit(connection)` runs last in it (ingest's watermark). With a
        `retry`, a transient fault runs the whole transaction again.
        """
        return retrying(
            lambda: self._write_once(frames, then, count_won, chunk_size, before_commit, progress),
            self.retry,
        )

    def _write_once(
        self,
        frames: Mapping[str, pl.DataFrame],
        then: Then | None,
        count_won: Collection[str],
        chunk_size: int | None,
        before_commit: Callable[[Connection], None] | None,
        progress: Progress | None,
    ) -> int:
        try:
            conn = self._connection()
            if self.checkpointer:
                self.checkpointer.before_write()
            with conn.begin():
                won: dict[str, int | None] = {}
                written = self._upsert_all(conn, frames, won, chunk_size, progress, count_won)
                if then is not None:
                    written += self._upsert_all(conn, then(conn, won), won, chunk_size)
                if before_commit is not None:
                    before_commit(conn)
        except BaseException:
            self._drop_connection()
            raise
        if self.checkpointer:
            self.checkpointer.committed()
        return written

    def _upsert_all(
        self,
        conn: Connection,
        frames: Mapping[str, pl.DataFrame],
        won: dict[str, int | None],
        chunk_size: int | None = None,
        progress: Progress | None = None,
        count_won: Collection[str] = (),
    ) -> int:
        from functools import partial

        from orderpipe.db.models import Base
        from orderpipe.db.upsert import upsert, upsert_via_copy, upsert_via_load_data

        written = 0
        write_table: Callable[..., Any]
        for name, frame in frames.items():
            if self.method == "load-data":
                write_table = partial(upsert_via_load_data, count_won=name in count_won)
            elif self.method == "copy":
                write_table = partial(upsert_via_copy, fresh=self.fresh)
            else:
                write_table = upsert
            size = chunk_size or max(frame.height, 1)
            total: int | None = 0
            for offset in range(0, max(frame.height, 1), size):
                rows, part_won = write_table(
                    conn, Base.metadata.tables[name], frame.slice(offset, size)
                )
                written += rows
                total = None if total is None or part_won is None else total + part_won
                if progress:
                    progress(name, min(offset + size, frame.height), frame.height)
            won[name] = total
        return written

    def write_chunked(
        self,
        frames: Mapping[str, pl.DataFrame],
        *,
        chunk_size: int | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Each frame in chunks (the database's best size unless given), a transaction per chunk."""
        size = self.chunk_size(chunk_size)
        written = 0
        for name, frame in frames.items():
            for offset in range(0, frame.height, size):
                written += self.write({name: frame.slice(offset, size)})
                if progress:
                    progress(name, min(offset + size, frame.height), frame.height)
        return written

    def chunk_size(self, requested: int | None = None) -> int:
        from orderpipe.db.upsert import chunk_size_for

        return chunk_size_for(self.method, self.engine.dialect.name, requested)

    def _connection(self) -> Connection:
        from orderpipe.db.upsert import foreign_key_checks

        if self._conn is None:
            self._conn = self.engine.connect()
            if self.checkpointer:
                # Checkpoints run in the checkpointer's thread, not inside this one's commits.
                self._conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
                self._conn.exec_driver_sql(f"PRAGMA journal_size_limit={self.checkpointer.limit}")
            if self.cache_mib and self.engine.dialect.name == "sqlite":
                self._conn.exec_driver_sql(f"PRAGMA cache_size=-{self.cache_mib * 1024}")
            foreign_key_checks(self._conn, enabled=False)  # commits
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.invalidate()
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        try:
            self._drop_connection()
            self.engine.dispose()
        finally:
            if self.checkpointer:
                # Closed last: its connection's close checkpoints the rest and removes the WAL.
                self.checkpointer.close()

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()
