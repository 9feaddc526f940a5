"""Dialect-aware bulk upsert statements that never replace a row with older data.

MySQL/MariaDB: INSERT ... ON DUPLICATE KEY UPDATE (executemany, or LOAD DATA LOCAL INFILE into a
staging table then one INSERT ... SELECT); SQLite and PostgreSQL: INSERT ... ON CONFLICT DO UPDATE.
`db.writer` decides which one runs and owns the transactions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from typing import TYPE_CHECKING, Any, NamedTuple

from orderpipe.core.errors import OrderpipeError
from orderpipe.db.models import RECENCY_COLUMN
from orderpipe.db.queries import LATEST

if TYPE_CHECKING:
    import io

    import polars as pl
    from sqlalchemy import Connection, Table

log = logging.getLogger(__name__)

# Rows per transaction when the user sets none. SQLite rewrites every page a commit dirtied, so
# fewer, larger commits go much faster; LOAD DATA pays per statement; PyMySQL's multi-row
# executemany is best at moderate sizes.
DEFAULT_CHUNK = {"sqlite": 250_000, "load-data": 500_000, "copy": 500_000, "executemany": 20_000}


def chunk_size_for(method: str, dialect: str, requested: int | None) -> int:
    """The chunk size to use: the user's, else the default for this database and method."""
    if requested:
        return requested
    return DEFAULT_CHUNK["sqlite"] if dialect == "sqlite" else DEFAULT_CHUNK[method]


DB_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S%.6f"  # naive UTC; SQLAlchemy's own SQLite format too


class Upserted(NamedTuple):
    """What one upsert did: the rows sent, and how many of them it inserted or updated (None
    where that is not known exactly)."""

    rows: int
    won: int | None = None


def upsert(conn: Connection, table: Table, frame: pl.DataFrame) -> Upserted:
    """Insert the rows of `frame`, or update a stored row when the incoming one is as recent.

    One executemany of the compiled dialect statement, straight to the driver: PyMySQL >= 1.2
    turns it into multi-row statements, sqlite3 runs it in C. Datetimes must be naive UTC.
    On SQLite, `won` is exact: sqlite3 sums the rows each statement changed, and an upsert whose
    WHERE (as recent) fails changes none. (MySQL's count is not: 2 for an update, and with the
    found-rows flag SQLAlchemy sets, 1 for a row left as it was.)
    """
    import polars as pl

    if frame.height == 0:
        return Upserted(0, 0)
    compiled = _upsert_statement(conn.dialect.name, table).compile(dialect=conn.dialect)
    frame = frame.with_columns(
        pl.col(name).dt.strftime(DB_DATETIME_FORMAT)
        for name, dtype in frame.schema.items()
        if dtype == pl.Datetime
    )
    if compiled.positiontup is not None:  # qmark/format drivers (sqlite3)
        params: Any = frame.select(list(compiled.positiontup)).rows()
    else:  # pyformat drivers (PyMySQL)
        params = frame.select(list(compiled.params)).to_dicts()
    result = conn.exec_driver_sql(compiled.string, params)
    return Upserted(frame.height, result.rowcount if conn.dialect.name == "sqlite" else None)


def _upsert_statement(dialect: str, table: Table) -> Any:
    from sqlalchemy import func

    keys, _, updatable, recency = _staged_columns(table)
    if dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert

        stmt = insert(table)
        newer = stmt.inserted[recency] >= table.c[recency]
        # MySQL applies these assignments left to right: the recency column must come last so
        # every IF() above still compares with the stored (old) value.
        assignments = [
            (name, func.IF(newer, stmt.inserted[name], table.c[name]))
            for name in [*updatable, recency]
        ]
        return stmt.on_duplicate_key_update(assignments)
    if dialect in ("sqlite", "postgresql"):
        stmt = _conflict_insert(dialect)(table)
        return stmt.on_conflict_do_update(
            index_elements=sorted(keys),
            set_={name: stmt.excluded[name] for name in [*updatable, recency]},
            where=stmt.excluded[recency] >= table.c[recency],
        )
    raise ValueError(f"no upsert for the {dialect} dialect")


def _conflict_insert(dialect: str) -> Any:
    """The INSERT ... ON CONFLICT construct of SQLite or PostgreSQL."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


ER_UNKNOWN_SYSTEM_VARIABLE = 1193


def local_infile_available(conn: Connection) -> bool:
    """True when the MySQL/MariaDB server accepts LOAD DATA LOCAL INFILE from its clients.

    A server without the variable says no; any other error (lost connection, denied) is raised.
    """
    from sqlalchemy.exc import DBAPIError

    if conn.dialect.name not in ("mysql", "mariadb"):
        return False
    try:
        return bool(conn.exec_driver_sql("SELECT @@GLOBAL.local_infile").scalar())
    except DBAPIError as exc:
        code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
        if code == ER_UNKNOWN_SYSTEM_VARIABLE:
            conn.rollback()
            return False
        raise


def _staged_columns(table: Table) -> tuple[list[str], list[str], list[str], str]:
    """An upsert's columns: (primary key, all, those updated before the recency column,
    the recency column)."""
    recency = RECENCY_COLUMN[table]
    keys = [c.name for c in table.primary_key.columns]
    columns = [c.name for c in table.columns]
    updatable = [name for name in columns if name not in keys and name != recency]
    return keys, columns, updatable, recency


def _write_csv(frame: pl.DataFrame, target: str | io.BytesIO, *, null: str) -> None:
    """The staged upserts' CSV: no header, text quoted, `null` for a missing value, datetimes
    as the databases read them, floats in full."""
    frame.write_csv(
        target,
        include_header=False,
        null_value=null,
        quote_style="non_numeric",
        datetime_format=DB_DATETIME_FORMAT,
        float_precision=None,
    )


def upsert_via_load_data(
    conn: Connection, table: Table, frame: pl.DataFrame, *, count_won: bool = False
) -> Upserted:
    """MySQL/MariaDB fast path: LOAD DATA LOCAL INFILE into a temporary table, then one upsert.

    `count_won`: `won` is counted, by one join of the staged rows with the table (the rows
    stored with their recency). The server's own counts cannot say it: with the found-rows
    flag SQLAlchemy sets, a new row and one left as it was (it lost) both count 1. The join
    costs a third of the read-back it spares the stream (20,000 events: 0.05 s against
    0.11-0.14 s). `frame` holds the table's columns; datetimes must be naive UTC.
    """
    from sqlalchemy import text

    from orderpipe.db.mysql import allow_local_file

    if frame.height == 0:
        return Upserted(0, 0)
    keys, columns, updatable, recency = _staged_columns(table)
    stage = f"stage_{table.name}"
    quoted = ", ".join(f"`{name}`" for name in columns)
    newer = f"VALUES(`{recency}`) >= `{table.name}`.`{recency}`"
    assignments = ", ".join(
        f"`{name}` = IF({newer}, VALUES(`{name}`), `{table.name}`.`{name}`)"
        for name in [*updatable, recency]
    )
    fd, path = tempfile.mkstemp(prefix=f"orderpipe-{table.name}-", suffix=".csv")
    os.close(fd)
    try:
        # With ESCAPED BY '' a bare NULL is SQL NULL; every text value is quoted.
        _write_csv(frame.select(columns), path, null="NULL")
        conn.execute(text(f"DROP TEMPORARY TABLE IF EXISTS `{stage}`"))
        _create_stage(conn, stage, f"AS SELECT {quoted} FROM `{table.name}` LIMIT 0", frame.height)
        with allow_local_file(conn, path):
            conn.execute(
                text(
                    f"LOAD DATA LOCAL INFILE :path INTO TABLE `{stage}` CHARACTER SET utf8mb4 "
                    "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' "
                    f"LINES TERMINATED BY '\\n' ({quoted})"
                ),
                {"path": path},
            )
        refuse_load_warnings(conn, table.name)
        conn.execute(
            text(
                # File order (time order) beats key order here: the time-ordered secondary indexes
                # then grow at their end, and random hex keys are random either way.
                f"INSERT INTO `{table.name}` ({quoted}) SELECT {quoted} FROM `{stage}` "
                f"ON DUPLICATE KEY UPDATE {assignments}"
            )
        )
        won = _stored_as_staged(conn, table.name, stage, [*keys, recency]) if count_won else None
        conn.execute(text(f"DROP TEMPORARY TABLE `{stage}`"))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return Upserted(frame.height, won)


STAGE_ENGINE = "Aria"  # MariaDB's staging tables of up to ARIA_STAGE_ROWS rows
# Aria's temporary tables are files in the server's tmpdir (often a small volume), InnoDB's are
# in its temporary tablespace: the stream's batches (20,000 rows at most by default) are staged
# in Aria, ingest's chunks of 500,000 in InnoDB (Aria gained them ~5 %).
ARIA_STAGE_ROWS = 100_000
ER_UNKNOWN_STORAGE_ENGINE = 1286
ER_OPTION_PREVENTS_STATEMENT = 1290  # with NO_ENGINE_SUBSTITUTION: `enforce_storage_engine`


def _create_stage(conn: Connection, stage: str, definition: str, rows: int) -> None:
    """A bare staging table (no keys, no indexes): LOAD DATA only appends to it. On MariaDB,
    for a batch, an Aria one: it takes those appends for ~25 % less than InnoDB, and a staging
    table needs neither transactions nor crash safety. MySQL has no Aria; a MariaDB that
    refuses it gets the server's default engine, from then on for the connection."""
    from sqlalchemy.exc import DBAPIError

    if conn.dialect.is_mariadb and rows <= ARIA_STAGE_ROWS and not conn.info.get("no_aria"):
        try:
            conn.exec_driver_sql(
                f"CREATE TEMPORARY TABLE `{stage}` ENGINE={STAGE_ENGINE} {definition}"
            )
            return
        except DBAPIError as exc:
            if not _refuses_the_engine(exc):
                raise
            log.info("no %s staging tables on this server (%s)", STAGE_ENGINE, exc.orig)
            conn.info["no_aria"] = True
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE `{stage}` {definition}")


def _refuses_the_engine(exc: Any) -> bool:
    args = exc.orig.args if exc.orig is not None else ()
    if not args:
        return False
    if args[0] == ER_UNKNOWN_STORAGE_ENGINE:
        return True
    return args[0] == ER_OPTION_PREVENTS_STATEMENT and "NO_ENGINE_SUBSTITUTION" in str(args[-1])


def _stored_as_staged(conn: Connection, table: str, stage: str, matching: list[str]) -> int:
    """How many staged rows the table now holds with the same key and recency (`matching`):
    those that won."""
    same = " AND ".join(f"t.`{name}` <=> s.`{name}`" for name in matching)
    query = f"SELECT COUNT(*) FROM `{stage}` s JOIN `{table}` t ON {same}{LATEST}"
    return int(conn.exec_driver_sql(query).scalar_one())


def upsert_via_copy(
    conn: Connection, table: Table, frame: pl.DataFrame, *, fresh: bool = False
) -> Upserted:
    """PostgreSQL fast path: COPY into a temporary staging table, then one INSERT ... SELECT
    ... ON CONFLICT DO UPDATE, newer wins (as recent: replays are harmless), in the caller's
    transaction. Rows of one key in one batch: the newest goes in (DISTINCT ON).

    `fresh` (a load into tables that were empty when it began): a plain INSERT is tried first,
    in a savepoint. ON CONFLICT makes every row a speculative insertion, which doubles the
    cost of a row that is new (500,000 orders: 0.75 s plain, 1.42 s with ON CONFLICT), and in
    such a load almost every row is. A key that is there already (an order met on two days,
    a row another writer stored) fails the INSERT (unique_violation): it rolls back to the
    savepoint and the chunk goes in by the upsert, as it would have.

    `frame` holds the table's columns; datetimes must be naive UTC.
    """
    import io

    if frame.height == 0:
        return Upserted(0, 0)
    keys, columns, updatable, recency = _staged_columns(table)
    stage = f"stage_{table.name}"
    quoted = ", ".join(f'"{name}"' for name in columns)
    key_list = ", ".join(f'"{name}"' for name in keys)
    assignments = ", ".join(f'"{name}" = EXCLUDED."{name}"' for name in [*updatable, recency])
    # CSV: text quoted (an empty text is ""), a missing value unquoted and empty (NULL)
    data = io.BytesIO()
    _write_csv(frame.select(columns), data, null="")
    conn.exec_driver_sql(
        f'CREATE TEMPORARY TABLE IF NOT EXISTS "{stage}" '
        f'(LIKE "{table.name}" INCLUDING DEFAULTS) ON COMMIT DROP'
    )
    conn.exec_driver_sql(f'TRUNCATE "{stage}"')  # a second chunk in the same transaction
    cursor = conn.connection.driver_connection.cursor()  # psycopg's own COPY protocol
    try:
        with cursor.copy(f'COPY "{stage}" ({quoted}) FROM STDIN WITH (FORMAT csv)') as copy:
            copy.write(data.getbuffer())
    finally:
        cursor.close()
    insert = (
        f'INSERT INTO "{table.name}" ({quoted}) '
        f'SELECT DISTINCT ON ({key_list}) {quoted} FROM "{stage}" '
        f'ORDER BY {key_list}, "{recency}" DESC'
    )
    inserted = _inserted_new(conn, insert) if fresh else None
    if inserted is not None:
        return Upserted(frame.height, inserted)
    # PostgreSQL counts the rows inserted or updated: one whose WHERE (as recent) fails, none
    result = conn.exec_driver_sql(
        f"{insert} ON CONFLICT ({key_list}) DO UPDATE SET {assignments} "
        f'WHERE EXCLUDED."{recency}" >= "{table.name}"."{recency}"'
    )
    return Upserted(frame.height, result.rowcount)


def _inserted_new(conn: Connection, insert: str) -> int | None:
    """Run `insert` in a savepoint: the rows it stored, or None (rolled back) when a key was
    there already."""
    from sqlalchemy.exc import IntegrityError

    try:
        with conn.begin_nested():
            return conn.exec_driver_sql(insert).rowcount
    except IntegrityError as exc:
        if getattr(exc.orig, "sqlstate", None) != UNIQUE_VIOLATION:
            raise
        return None


UNIQUE_VIOLATION = "23505"  # PostgreSQL's SQLSTATE


class LoadDataRefused(OrderpipeError):
    """A value LOAD DATA LOCAL would have cut or clamped: the load is refused instead.

    With LOCAL, the server turns a value a column refuses (too long, out of range) into a
    warning and stores it cut, even in strict mode, where an INSERT fails. orderpipe refuses
    the load (its transaction rolls back) with the server's code, so MariaDB stores the same
    values as SQLite or nothing at all.
    """

    def __init__(self, table: str, code: int, message: str) -> None:
        self.mysql_errno = code
        super().__init__(f"{table}: {message} (MySQL error {code})")


def refuse_load_warnings(conn: Connection, table: str) -> None:
    """Raise LoadDataRefused when the last LOAD DATA left a warning (a cut or clamped value)."""
    for level, code, message in conn.exec_driver_sql("SHOW WARNINGS LIMIT 5"):
        if level != "Note":
            raise LoadDataRefused(table, int(code), str(message))


def foreign_key_checks(conn: Connection, enabled: bool) -> None:
    """Switch the per-row foreign-key lookups of this connection on or off.

    The bulk load switches them off (they cost 25-40 % of its time): callers guarantee the
    parents exist (ingest upserts customers and orders of the same dataset first; predict
    scores only events already in table_events). Integration tests check the keys afterwards.
    """
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"PRAGMA foreign_keys={'ON' if enabled else 'OFF'}")
    elif conn.dialect.name in ("mysql", "mariadb"):
        conn.exec_driver_sql(f"SET SESSION foreign_key_checks={int(enabled)}")
    conn.commit()


def set_row(conn: Connection, table: Table, row: dict[str, Any]) -> None:
    """Insert `row`, or replace the one with its primary key (a bookkeeping row, such as a
    watermark: INSERT and UPDATE rights are enough)."""
    if conn.dialect.name in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        stmt = mysql_insert(table).values(row)
        stmt = stmt.on_duplicate_key_update({k: stmt.inserted[k] for k in row})
    else:
        stmt = _conflict_insert(conn.dialect.name)(table).values(row)
        stmt = stmt.on_conflict_do_update(
            index_elements=[c.name for c in table.primary_key.columns],
            set_={k: stmt.excluded[k] for k in row},
        )
    conn.execute(stmt)
