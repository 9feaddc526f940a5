"""Engine creation for SQLite (embedded default) and MySQL/MariaDB via PyMySQL, table DDL, and
the background WAL checkpointer of SQLite writers.

Connection problems become one OrderpipeError line naming the URL with its password masked.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orderpipe.core.errors import OrderpipeError, first_line

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine
    from sqlalchemy.engine import URL

CREATE_LOCK = "orderpipe_create_tables"
DDL_LOCK_TIMEOUT = 60  # seconds a process waits for another's table creation or key building
# WAL a SQLite writer lets grow behind its background checkpointer (see WalCheckpointer).
WAL_LIMIT = 512 * 1024 * 1024

log = logging.getLogger("orderpipe.db")


def as_url(url: str | URL) -> URL:
    """A SQLAlchemy URL (its str() masks the password) from a URL or its text."""
    from sqlalchemy.engine import make_url

    return make_url(url)


def masked(url: str | URL) -> str:
    """The URL for display: the password replaced by ***."""
    return as_url(url).render_as_string(hide_password=True)


def make_engine(url: str | URL, *, local_infile: bool = False) -> Engine:
    """An engine with the pragmas and connect options orderpipe relies on.

    `local_infile` lets the bulk writers use LOAD DATA LOCAL INFILE on MySQL/MariaDB (PyMySQL):
    the server then gets the one file being loaded, never another one it asks for.
    """
    from sqlalchemy import create_engine, event

    parsed = as_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            folder = Path(database).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # a file in the way, no right to create it, a full disk
                raise OrderpipeError(
                    f"cannot create the folder {folder} of the SQLite database {database}: "
                    f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
                ) from None
        engine = create_engine(parsed)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            # Bulk upserts touch B-tree pages all over the indexes: keep them in memory.
            cursor.execute("PRAGMA cache_size=-262144")
            cursor.execute("PRAGMA temp_store=MEMORY")
            # Checkpoint less often: hot index pages are then copied back once, not per commit.
            cursor.execute("PRAGMA wal_autocheckpoint=20000")
            cursor.close()

        return engine
    if backend not in ("mysql", "mariadb"):
        try:
            return create_engine(parsed, pool_pre_ping=True)
        except ModuleNotFoundError as exc:
            extra = " (pip install 'orderpipe[postgres]')" if exc.name == "psycopg" else ""
            raise OrderpipeError(
                f"the database URL {masked(parsed)} needs the Python driver {exc.name!r}, which "
                f"is not installed{extra}"
            ) from exc
    connect_args: dict[str, Any] = {"charset": "utf8mb4", "connect_timeout": 10}
    guarded = parsed.get_driver_name() == "pymysql"
    # Local files only through the guarded PyMySQL connection; other drivers are told no.
    connect_args["local_infile"] = local_infile if guarded else False
    engine = create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    if guarded:

        @event.listens_for(engine, "do_connect")
        def _guarded_connection(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
            # Answers LOAD DATA LOCAL only for the file being loaded (db.mysql), on every
            # connection, with local_infile on or off.
            from orderpipe.db.mysql import guarded_connect

            return guarded_connect(*cargs, **cparams)

    return engine


def create_tables(engine: Engine, *, lock_timeout: int = DDL_LOCK_TIMEOUT) -> None:
    """Create the contract tables that do not exist yet."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from orderpipe.db.models import DEFERRED_INDEXES, Base, StateBase

    with database_errors(engine.url), engine.connect() as conn:
        mysql = conn.dialect.name in ("mysql", "mariadb")
        postgres = conn.dialect.name == "postgresql"
        # Consumers starting together would otherwise create the tables concurrently, and
        # DDL on tables that reference each other can wait on each other's locks for as long
        # as lock_wait_timeout (a year by default on MySQL).
        if mysql:
            _named_lock(conn, lock_timeout)
        elif postgres:
            from orderpipe.db.postgres import lock_ddl

            _locked(conn, lock_ddl, lock_timeout)
        try:
            try:
                Base.metadata.create_all(conn)
                StateBase.metadata.create_all(conn)
            except (OperationalError, ProgrammingError) as exc:
                if mysql and _keys_of_another_collation(exc):
                    raise OrderpipeError(
                        "cannot create the missing tables: their foreign keys refer to tables "
                        "created by an earlier orderpipe, whose ids use another collation "
                        "(`orderpipe doctor` names them); ingest into a new database, or drop "
                        "the four contract tables and ingest again"
                    ) from None
                # SQLite (no named lock): the loser of a race finds the table there,
                # which is what it wanted. Check again, once.
                if "already exists" not in str(exc):
                    raise
                conn.rollback()
                Base.metadata.create_all(conn)
                StateBase.metadata.create_all(conn)
            # left out by a load killed before its end
            if conn.dialect.name == "sqlite":
                for index in DEFERRED_INDEXES:
                    index.create(conn, checkfirst=True)
            elif postgres:
                from orderpipe.db.postgres import restore_deferred_keys

                restore_deferred_keys(conn)
            conn.commit()
        finally:
            if mysql:
                conn.exec_driver_sql(f"SELECT RELEASE_LOCK('{CREATE_LOCK}')")


def _keys_of_another_collation(exc: Exception) -> bool:
    """MariaDB's errno 150 or MySQL's 3780: a foreign key between columns that do not match."""
    args = getattr(getattr(exc, "orig", None), "args", ())
    code = args[0] if args else None
    return code == 3780 or (code == 1005 and "errno: 150" in str(args[-1]))


@contextmanager
def deferred_indexes(engine: Engine) -> Iterator[bool]:
    """Around a bulk load: on SQLite, when table_orders is empty, the indexes whose keys come in
    random order (`DEFERRED_INDEXES`) are dropped, and built again by one sort at the end. They
    are built again however the load ends, and `create_tables` builds them if a killed load
    left them out. PostgreSQL does the same with more (see `orderpipe.db.postgres`). Yields
    whether the load goes into empty tables with its indexes deferred."""
    from sqlalchemy import select

    from orderpipe.db.models import DEFERRED_INDEXES, Order

    if engine.dialect.name == "postgresql":
        with _postgres_deferred_keys(engine) as deferred:
            yield deferred
        return
    if engine.dialect.name != "sqlite":
        yield False
        return
    with engine.begin() as conn:
        empty = conn.execute(select(Order.order_id).limit(1)).first() is None
        if empty:
            for index in DEFERRED_INDEXES:
                index.drop(conn, checkfirst=True)
    try:
        yield empty
    finally:
        with engine.begin() as conn:
            # The sort spills to a temporary file, not to memory (temp_store=MEMORY held the
            # whole sort: peak +240 MB at 10M orders).
            conn.exec_driver_sql("PRAGMA temp_store=FILE")
            for index in DEFERRED_INDEXES:
                index.create(conn, checkfirst=True)
            conn.exec_driver_sql("PRAGMA temp_store=MEMORY")


@contextmanager
def _postgres_deferred_keys(engine: Engine, lock_timeout: int = DDL_LOCK_TIMEOUT) -> Iterator[bool]:
    """PostgreSQL's deferred keys around a load into empty tables. While it runs, a connection
    of its own holds LOAD_LOCK (shared), so that another process's `create_tables` does not add
    the keys back mid-load. A load that fails gets them back quietly (a failure to add them is
    logged, not raised over the load's own error: the next `create_tables` adds them); a load
    that succeeds gets them back or fails with the reason."""
    from orderpipe.db import postgres

    holder = engine.connect()
    try:
        holder.exec_driver_sql(f"SELECT pg_advisory_lock_shared({postgres.LOAD_LOCK})")
        holder.commit()
        with engine.connect() as conn:
            _locked(conn, postgres.lock_ddl, lock_timeout)
            deferred = postgres.can_defer(conn)
            if deferred:
                postgres.drop_deferred_keys(conn)
            conn.commit()
        if not deferred:
            _unlock_load(holder)
            yield False
            return
        try:
            yield True
        except BaseException:
            try:
                _add_keys_back(engine, lock_timeout)
            except Exception as exc:
                log.warning("indexes and foreign keys left for the next run to add: %s", exc)
            raise
        _add_keys_back(engine, lock_timeout)
    finally:
        _unlock_load(holder)


def _add_keys_back(engine: Engine, lock_timeout: int) -> None:
    from orderpipe.db import postgres

    with engine.connect() as conn:
        _locked(conn, postgres.lock_ddl, lock_timeout)
        postgres.add_deferred_keys(conn)
        conn.commit()


def _unlock_load(holder: Connection) -> None:
    """Release LOAD_LOCK and close its connection (a session lock would go back to the pool
    with it: the connection is dropped when the unlock fails)."""

    if holder.closed:
        return
    try:
        holder.exec_driver_sql("SELECT pg_advisory_unlock_all()")
        holder.commit()
    except Exception:
        holder.invalidate()
    holder.close()


def _locked(conn: Connection, lock: Any, timeout: int) -> None:
    """Take `lock` (conn, timeout) or say plainly who holds it."""
    from sqlalchemy.exc import OperationalError

    try:
        lock(conn, timeout)
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
            raise
        raise OrderpipeError(
            f"another process held orderpipe's DDL lock on {masked(conn.engine.url)} for "
            f"{timeout} s; is a migration or another orderpipe stuck? pg_locks (locktype "
            "advisory) names its process"
        ) from exc


def _named_lock(conn: Connection, timeout: int) -> None:
    """Take the table-creation lock, or say plainly why not (GET_LOCK: 1 got, 0 timed out)."""
    got = conn.exec_driver_sql(f"SELECT GET_LOCK('{CREATE_LOCK}', {int(timeout)})").scalar()
    if got == 1:
        return
    if got == 0:
        raise OrderpipeError(
            f"another process held the table-creation lock ({CREATE_LOCK}) of "
            f"{masked(conn.engine.url)} for {timeout} s; is a migration or another orderpipe "
            f"stuck? `SELECT IS_USED_LOCK('{CREATE_LOCK}')` names its connection"
        )
    raise OrderpipeError(f"GET_LOCK('{CREATE_LOCK}') failed on {masked(conn.engine.url)}")


def drop_tables(engine: Engine) -> None:
    """Drop orderpipe's tables and its ingest watermark (used by bench and tests on a database
    of their own): the next ingest then loads everything."""
    from orderpipe.db.models import Base, StateBase

    with database_errors(engine.url):
        Base.metadata.drop_all(engine)
        StateBase.metadata.drop_all(engine)


CONNECTION_FAILURES = (
    "Can't connect",
    "Connection refused",
    "Lost connection",
    "gone away",
    "unable to open",
    "Unknown database",
    "Access denied",
    "timed out",
)


class database_errors:
    """Turn driver errors into one OrderpipeError line with the masked URL."""

    def __init__(self, url: str | URL) -> None:
        self.url = url

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, _tb: Any) -> bool:
        from sqlalchemy.exc import DBAPIError, OperationalError

        if isinstance(exc, OperationalError | DBAPIError):
            detail = first_line(exc)
            unreachable = isinstance(exc, OperationalError) and any(
                sign in detail for sign in CONNECTION_FAILURES
            )
            verb = "cannot reach" if unreachable else "error from"
            raise OrderpipeError(f"{verb} the database {masked(self.url)}: {detail}") from exc
        return False


def sqlite_file(url: str | URL) -> str | None:
    """The database file of a SQLite URL; None for another database or an in-memory one."""
    parsed = as_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    return None if parsed.query.get("uri") else database  # file: URIs are not plain paths


class WalCheckpointer:
    """Copies a SQLite writer's committed WAL frames back into the database, in its own thread.

    SQLite's automatic checkpoint runs inside the commit that crosses `wal_autocheckpoint`. With
    random event_id keys, a 20,000-event stream batch into 2,000,000 stored events dirties ~60k
    pages: the commit wrote ~250 MB to the WAL, then spent ~0.7 s (mostly the database file's
    fsync) copying them back while the consumer waited. The writer now turns its automatic
    checkpoint off and calls `committed()`; this thread runs a PASSIVE checkpoint (it never
    blocks the writer, and sqlite3 releases the GIL inside it) while the next batch is upserted.

    Durability is unchanged: a commit is in the WAL before it is copied, and a checkpoint cut
    short by a kill is redone when the database is next opened. The WAL stays bounded: SQLite
    rewinds it only when a transaction starts with every frame copied, so once the file is over
    `limit` bytes `before_write()` waits for the checkpoint in flight, and the writer's
    `journal_size_limit` (set to `limit`) cuts the file back when the WAL rewinds.
    """

    def __init__(self, database: str, *, limit: int = WAL_LIMIT) -> None:
        self.wal = f"{database}-wal"
        self.limit = limit
        self._conn = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        self._cond = threading.Condition()
        self._pending = self._busy = self._closing = False
        # A daemon: an unclosed writer must not keep the process alive; a checkpoint cut short
        # at exit is safe (see above).
        self._thread = threading.Thread(
            target=self._run, name="orderpipe-checkpointer", daemon=True
        )
        self._thread.start()

    def committed(self) -> None:
        """The writer committed: checkpoint its frames as soon as the thread is free."""
        with self._cond:
            self._pending = True
            self._cond.notify_all()

    def before_write(self) -> None:
        """Call before a write transaction: waits for the checkpoint when the WAL is too big."""
        try:
            size = os.path.getsize(self.wal)
        except FileNotFoundError:
            return
        if size > self.limit:
            self.wait()

    def wait(self) -> None:
        """Return once every commit notified so far is checkpointed (as far as readers allow)."""
        with self._cond:
            while (self._pending or self._busy) and self._thread.is_alive():
                self._cond.wait()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._pending or self._closing):
                    self._cond.wait()
                if not self._pending:
                    return
                self._pending, self._busy = False, True
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:  # the next commit tries again; the writer is unharmed
                log.warning("background WAL checkpoint failed: %s", exc)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def close(self) -> None:
        """Checkpoint what is pending, stop the thread and close its connection."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        self._conn.close()
