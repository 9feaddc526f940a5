"""Engine creation for SQLite (embedded default) and MySQL/MariaDB via PyMySQL.

Connection problems become one OrderpipeError line naming the (masked) URL.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from orderpipe.errors import OrderpipeError
from orderpipe.settings import mask_url

if TYPE_CHECKING:
    from sqlalchemy import Engine


def make_engine(url: str, *, local_infile: bool = True) -> Engine:
    """An engine with the pragmas and connect options orderpipe relies on."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    backend = parsed.get_backend_name()
    connect_args: dict[str, Any] = {}
    if backend == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
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
    if backend in ("mysql", "mariadb"):
        connect_args = {"charset": "utf8mb4", "connect_timeout": 10}
        if local_infile:
            connect_args["local_infile"] = True
    return create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)


def create_tables(engine: Engine) -> None:
    """Create the contract tables that do not exist yet."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from orderpipe.db.models import Base

    url = engine.url.render_as_string(hide_password=False)
    with database_errors(url), engine.connect() as conn:
        mysql = conn.dialect.name in ("mysql", "mariadb")
        if mysql:
            # Consumers starting together would otherwise create the tables concurrently,
            # and DDL on tables that reference each other can wait on each other's
            # metadata locks for as long as lock_wait_timeout (a year by default).
            conn.execute(text("SELECT GET_LOCK('orderpipe_create_tables', 60)"))
        try:
            try:
                Base.metadata.create_all(conn)
            except (OperationalError, ProgrammingError) as exc:
                # SQLite (no named lock): the loser of a race finds the table there,
                # which is what it wanted. Check again, once.
                if "already exists" not in str(exc):
                    raise
                conn.rollback()
                Base.metadata.create_all(conn)
            conn.commit()
        finally:
            if mysql:
                conn.execute(text("SELECT RELEASE_LOCK('orderpipe_create_tables')"))


def drop_tables(engine: Engine) -> None:
    """Drop orderpipe's tables (used by bench and tests on a database of their own)."""
    from orderpipe.db.models import Base

    with database_errors(engine.url.render_as_string(hide_password=False)):
        Base.metadata.drop_all(engine)


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

    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, _tb: Any) -> bool:
        from sqlalchemy.exc import DBAPIError, OperationalError

        if isinstance(exc, OperationalError | DBAPIError):
            detail = str(getattr(exc, "orig", exc)).splitlines()[0]
            unreachable = isinstance(exc, OperationalError) and any(
                sign in detail for sign in CONNECTION_FAILURES
            )
            verb = "cannot reach" if unreachable else "error from"
            raise OrderpipeError(f"{verb} the database {mask_url(self.url)}: {detail}") from exc
        return False
