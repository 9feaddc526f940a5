"""db/ on the real PostgreSQL: the DDL lock, and the keys a load into empty tables builds at
its end."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Connection, create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from orderpipe.db import postgres
from orderpipe.db.engine import create_tables, deferred_indexes, make_engine
from orderpipe.errors import OrderpipeError
from orderpipe.etl import run_etl
from orderpipe.generate import generate_events
from orderpipe.ingest import run_ingest
from tests.factories import layout_under

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


def keys(url: str | Connection) -> dict[str, set[tuple[str, ...]]]:
    """The secondary indexes' and foreign keys' columns of the deferred tables."""
    engine = make_engine(url) if isinstance(url, str) else None
    try:
        found = inspect(engine or url)
        return {
            name: {tuple(i["column_names"]) for i in found.get_indexes(name)}
            | {("fk", *fk["constrained_columns"]) for fk in found.get_foreign_keys(name)}
            for name in postgres.DEFERRED_TABLES
        }
    finally:
        if engine is not None:
            engine.dispose()


EXPECTED = {
    "table_orders": {("customer_id",), ("fk", "customer_id")},
    "table_events": {("event_time",), ("order_id",), ("fk", "order_id"), ("fk", "customer_id")},
}


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pg")
    paths = layout_under(root)
    run_etl(generate_events(root / "raw.jsonl", 3000, seed=5).output, paths)
    return paths.table


def test_a_load_into_empty_tables_builds_indexes_and_keys_at_its_end(
    postgres_url: str, table: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    during: list[dict[str, set[tuple[str, ...]]]] = []
    add = postgres.add_deferred_keys

    def watched(conn: Connection) -> None:
        during.append(keys(conn))
        add(conn)

    monkeypatch.setattr(postgres, "add_deferred_keys", watched)
    assert run_ingest(table, postgres_url).events == 3000
    assert during[-1] == {"table_orders": set(), "table_events": set()}  # the load had none
    assert keys(postgres_url) == EXPECTED
    engine = make_engine(postgres_url)
    try:
        with engine.begin() as conn, pytest.raises(IntegrityError):  # the keys hold again
            conn.execute(
                text(
                    "INSERT INTO table_events VALUES "
                    "('orphan', now(), 2024, 1, 1, 0, 'no-such-order', 'no-such-customer')"
                )
            )
    finally:
        engine.dispose()


def test_a_load_into_tables_with_rows_keeps_its_keys(
    postgres_url: str, table: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_ingest(table, postgres_url)

    def refused(_conn: object) -> None:
        raise AssertionError("keys dropped on tables that hold rows")

    monkeypatch.setattr(postgres, "drop_deferred_keys", refused)
    assert run_ingest(table, postgres_url, full=True).events == 3000
    assert keys(postgres_url) == EXPECTED


def test_a_failed_load_adds_its_keys_back_and_create_tables_adds_what_a_kill_left_out(
    postgres_url: str,
) -> None:
    engine = make_engine(postgres_url)
    try:
        create_tables(engine)
        with pytest.raises(RuntimeError, match="mid-load"), deferred_indexes(engine):
            assert keys(postgres_url) == {"table_orders": set(), "table_events": set()}
            raise RuntimeError("mid-load")
        assert keys(postgres_url) == EXPECTED
        with engine.begin() as conn:  # as a load killed -9 leaves them
            postgres.drop_deferred_keys(conn)
        create_tables(engine)
        assert keys(postgres_url) == EXPECTED
    finally:
        engine.dispose()


def test_processes_starting_together_create_the_tables_once(postgres_url: str) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        engine = make_engine(postgres_url)
        try:
            create_tables(engine)
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert keys(postgres_url) == EXPECTED


def test_create_tables_says_plainly_when_another_process_holds_the_ddl_lock(
    postgres_url: str,
) -> None:
    holder = create_engine(postgres_url)
    engine = make_engine(postgres_url)
    try:
        with holder.connect() as conn:
            conn.execute(text(f"SELECT pg_advisory_xact_lock({postgres.DDL_LOCK})"))
            with pytest.raises(OrderpipeError, match=r"held orderpipe's DDL lock .* for 1 s"):
                create_tables(engine, lock_timeout=1)
            conn.rollback()
        create_tables(engine, lock_timeout=1)
        assert keys(postgres_url) == EXPECTED
    finally:
        holder.dispose()
        engine.dispose()
