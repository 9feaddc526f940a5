"""stream/errors.py: the error taxonomy, by the database's codes, never by exception class."""

from __future__ import annotations

import sqlite3

import pymysql
import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from orderpipe.core.errors import OrderpipeError
from orderpipe.db.errors import Fault, reason_of
from orderpipe.db.upsert import LoadDataRefused
from orderpipe.stream.errors import StreamStopped, classify


def wrapped(driver: Exception, cls: type[DBAPIError] = OperationalError) -> DBAPIError:
    """What SQLAlchemy raises for a driver error."""
    return cls("INSERT ...", {}, driver)


def mysql(cls: type[Exception], code: int, message: str = "server says no") -> DBAPIError:
    return wrapped(cls(code, message))


@pytest.mark.parametrize(
    "code",
    [0, 1040, 1053, 1205, 1213, 1290, 1792, 1836, 1927, 2003, 2006, 2013, 2055, 4031],
)
def test_mysql_connection_lock_and_failover_errors_are_transient(code: int) -> None:
    assert classify(mysql(pymysql.err.OperationalError, code)) is Fault.transient


@pytest.mark.parametrize("code", [1048, 1264, 1265, 1292, 1366, 1406, 1690, 3819, 4025])
def test_mysql_values_refused_for_their_content_are_content(code: int) -> None:
    # PyMySQL raises OperationalError or DataError for these, depending on the code
    assert classify(mysql(pymysql.err.OperationalError, code)) is Fault.content
    assert classify(mysql(pymysql.err.DataError, code)) is Fault.content


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (pymysql.err.OperationalError, 1142),  # INSERT command denied (a revoked grant)
        (pymysql.err.OperationalError, 1044),  # access denied to the database
        (pymysql.err.ProgrammingError, 1146),  # table doesn't exist
        (pymysql.err.OperationalError, 1054),  # unknown column
        (pymysql.err.OperationalError, 1021),  # disk full: an operator's job, not a retry loop
        (pymysql.err.OperationalError, 9999),  # a code orderpipe does not know
    ],
)
def test_permissions_missing_tables_and_unknown_codes_are_fatal(
    cls: type[Exception], code: int
) -> None:
    assert classify(mysql(cls, code)) is Fault.fatal


def test_an_operational_error_is_not_transient_because_of_its_class() -> None:
    # the bug this module fixes: every OperationalError used to be "wait and retry"
    check_failed = mysql(pymysql.err.OperationalError, 4025, "CONSTRAINT failed")
    assert classify(check_failed) is not Fault.transient
    assert classify(wrapped(Exception("no code at all"))) is not Fault.transient


def sqlite_error(*statements: str) -> sqlite3.Error:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a TEXT NOT NULL CHECK (length(a) < 3))")
    try:
        for statement in statements:
            conn.execute(statement)
    except sqlite3.Error as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError("no error")


def test_sqlite_constraint_failures_are_content() -> None:
    check = sqlite_error("INSERT INTO t VALUES ('long')")
    not_null = sqlite_error("INSERT INTO t VALUES (NULL)")
    assert classify(wrapped(check, IntegrityError)) is Fault.content
    assert classify(wrapped(not_null, IntegrityError)) is Fault.content


def test_sqlite_missing_table_is_fatal() -> None:
    assert classify(wrapped(sqlite_error("INSERT INTO missing VALUES (1)"))) is Fault.fatal


def test_sqlite_busy_is_transient(tmp_path: object) -> None:
    path = f"{tmp_path}/busy.db"
    holder = sqlite3.connect(path)
    holder.execute("CREATE TABLE t (a)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(path, timeout=0)
    try:
        with pytest.raises(sqlite3.OperationalError) as caught:
            other.execute("INSERT INTO t VALUES (1)")
    finally:
        other.close()
        holder.close()
    assert classify(wrapped(caught.value)) is Fault.transient


def postgres_error(state: str | None, cls: type[Exception] | None = None) -> DBAPIError:
    """A psycopg error as the server (SQLSTATE `state`) or psycopg itself (None) raises it."""
    import psycopg
    from psycopg import errors

    if cls is None:
        cls = errors.lookup(state) if state else psycopg.OperationalError
    return wrapped(cls("server says no"))


@pytest.mark.parametrize(
    "state", ["08006", "08001", "40001", "40P01", "53300", "55P03", "57P01", "57P03", "25006"]
)
def test_postgres_connection_lock_and_failover_errors_are_transient(state: str) -> None:
    assert classify(postgres_error(state)) is Fault.transient


CONNECT_FAILED = 'connection failed: connection to server at "127.0.0.1", port 5432 failed: '


LOGIN_REFUSED = [
    'FATAL:  password authentication failed for user "orderpipe"',
    'FATAL:  database "orderpipe_nope" does not exist',
    'FATAL:  role "nobody" does not exist',
    'FATAL:  no pg_hba.conf entry for host "10.0.0.9", user "orderpipe", database "x"',
    'FATAL:  role "reader" is not permitted to log in',
    'FATAL:  permission denied for database "orderpipe"',
]
DOWN_OR_BUSY = [
    "Connection refused\n\tIs the server running on that host and accepting TCP/IP?",
    "FATAL:  the database system is starting up",
    "FATAL:  the database system is shutting down",
    "FATAL:  the database system is not yet accepting connections",
    "FATAL:  sorry, too many clients already",
    "FATAL:  remaining connection slots are reserved for roles with the SUPERUSER attribute",
    "server closed the connection unexpectedly",
    "FATAL:  canceling authentication due to timeout",
    "FATAL:  pgbouncer cannot connect to server",
    "FATAL:  server login has been failing, try again later (server_login_retry)",
    "FATAL:  no more connections allowed (max_client_conn)",
    "FATAL:  das Datenbanksystem startet",
]


@pytest.mark.parametrize(
    ("answer", "fault"),
    [(a, Fault.fatal) for a in LOGIN_REFUSED] + [(a, Fault.transient) for a in DOWN_OR_BUSY],
)
def test_a_refused_postgres_connection_is_fatal_only_for_a_refused_login(
    answer: str, fault: Fault
) -> None:
    # libpq gives no SQLSTATE for a refused connection, only the server's FATAL message: a
    # wrong password was retried as if the server were down
    import psycopg

    assert classify(wrapped(psycopg.OperationalError(CONNECT_FAILED + answer))) is fault


@pytest.mark.parametrize("state", ["22001", "22003", "22007", "22021", "23502", "23503", "23514"])
def test_postgres_values_refused_for_their_content_are_content(state: str) -> None:
    assert classify(postgres_error(state)) is Fault.content


@pytest.mark.parametrize("state", ["42501", "42P01", "42703", "53100", "XX000"])
def test_postgres_permissions_missing_tables_disk_full_and_internal_errors_are_fatal(
    state: str,
) -> None:
    assert classify(postgres_error(state)) is Fault.fatal


def test_psycopg_errors_without_a_server_answer_are_classified_by_class() -> None:
    import psycopg

    assert classify(postgres_error(None)) is Fault.transient  # connection failed or broke
    assert classify(postgres_error(None, psycopg.DataError)) is Fault.content  # a NUL byte
    assert classify(postgres_error(None, psycopg.ProgrammingError)) is Fault.fatal
    assert "database error" in str(StreamStopped.because(postgres_error("42501"), 1))


def test_a_dropped_connection_and_a_pool_timeout_are_transient() -> None:
    invalidated = DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True)
    assert classify(invalidated) is Fault.transient
    assert classify(PoolTimeout("pool exhausted")) is Fault.transient


def test_a_cut_value_refused_by_the_load_data_check_is_content() -> None:
    refused = LoadDataRefused("table_events", 1406, "Data too long for column 'device' at row 3")
    assert classify(refused) is Fault.content
    assert isinstance(refused, OrderpipeError)


@pytest.mark.parametrize(
    "error",
    [ValueError("bad feature"), KeyError("event_id"), RuntimeError(), AssertionError()],
)
def test_errors_outside_the_database_are_fatal(error: Exception) -> None:
    # a bug or a model that no longer fits: dead-lettering would lose good data
    assert classify(error) is Fault.fatal


def test_retriable_kafka_errors_are_transient_others_fatal() -> None:
    from aiokafka.errors import KafkaTimeoutError, NotLeaderForPartitionError, RecordTooLargeError

    assert classify(KafkaTimeoutError()) is Fault.transient
    assert classify(NotLeaderForPartitionError()) is Fault.transient
    assert classify(RecordTooLargeError()) is Fault.fatal


def test_stream_stopped_names_the_cause_on_one_line() -> None:
    exc = mysql(
        pymysql.err.OperationalError,
        1142,
        "INSERT command denied to user 'u'@'localhost' for table 'table_predictions'",
    )
    message = str(StreamStopped.because(exc, 1234))
    assert "\n" not in message
    assert "INSERT command denied" in message
    assert "1,234 messages" in message
    assert "database error" in message
    assert "ValueError" in str(StreamStopped.because(ValueError("bad feature"), 1))


def test_reason_of_a_database_error_is_the_driver_first_line() -> None:
    error = OperationalError("SELECT 1", {}, Exception("lost\nsecond line"))
    assert reason_of(error) == "lost"
    assert reason_of(ProgrammingError("x", {}, Exception("first"))) == "first"


def test_reason_of_another_error_is_its_message_first_line() -> None:
    assert reason_of(ValueError("bad row\ndetails")) == "bad row"


def test_reason_of_an_error_without_a_message_is_its_class_name() -> None:
    assert reason_of(ValueError()) == "ValueError"
    assert reason_of(TimeoutError("")) == "TimeoutError"


def test_a_driver_error_orderpipe_put_into_words_keeps_its_fault() -> None:
    # create_tables words a refused connection as "cannot reach the database …": a consumer
    # (re)started during an outage must wait for the database, not exit
    try:
        try:
            raise mysql(pymysql.err.OperationalError, 2003, "Can't connect to MySQL server")
        except DBAPIError as driver:
            raise OrderpipeError("cannot reach the database mysql://…: Can't connect") from driver
    except OrderpipeError as worded:
        assert classify(worded) is Fault.transient
        assert "database error" in str(StreamStopped.because(worded, 1))
    assert classify(OrderpipeError("a plain domain error")) is Fault.fatal
