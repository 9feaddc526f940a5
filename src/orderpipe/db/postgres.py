"""PostgreSQL specifics: the table-creation lock, and the keys a bulk load into empty tables
builds at its end.

PostgreSQL checks a foreign key with a per-row trigger that looks the parent up and locks it,
and it inserts each index entry by a descent of its B-tree. Into empty tables, 500,000 events
took 12.1 s with their two foreign keys and two secondary indexes, 5.2 s without the keys and
0.4 s with neither; building both indexes afterwards took 1.0 s (one sort each) and checking
both keys 1.3 s (one join each). So, as PostgreSQL's "Populating a Database" advises, a load
into empty tables drops them first and adds them back at its end, whether it ends well or not;
`create_tables` adds back whatever a killed load left out, unless a load is running (it holds
LOAD_LOCK, shared) or the user does not own the tables. Primary keys stay: the upserts need
them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from orderpipe.core.errors import first_line

if TYPE_CHECKING:
    from sqlalchemy import Connection, ForeignKeyConstraint, Index

log = logging.getLogger("orderpipe.db")

# Advisory lock keys: orderpipe's DDL (exclusive, per transaction: "orderpip" in ASCII), and a
# load that deferred the keys (shared, for its session: "op-load").
DDL_LOCK = 0x6F72646572706970
LOAD_LOCK = 0x6F702D6C6F6164
DEFERRED_TABLES = ("table_orders", "table_events")
# Memory for the index builds' sorts, for this transaction only (PostgreSQL's default: 64 MB).
BUILD_MEMORY = "256MB"


def lock_ddl(conn: Connection, timeout: float) -> None:
    """Take orderpipe's DDL lock for the current transaction, waiting up to `timeout` s:
    processes that start together then create the tables, or drop and add keys, in turn."""
    before = conn.exec_driver_sql("SHOW lock_timeout").scalar()
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(timeout * 1000)}ms'")
    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({DDL_LOCK})")
    # the role's or the URL's own timeout again, for the DDL that follows
    conn.exec_driver_sql("SELECT set_config('lock_timeout', %(before)s, true)", {"before": before})


def load_running(conn: Connection) -> bool:
    """Whether a load that deferred the keys is running (it holds LOAD_LOCK); in the caller's
    transaction, the answer holds until it ends."""
    got = conn.exec_driver_sql(f"SELECT pg_try_advisory_xact_lock({LOAD_LOCK})").scalar()
    return not got


def deferred_keys() -> tuple[list[Index], list[ForeignKeyConstraint]]:
    """The secondary indexes and foreign keys that a load into empty tables builds at its end."""
    from orderpipe.db.models import Base

    tables = [Base.metadata.tables[name] for name in DEFERRED_TABLES]
    indexes = [i for t in tables for i in sorted(t.indexes, key=lambda i: str(i.name))]
    keys = [
        fk
        for t in tables
        for fk in sorted(t.foreign_key_constraints, key=lambda fk: fk.column_keys)
    ]
    return indexes, keys


def _existing_keys(conn: Connection, table: str) -> dict[tuple[str, ...], str]:
    """The foreign keys `table` has: their columns -> their name."""
    rows = conn.exec_driver_sql(
        "SELECT c.conname, array_agg(a.attname::text ORDER BY k.n) "
        "FROM pg_constraint c "
        "CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, n) "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum "
        "WHERE c.contype = 'f' AND c.conrelid = to_regclass(%(table)s) "
        "GROUP BY c.conname",
        {"table": f'"{table}"'},
    )
    return {tuple(columns): str(name) for name, columns in rows}


def owns_tables(conn: Connection) -> bool:
    """Whether this user owns every deferred table (dropping and building indexes and keys
    needs the owner's rights)."""
    owned = conn.exec_driver_sql(
        "SELECT count(*) FILTER (WHERE pg_has_role(current_user, relowner, 'USAGE')) = "
        "%(tables)s FROM pg_class WHERE oid = ANY (%(names)s::regclass[])",
        {"tables": len(DEFERRED_TABLES), "names": [f'"{n}"' for n in DEFERRED_TABLES]},
    ).scalar()
    return bool(owned)


def can_defer(conn: Connection) -> bool:
    """Whether a load may defer the keys: every deferred table is empty and this user owns it
    (a user with only INSERT and UPDATE loads with the keys in place)."""
    return owns_tables(conn) and not any(
        conn.exec_driver_sql(f'SELECT EXISTS (SELECT 1 FROM "{name}")').scalar()
        for name in DEFERRED_TABLES
    )


def missing_keys(conn: Connection) -> list[str]:
    """The deferred indexes and foreign keys that are not there (a killed load's)."""
    from sqlalchemy import inspect

    indexes, keys = deferred_keys()
    found = inspect(conn)
    present = {name: {i["name"] for i in found.get_indexes(name)} for name in DEFERRED_TABLES}
    existing = {name: _existing_keys(conn, name) for name in DEFERRED_TABLES}
    return [
        str(i.name)
        for i in indexes
        if i.name not in present[i.table.name]  # type: ignore[union-attr]
    ] + [
        f"{k.table.name}({', '.join(k.column_keys)}) foreign key"
        for k in keys
        if tuple(k.column_keys) not in existing[k.table.name]
    ]


def connection_tls(conn: Connection) -> dict[str, object]:
    """This connection's TLS cipher (None: not encrypted), as libpq sees it, and whether the
    server's certificate was checked (sslmode verify-ca or verify-full)."""
    pgconn = getattr(conn.connection.dbapi_connection, "pgconn", None)  # psycopg 3's
    if pgconn is None or not pgconn.ssl_in_use:
        return {"tls": None, "tls_verified": False}
    options = {o.keyword: o.val for o in pgconn.info}
    mode = (options.get(b"sslmode") or b"").decode()
    cipher = conn.exec_driver_sql(
        "SELECT cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    ).scalar()
    return {"tls": str(cipher or "TLS"), "tls_verified": mode in ("verify-ca", "verify-full")}


def drop_deferred_keys(conn: Connection) -> None:
    """Drop the deferred indexes and foreign keys (in the caller's transaction)."""
    quote = conn.dialect.identifier_preparer.quote
    indexes, keys = deferred_keys()
    existing = {name: _existing_keys(conn, name) for name in DEFERRED_TABLES}
    for key in keys:  # orderpipe's own: a key a DBA added stays
        constraint = existing[key.table.name].get(tuple(key.column_keys))
        if constraint is not None:
            conn.exec_driver_sql(
                f"ALTER TABLE {quote(key.table.name)} DROP CONSTRAINT {quote(constraint)}"
            )
    for index in indexes:
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {quote(str(index.name))}")


def restore_deferred_keys(conn: Connection) -> None:
    """For `create_tables`: add back what a killed load left out, unless a load is running or
    this user does not own the tables (then `doctor` lists what is missing). A failure (an
    orphan row fails a key's check) is a warning, not the end of every command: it rolls back
    to a savepoint and `doctor` lists the key."""
    if not missing_keys(conn) or load_running(conn) or not owns_tables(conn):
        return
    try:
        with conn.begin_nested():
            add_deferred_keys(conn)
    except Exception as exc:
        detail = first_line(exc)
        log.warning("could not add back the indexes and keys a load left out: %s", detail)


def add_deferred_keys(conn: Connection) -> None:
    """Build the deferred indexes and foreign keys that are missing (in the caller's
    transaction): an index by one sort, a key by one check of every row."""
    from sqlalchemy.schema import AddConstraint

    indexes, keys = deferred_keys()
    conn.exec_driver_sql(f"SET LOCAL maintenance_work_mem = '{BUILD_MEMORY}'")
    for index in indexes:
        index.create(conn, checkfirst=True)
    existing = {name: _existing_keys(conn, name) for name in DEFERRED_TABLES}
    for key in keys:
        if tuple(key.column_keys) not in existing[key.table.name]:
            conn.execute(AddConstraint(key))
