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


def test_a_user_who_may_only_write_loads_into_empty_tables_with_the_keys_in_place(
    postgres_url: str, table: Path
) -> None:
    """Dropping and building keys needs the tables' owner: another user's load keeps them."""
    import uuid

    from sqlalchemy.engine import make_url

    owner = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    engine = make_engine(postgres_url)
    create_tables(engine)
    engine.dispose()
    role = f"op_writer_{uuid.uuid4().hex[:8]}"
    database = make_url(postgres_url).database
    try:
        with owner.connect() as conn:
            conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD 'writer'"))
            conn.execute(text(f'GRANT CONNECT, TEMPORARY ON DATABASE "{database}" TO {role}'))
            conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
            conn.execute(
                text(f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {role}")
            )
        writer = make_url(postgres_url).set(username=role, password="writer")
        assert run_ingest(table, writer.render_as_string(hide_password=False)).events == 3000
        assert keys(postgres_url) == EXPECTED
    finally:
        with owner.connect() as conn:
            conn.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}"))
            conn.execute(text(f"REVOKE ALL ON SCHEMA public FROM {role}"))
            conn.execute(text(f'REVOKE ALL ON DATABASE "{database}" FROM {role}'))
            conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        owner.dispose()


def test_doctor_shows_tls_whether_checked_and_keys_a_killed_load_left_out(
    postgres_url: str, postgres_tls_url: str
) -> None:
    from orderpipe.doctor import check_database

    verified = check_database(postgres_tls_url)
    assert verified.ok, verified.detail
    assert verified.facts["tls"] and verified.facts["tls_verified"] is True
    assert "certificate checked" in verified.detail and "COPY bulk path" in verified.detail
    from sqlalchemy.engine import make_url

    clear = make_url(postgres_url).update_query_dict({"sslmode": "disable"})
    plain = check_database(clear.render_as_string(hide_password=False))
    assert plain.ok and plain.facts["tls"] is None
    assert "not encrypted (no TLS)" in plain.detail
    engine = make_engine(postgres_url)
    try:
        create_tables(engine)
        with engine.begin() as conn:  # as a load killed -9 leaves them
            postgres.drop_deferred_keys(conn)
    finally:
        engine.dispose()
    killed = check_database(postgres_url)
    assert killed.ok
    assert len(killed.facts["missing_keys"]) == 6  # type: ignore[arg-type]
    assert "left out by a load running or killed" in killed.detail


def test_a_driver_that_is_not_installed_is_one_line() -> None:
    from orderpipe.doctor import check_database

    with pytest.raises(OrderpipeError, match=r"needs the Python driver 'psycopg2'.*not installed"):
        make_engine("postgresql+psycopg2://u:secret@127.0.0.1/x")
    check = check_database("postgresql+psycopg2://u:secret@127.0.0.1/x")
    assert not check.ok and "secret" not in check.detail
