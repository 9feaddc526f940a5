"""errors.first_line: the one "first line of an error", and the paths that used to spell it out
inline (`str(exc).splitlines()[0]`, an IndexError when the message was empty)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from orderpipe.core.errors import OrderpipeError, first_line


class Silent(Exception):
    """An exception whose message is empty."""


def test_first_line_is_the_messages_first_line_or_the_types_name() -> None:
    assert first_line(ValueError("bad value\nsecond line")) == "bad value"
    assert first_line(Silent()) == "Silent"
    assert first_line(Silent("  \n ")) == "Silent"
    assert first_line(ValueError("bad value"), named=True) == "ValueError: bad value"
    assert first_line(Silent(), named=True) == "Silent"
    assert first_line(ValueError("ValueError: said"), named=True) == "ValueError: said"


def test_a_wrapped_database_error_speaks_through_the_drivers_message() -> None:
    from sqlalchemy.exc import OperationalError

    wrapped = OperationalError("SELECT 1", {}, Exception("server has gone away\nmore"))
    assert first_line(wrapped) == "server has gone away"
    assert first_line(OperationalError("SELECT 1", {}, Silent())) == "OperationalError"


def test_reading_a_file_that_fails_with_an_empty_message_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orderpipe.table.read import read_clean_dataset, scan_clean_dataset

    class Unreadable:
        def collect_schema(self) -> None:
            raise pl.exceptions.ComputeError("")

    path = tmp_path / "clean.parquet"
    path.write_bytes(b"")
    monkeypatch.setattr(pl, "scan_parquet", lambda _path: Unreadable())
    with pytest.raises(OrderpipeError, match=r"^cannot read .*clean\.parquet: ComputeError$"):
        scan_clean_dataset(path)
    with pytest.raises(OrderpipeError, match=r"^cannot read .*clean\.parquet: ComputeError$"):
        read_clean_dataset(path)


def test_a_database_error_with_an_empty_message_is_one_line() -> None:
    from sqlalchemy.exc import OperationalError

    from orderpipe.db.engine import database_errors

    with (
        pytest.raises(OrderpipeError, match=r"^error from the database .*: OperationalError$"),
        database_errors("sqlite:///nowhere.db"),
    ):
        raise OperationalError("SELECT 1", {}, Silent())


def test_doctor_reports_a_database_failing_with_an_empty_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import orderpipe.db.engine
    from orderpipe.runs.doctor import check_database

    class Refusing:
        def connect(self) -> None:
            raise Silent()

        def dispose(self) -> None:
            pass

    monkeypatch.setattr(orderpipe.db.engine, "make_engine", lambda _url: Refusing())
    check = check_database("sqlite:///nowhere.db")
    assert (check.ok, str(check.detail).endswith(": Silent")) == (False, True), check.detail


def test_an_export_whose_writer_fails_with_an_empty_message_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orderpipe.table.export import export_dataset
    from tests.factories import clean_rows, raw_event

    source = tmp_path / "clean.parquet"
    clean_rows(raw_event(event_id="e-1")).write_parquet(source)

    def fail(*_args: object, **_kwargs: object) -> None:
        raise pl.exceptions.ComputeError("")

    monkeypatch.setattr(pl.LazyFrame, "sink_csv", fail)
    with pytest.raises(OrderpipeError, match=r"^cannot export to .*: ComputeError$"):
        export_dataset(source, tmp_path / "out.csv", "csv")


def test_the_reports_drift_query_failing_with_an_empty_message_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    import orderpipe.db.engine
    from orderpipe.db.queries import scored_inputs

    class Refusing:
        def connect(self) -> None:
            raise OperationalError("SELECT", {}, Silent())

        def dispose(self) -> None:
            pass

    database = tmp_path / "scored.db"
    database.write_bytes(b"")
    monkeypatch.setattr(orderpipe.db.engine, "make_engine", lambda _url: Refusing())
    with pytest.raises(OrderpipeError, match=r"^OperationalError$"):
        scored_inputs(f"sqlite:///{database}", "v1", ["device"], None, limit=10)
