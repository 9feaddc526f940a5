"""db/ on the real MariaDB: the table-creation lock and the bulk path the settings choose."""

from __future__ import annotations

import polars as pl
import pytest
from sqlalchemy import create_engine, text

from orderpipe.db.engine import create_tables, make_engine
from orderpipe.db.writer import TableWriter
from orderpipe.errors import OrderpipeError

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
    from orderpipe.db.models import table_frames
    from orderpipe.stream.errors import Fault, classify
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
