"""What a database failure means (the database part of the error taxonomy): transient, content
or fatal, by the server's error code, SQLSTATE or SQLite's result code.

- content (value out of range or too long, CHECK/NOT NULL refused): the rows are at fault.
- transient (connection lost, server gone, lock timeout, deadlock, read-only during a
  failover, too many connections): wait, run the transaction again, commit nothing meanwhile.
- fatal (permission denied, missing table, an unknown server error): stop.

Database errors are classified by the server's error code (MySQL/MariaDB), SQLSTATE
(PostgreSQL) or SQLite's result code, never by the driver's exception class: PyMySQL raises
OperationalError for lock timeouts and for CHECK failures alike. Anything orderpipe cannot
name is fatal: stopping loses nothing, while guessing "content" would throw good data away and
guessing "transient" would retry forever. (`stream.errors` adds Kafka's errors.)
"""

from __future__ import annotations

import re
from enum import StrEnum

from orderpipe.core.errors import OrderpipeError, first_line


class Fault(StrEnum):
    """Whose fault a failure is, which decides what the consumer does."""

    content = "content"
    transient = "transient"
    fatal = "fatal"


# MySQL/MariaDB server and client error codes (mysqld_error.h, errmsg.h, MariaDB's additions).
MYSQL_TRANSIENT = {
    0: "connection closed by the server",  # PyMySQL's InterfaceError(0, '') after a restart
    1040: "too many connections",
    1053: "server shutdown in progress",
    1152: "connection aborted",
    1158: "network read error",
    1159: "network read timeout",
    1160: "network write error",
    1161: "network write timeout",
    1203: "user has too many connections",
    1205: "lock wait timeout",
    1213: "deadlock",
    1226: "user resource limit reached",
    1290: "server is read-only",  # ER_OPTION_PREVENTS_STATEMENT (--read-only during failover)
    1317: "query interrupted",
    1615: "statement needs re-preparing",
    1637: "too many active transactions",
    1792: "read-only transaction",
    1836: "server is read-only",
    1927: "connection killed",
    2002: "cannot connect (socket)",
    2003: "cannot connect",
    2006: "server has gone away",
    2013: "lost connection during query",
    2055: "lost connection",
    4031: "disconnected for inactivity",
}
MYSQL_CONTENT = {
    1048: "column cannot be null",
    1062: "duplicate key",
    1264: "value out of range",
    1265: "data truncated",
    1292: "incorrect value",
    1300: "invalid character string",
    1366: "incorrect value",
    1367: "illegal value",
    1406: "value too long",
    1411: "incorrect value for a function",
    1441: "datetime overflow",
    1452: "parent row missing",
    1690: "value out of range",
    3819: "check constraint violated",
    4025: "check constraint violated",
}
# PostgreSQL SQLSTATEs (Appendix A of its manual): a whole class, or one code.
POSTGRES_TRANSIENT = {
    "08": "connection exception",
    "40001": "serialization failure",
    "40P01": "deadlock",
    "53300": "too many connections",
    "55P03": "lock not available",
    "57014": "query canceled",
    "57P01": "server shutting down",
    "57P02": "server crashed",
    "57P03": "server not accepting connections yet",
    "25006": "read-only transaction",  # a standby during a failover
}
POSTGRES_CONTENT = {
    "22": "data exception",  # too long, out of range, invalid value or encoding, NUL byte
    "23": "integrity constraint violation",  # NOT NULL, foreign key, unique, CHECK
}
# A connection the server refuses carries no SQLSTATE (libpq keeps the server's answer to
# itself), only its FATAL message. These refusals of a login fail on every retry (28P01, 28000,
# 3D000, 42501 at connect); any other answer at connect time (starting up, shutting down, too
# many clients, a pooler that cannot reach its server, an authentication timeout, a message in
# another language) stays transient, bounded by --database-wait at start.
POSTGRES_LOGIN_REFUSED = re.compile(
    r"authentication failed|no pg_hba\.conf entry|pg_hba\.conf rejects|does not exist"
    r"|not permitted to log in|permission denied for database",
    re.IGNORECASE,
)
# SQLite primary result codes (the low byte of the extended code).
SQLITE_TRANSIENT = {5: "database is locked (busy)", 6: "table is locked"}
SQLITE_CONTENT = {18: "value too big", 19: "constraint violated", 20: "datatype mismatch"}


def is_database_error(exc: BaseException) -> bool:
    """Whether `exc` (or the driver error orderpipe put into words) comes from the database."""
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, OrderpipeError) and exc.__cause__ is not None:
        return is_database_error(exc.__cause__)
    driver = driver_error(exc)
    return (
        isinstance(exc, DBAPIError)
        or mysql_code(driver) is not None
        or getattr(driver, "sqlite_errorcode", None) is not None
        or postgres_fault(driver) is not None
    )


def driver_error(exc: BaseException) -> BaseException:
    """The driver's own error under SQLAlchemy's wrapper (`exc` itself when unwrapped)."""
    from sqlalchemy.exc import DBAPIError

    return exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc


def database_fault(exc: BaseException) -> Fault | None:
    """The fault of a database error by its code; None when `exc` is none the codes name."""
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, PoolTimeout):
        return Fault.transient
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return Fault.transient
    driver = driver_error(exc)
    mysql = mysql_code(driver)
    if mysql is not None:
        if mysql in MYSQL_TRANSIENT:
            return Fault.transient
        return Fault.content if mysql in MYSQL_CONTENT else Fault.fatal
    postgres = postgres_fault(driver)
    if postgres is not None:
        return postgres
    sqlite = getattr(driver, "sqlite_errorcode", None)
    if isinstance(sqlite, int):
        primary = sqlite & 0xFF
        if primary in SQLITE_TRANSIENT:
            return Fault.transient
        return Fault.content if primary in SQLITE_CONTENT else Fault.fatal
    return None


def classify_database(exc: BaseException) -> Fault:
    """The fault of a failure in a database write: by the database's code, through the driver
    error orderpipe put into words; fatal when nothing names it."""
    fault = database_fault(exc)
    if fault is not None:
        return fault
    if isinstance(exc, OrderpipeError) and exc.__cause__ is not None:
        return classify_database(exc.__cause__)
    return Fault.fatal


def mysql_code(driver_error: BaseException) -> int | None:
    """The MySQL/MariaDB error code of a PyMySQL error (or of orderpipe's LOAD DATA check)."""
    code = getattr(driver_error, "mysql_errno", None)
    if isinstance(code, int):
        return code
    module = type(driver_error).__module__
    if not module.startswith("pymysql"):
        return None
    args = getattr(driver_error, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def postgres_fault(driver_error: BaseException) -> Fault | None:
    """The fault of a psycopg error by its SQLSTATE; None for another driver's error.

    psycopg raises without a SQLSTATE when it has no server answer: OperationalError for a
    connection that failed or broke (transient, unless the server refused the login: see
    POSTGRES_LOGIN_REFUSED), DataError for a value it cannot send, such as a text with a NUL
    byte (content)."""
    if type(driver_error).__module__.split(".")[0] != "psycopg":  # psycopg 3, not psycopg2
        return None
    import psycopg

    state = getattr(driver_error, "sqlstate", None)
    if not state:
        if isinstance(driver_error, psycopg.OperationalError):
            text = str(driver_error)
            if "FATAL:" in text and POSTGRES_LOGIN_REFUSED.search(text):
                return Fault.fatal
            return Fault.transient
        return Fault.content if isinstance(driver_error, psycopg.DataError) else Fault.fatal
    if state in POSTGRES_TRANSIENT or state[:2] in POSTGRES_TRANSIENT:
        return Fault.transient
    return Fault.content if state[:2] in POSTGRES_CONTENT else Fault.fatal


def reason_of(exc: BaseException) -> str:
    """The driver's first line for a database error, the exception's otherwise."""
    return first_line(exc)
