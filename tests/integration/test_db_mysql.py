"""db/ on the real MariaDB: the table-creation lock and the bulk path the settings choose."""

from __future__ import annotations

import polars as pl
import pytest
from sqlalchemy import create_engine, text

from orderpipe.core.errors import OrderpipeError
from orderpipe.db.engine import create_tables, make_engine
from orderpipe.db.writer import TableWriter

pytestmark = [pytest.mark.integration, pytest.mark.mysql]


def test_create_tables_says_plainly_when_another_process_holds_the_lock(mysql_url: str) -> None:
    holder = create_engine(mysql_url)
    engine = make_engine(mysql_url)
    try:
        with holder.connect() as conn:
            assert conn.execute(text("SELECT GET_LOCK('orderpipe_create_tables', 5)")).scalar()
            with pytest.raises(OrderpipeError, match=r"held the table-creation lock .* for 1 s"):
                create_tables(engine, lock_timeout=1)
            conn.execute(text("SELECT RELEASE_LOCK('orderpipe_create_tables')"))
        create_tables(engine, lock_timeout=1)  # free again: the tables get created
        with engine.connect() as conn:
            tables = conn.execute(text("SHOW TABLES")).scalars().all()
        assert {"table_customers", "table_orders", "table_events"} <= set(tables)
    finally:
        holder.dispose()
        engine.dispose()


@pytest.mark.parametrize(("local_infile", "method"), [(True, "load-data"), (False, "executemany")])
def test_the_writer_takes_the_bulk_path_the_setting_allows(
    mysql_url: str, local_infile: bool, method: str
) -> None:
    with TableWriter(mysql_url, local_infile=local_infile) as writer:
        assert writer.method == method


@pytest.mark.parametrize("local_infile", [True, False])
def test_a_value_the_column_refuses_is_refused_whole_never_stored_cut(
    mysql_url: str, local_infile: bool
) -> None:
    """LOAD DATA LOCAL turns a too-long value into a warning and stores it cut, even in strict
    mode; the writer refuses the load instead, like executemany (and SQLite) refuse the row."""
    from orderpipe.db.errors import Fault
    from orderpipe.db.models import table_frames
    from orderpipe.stream.errors import classify
    from tests.factories import clean_rows, raw_event

    rows = clean_rows(raw_event(event_id="evt-long")).with_columns(
        pl.lit("d" * 40).alias("device")  # the column holds 32
    )
    with TableWriter(mysql_url, local_infile=local_infile) as writer:
        with pytest.raises(Exception) as refused:
            writer.write(table_frames(rows))
        assert classify(refused.value) is Fault.content
        with writer.engine.connect() as conn:
            stored = conn.execute(text("SELECT COUNT(*) FROM table_events")).scalar()
            orders = conn.execute(text("SELECT COUNT(*) FROM table_orders")).scalar()
    assert stored == 0 and orders == 0  # the whole transaction rolled back
    if local_infile:
        assert "Data too long" in str(refused.value) or "truncated" in str(refused.value)


@pytest.mark.parametrize(
    ("engine", "aria_rows", "first", "then"),
    [
        ("Aria", 100, ["Aria"] * 3, ["Aria"] * 3),
        ("NoSuchEngine", 100, ["NoSuchEngine", *[None] * 3], [None] * 3),
        ("Aria", 2, [None] * 3, [None] * 3),  # more rows than an Aria stage takes
    ],
)
def test_batches_are_staged_in_aria_and_in_the_default_engine_when_the_server_refuses_it(
    mysql_url: str,
    engine: str,
    aria_rows: int,
    first: list[str | None],
    then: list[str | None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MariaDB stages a batch's LOAD DATA in Aria tables; a server that refuses the engine (none
    such, or `enforce_storage_engine`) gets tables of its default engine from then on, and the
    rows go in all the same. Larger loads (ingest's chunks) are staged in the default engine."""
    import re

    from sqlalchemy import event

    from orderpipe.db import upsert
    from orderpipe.db.models import table_frames
    from tests.factories import clean_rows, raw_event

    monkeypatch.setattr(upsert, "STAGE_ENGINE", engine)
    monkeypatch.setattr(upsert, "ARIA_STAGE_ROWS", aria_rows)
    rows = clean_rows(
        *(
            raw_event(event_id=f"evt-{n}", order_id=f"ord-{n}", customer__customer_id=f"c-{n}")
            for n in range(3)
        )
    )
    with TableWriter(mysql_url) as writer:
        assert writer.method == "load-data"
        engines: list[str | None] = []

        @event.listens_for(writer.engine, "before_cursor_execute")
        def staged(*args: object) -> None:
            statement = str(args[2])
            if statement.startswith("CREATE TEMPORARY TABLE"):
                named = re.search(r"ENGINE=(\w+)", statement)
                engines.append(named.group(1) if named else None)

        writer.write(table_frames(rows))
        assert engines == first
        engines.clear()
        writer.write(table_frames(rows))  # the connection remembers a refusal
        assert engines == then
        with writer.engine.connect() as conn:
            stored = conn.execute(text("SELECT COUNT(*) FROM table_events")).scalar()
    assert stored == 3


def test_doctor_names_id_columns_that_compare_case_insensitively(mysql_url: str) -> None:
    """Tables created by an earlier orderpipe keep the server's collation, which takes ids that
    differ only by case or accent for one key: doctor says where."""
    from orderpipe.runs.doctor import check_database

    engine = create_engine(mysql_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE table_customers (customer_id VARCHAR(64) COLLATE "
                "utf8mb4_unicode_ci PRIMARY KEY, country VARCHAR(2), updated_at DATETIME(6))"
            )
        )
    engine.dispose()
    check = check_database(mysql_url)
    assert check.ok
    assert check.facts["case_insensitive_ids"] == ["table_customers.customer_id"]
    assert "case- and accent-insensitively in table_customers.customer_id" in check.detail
    # the tables that refer to it cannot be created: one line that says why
    with pytest.raises(OrderpipeError, match="earlier orderpipe, whose ids use another"):
        create_tables(make_engine(mysql_url))
