"""db/upsert.py: whether LOAD DATA LOCAL INFILE is available, without hiding real failures."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import DBAPIError

from orderpipe.db.upsert import local_infile_available


class MySQLConnection:
    """The little of a MySQL Connection that `local_infile_available` uses."""

    dialect = SimpleNamespace(name="mysql")

    def __init__(self, *, answer: Any = None, error: BaseException | None = None) -> None:
        self.answer = answer
        self.error = error
        self.statements: list[str] = []
        self.rolled_back = False

    def exec_driver_sql(self, statement: str) -> Any:
        self.statements.append(statement)
        if self.error is not None:
            raise self.error
        return SimpleNamespace(scalar=lambda: self.answer)

    def rollback(self) -> None:
        self.rolled_back = True


def driver_error(code: int, message: str) -> DBAPIError:
    return DBAPIError("SELECT @@GLOBAL.local_infile", None, Exception(code, message))


def test_sqlite_has_no_local_infile() -> None:
    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        assert local_infile_available(conn) is False
    engine.dispose()


@pytest.mark.parametrize(("answer", "expected"), [(1, True), (0, False)])
def test_mysql_answers_from_the_server_variable(answer: int, expected: bool) -> None:
    conn = MySQLConnection(answer=answer)
    assert local_infile_available(conn) is expected  # type: ignore[arg-type]
    assert conn.statements == ["SELECT @@GLOBAL.local_infile"]


def test_a_server_without_the_variable_says_no_and_rolls_back() -> None:
    conn = MySQLConnection(error=driver_error(1193, "Unknown system variable 'local_infile'"))
    assert local_infile_available(conn) is False  # type: ignore[arg-type]
    assert conn.rolled_back


def test_a_lost_connection_is_raised_not_taken_for_no() -> None:
    conn = MySQLConnection(error=driver_error(2013, "Lost connection to MySQL server"))
    with pytest.raises(DBAPIError) as caught:
        local_infile_available(conn)  # type: ignore[arg-type]
    assert caught.value.orig.args[0] == 2013


def test_an_error_outside_the_driver_is_raised() -> None:
    conn = MySQLConnection(error=RuntimeError("bug"))
    with pytest.raises(RuntimeError, match="bug"):
        local_infile_available(conn)  # type: ignore[arg-type]
