"""stream/errors.py: which write failures are worth waiting for, and their one-line reason."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from orderpipe.stream.errors import is_transient, reason_of


def driver_error(message: str = "lost\nsecond line") -> Exception:
    return Exception(message)


def test_operational_error_is_transient() -> None:
    assert is_transient(OperationalError("SELECT 1", {}, driver_error()))


def test_integrity_error_is_not_transient() -> None:
    assert not is_transient(IntegrityError("INSERT", {}, driver_error("duplicate key")))


def test_dbapi_error_on_an_invalidated_connection_is_transient() -> None:
    error = DBAPIError("SELECT 1", {}, driver_error(), connection_invalidated=True)
    assert is_transient(error)


def test_dbapi_error_on_a_live_connection_is_not_transient() -> None:
    assert not is_transient(DBAPIError("SELECT 1", {}, driver_error()))


@pytest.mark.parametrize("error", [ValueError("bad row"), KeyError("event_id"), RuntimeError()])
def test_an_error_outside_the_database_is_not_transient(error: Exception) -> None:
    assert not is_transient(error)


def test_reason_of_a_database_error_is_the_driver_first_line() -> None:
    error = OperationalError("SELECT 1", {}, driver_error("lost\nsecond line"))
    assert reason_of(error) == "lost"


def test_reason_of_another_error_is_its_message_first_line() -> None:
    assert reason_of(ValueError("bad row\ndetails")) == "bad row"


def test_reason_of_an_error_without_a_message_is_its_class_name() -> None:
    assert reason_of(ValueError()) == "ValueError"
    assert reason_of(TimeoutError("")) == "TimeoutError"
