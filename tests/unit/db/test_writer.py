"""db/writer.py: table frames -> upserts, one transaction per write, a fresh connection after
a failure; on SQLite, WAL checkpoints in a thread of their own, a bounded WAL, no lost commit."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from orderpipe.db.writer import TableWriter
from tests.factories import frames_of


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/writer.db"


@pytest.fixture
def writer(url: str) -> Iterator[TableWriter]:
    with TableWriter(url) as table_writer:
        yield table_writer


def _count(url: str, table: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        count = conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
    engine.dispose()
    return count


def _with_a_broken_orders_frame(frames: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    # device is NOT NULL: the database refuses the orders after it accepted the customers.
    broken = frames["table_orders"].with_columns(pl.lit(None, dtype=pl.String).alias("device"))
    return {"table_customers": frames["table_customers"], "table_orders": broken}


def test_write_upserts_every_frame_and_counts_the_rows(writer: TableWriter, url: str) -> None:
    assert writer.write(frames_of(3)) == 9
    for table in ("table_customers", "table_orders", "table_events"):
        assert _count(url, table) == 3


def test_write_is_one_transaction_a_failing_table_leaves_the_others_unchanged(
    writer: TableWriter, url: str
) -> None:
    with pytest.raises(IntegrityError):
        writer.write(_with_a_broken_orders_frame(frames_of(3)))
    assert _count(url, "table_customers") == 0
    assert _count(url, "table_orders") == 0


def test_a_writer_writes_again_after_a_failed_write_on_a_new_connection(
    writer: TableWriter, url: str
) -> None:
    writer.write(frames_of(1))
    failed_connection = writer._conn  # a connection that failed may be broken: never reused
    with pytest.raises(IntegrityError):
        writer.write(_with_a_broken_orders_frame(frames_of(2)))
    assert writer.write(frames_of(2)) == 6
    assert writer._conn is not None and writer._conn is not failed_connection
    assert _count(url, "table_customers") == 2
    assert _count(url, "table_events") == 2


def test_write_chunked_reports_progress_per_table_up_to_its_total(writer: TableWriter) -> None:
    frames = frames_of(5)
    frames = {"table_customers": frames["table_customers"], "table_events": frames["table_events"]}
    calls: list[tuple[str, int, int]] = []
    written = writer.write_chunked(frames, chunk_size=2, progress=lambda *call: calls.append(call))
    assert written == 10
    assert calls == [
        ("table_customers", 2, 5),
        ("table_customers", 4, 5),
        ("table_customers", 5, 5),
        ("table_events", 2, 5),
        ("table_events", 4, 5),
        ("table_events", 5, 5),
    ]


def test_write_chunked_commits_each_chunk(writer: TableWriter, url: str) -> None:
    frames = frames_of(4)
    broken = frames["table_orders"].with_columns(
        pl.when(pl.col("order_id") == "ORD-3")
        .then(None)
        .otherwise(pl.col("device"))
        .alias("device")
    )
    with pytest.raises(IntegrityError):
        writer.write_chunked(
            {"table_customers": frames["table_customers"], "table_orders": broken}, chunk_size=2
        )
    assert _count(url, "table_customers") == 4
    assert _count(url, "table_orders") == 2  # the first chunk, committed before the failure


def _database_file_alone(url: str, copy: Path) -> int:
    """Events in the database file without its WAL: the ones a checkpoint copied back."""
    shutil.copyfile(url.removeprefix("sqlite:///"), copy)
    with sqlite3.connect(copy) as conn:
        return conn.execute("SELECT COUNT(*) FROM table_events").fetchone()[0]


def test_the_checkpoint_runs_in_its_own_thread_after_the_commit(
    writer: TableWriter, url: str, tmp_path: Path
) -> None:
    writer.write(frames_of(3))
    assert writer._conn is not None
    assert writer._conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    assert writer.checkpointer is not None
    writer.checkpointer.wait()
    # SQLite's own automatic checkpoint would have left these rows in the WAL for a while.
    assert _database_file_alone(url, tmp_path / "copy.db") == 3


class _SlowCheckpoints:
    """The checkpointer's connection, each statement late: its checkpoints lag behind commits."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str) -> Any:
        time.sleep(0.03)
        return self.conn.execute(sql)

    def close(self) -> None:
        self.conn.close()


def test_the_wal_stays_bounded_when_checkpoints_lag_behind_the_commits(url: str) -> None:
    sizes = []
    with TableWriter(url) as writer:
        checkpointer = writer.checkpointer
        assert checkpointer is not None
        checkpointer._conn = _SlowCheckpoints(checkpointer._conn)  # type: ignore[assignment]
        checkpointer.limit = 128 * 1024  # before the first write: the writer's journal_size_limit
        for batch in range(100):
            writer.write(frames_of(20, start=batch * 20))
            sizes.append(os.path.getsize(checkpointer.wal))
    # ~100 commits of ~55 KB: without the bound, the WAL never rewinds while a checkpoint lags.
    assert sum(sizes) > 8 * checkpointer.limit
    assert max(sizes) < 2 * checkpointer.limit
    assert _count(url, "table_events") == 2000


def test_close_stops_the_checkpointer_and_leaves_every_row_in_the_database_file(
    url: str, tmp_path: Path
) -> None:
    writer = TableWriter(url)
    for batch in range(3):
        writer.write(frames_of(20, start=batch * 20))
    checkpointer = writer.checkpointer
    assert checkpointer is not None
    writer.close()
    assert not checkpointer._thread.is_alive()
    assert not Path(checkpointer.wal).exists()
    assert _database_file_alone(url, tmp_path / "copy.db") == 60


KILLED_WRITER = """
    import sys
    from orderpipe.db.writer import TableWriter
    from tests.factories import frames_of

    batches = [frames_of(500, start=batch * 500) for batch in range(40)]
    writer = TableWriter(sys.argv[1])
    for batch, frames in enumerate(batches, start=1):
        writer.write(frames)
        print(batch, flush=True)
"""


def test_a_writer_killed_while_checkpointing_loses_no_committed_write(url: str) -> None:
    root = Path(__file__).resolve().parents[3]
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_WRITER), url],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    committed = [int(child.stdout.readline()) for _ in range(5)]  # its checkpoint is in flight
    child.send_signal(signal.SIGKILL)
    child.wait()
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        events = conn.execute("SELECT COUNT(*) FROM table_events").fetchone()[0]
    assert committed == [1, 2, 3, 4, 5]
    assert events >= 5 * 500


def _locked() -> Exception:
    """What SQLAlchemy raises when SQLite stays busy (SQLITE_BUSY: a transient fault)."""
    from sqlalchemy.exc import OperationalError

    cause = sqlite3.OperationalError("database is locked")
    cause.sqlite_errorcode = 5  # type: ignore[attr-defined]
    return OperationalError("INSERT ...", {}, cause)


def test_a_transient_fault_runs_the_whole_transaction_again(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a retry policy, a transaction that fails on a transient fault (here SQLite busy
    after its events were written) is rolled back and run again, whole: nothing twice."""
    from orderpipe.db import upsert as upserts
    from orderpipe.db.writer import Retry

    original, failures = upserts.upsert, []

    def flaky(conn: Any, table: Any, frame: pl.DataFrame) -> Any:
        result = original(conn, table, frame)
        if table.name == "table_events" and len(failures) < 2:
            failures.append(table.name)
            raise _locked()
        return result

    monkeypatch.setattr(upserts, "upsert", flaky)
    with TableWriter(url, retry=Retry(attempts=3, first_delay=0.01)) as writer:
        assert writer.write(frames_of(5)) == 15
    assert len(failures) == 2
    assert (_count(url, "table_orders"), _count(url, "table_events")) == (5, 5)


def test_a_fault_that_outlasts_the_retries_says_so_and_commits_nothing(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orderpipe.db import upsert as upserts
    from orderpipe.db.writer import DatabaseGone, Retry

    original, tries = upserts.upsert, []

    def busy(conn: Any, table: Any, frame: pl.DataFrame) -> Any:
        if table.name == "table_events":
            tries.append(1)
            raise _locked()
        return original(conn, table, frame)

    monkeypatch.setattr(upserts, "upsert", busy)
    gone = pytest.raises(DatabaseGone, match=r"kept failing \(database is locked\).*3 tries")
    with TableWriter(url, retry=Retry(attempts=3, first_delay=0.01)) as writer, gone:
        writer.write(frames_of(5))
    assert len(tries) == 3 and _count(url, "table_orders") == 0


def test_a_fault_that_is_not_transient_is_never_retried(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug (or a content error) fails at once: retrying cannot fix it."""
    from orderpipe.db import upsert as upserts
    from orderpipe.db.writer import Retry

    tries = []

    def bug(conn: Any, table: Any, frame: pl.DataFrame) -> Any:
        tries.append(1)
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(upserts, "upsert", bug)
    retry = Retry(attempts=5, first_delay=0.01)
    with TableWriter(url, retry=retry) as writer, pytest.raises(ZeroDivisionError):
        writer.write(frames_of(1))
    assert len(tries) == 1


def test_a_driver_that_is_not_installed_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from orderpipe.core.errors import OrderpipeError
    from orderpipe.db.engine import make_engine
    from orderpipe.runs.doctor import check_database

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as when the extra is not installed
    with pytest.raises(OrderpipeError) as caught:
        make_engine("postgresql+psycopg://u:secret@127.0.0.1/x")
    message = str(caught.value)
    assert "needs the Python driver 'psycopg', which is not installed" in message
    assert "orderpipe[postgres]" in message and "secret" not in message
    check = check_database("postgresql+psycopg://u:secret@127.0.0.1/x")
    assert not check.ok and "orderpipe[postgres]" in check.detail


def test_a_sqlite_path_under_a_file_is_one_line_naming_the_folder(tmp_path: Path) -> None:
    # it was "unexpected FileExistsError: [Errno 17] File exists: ..."
    from orderpipe.core.errors import OrderpipeError
    from orderpipe.db.engine import make_engine

    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    with pytest.raises(OrderpipeError, match=r"cannot create the folder .*notes.txt/sub of"):
        make_engine(f"sqlite:///{blocker}/sub/x.db")
