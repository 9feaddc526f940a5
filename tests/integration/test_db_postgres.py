"""db/ on the real PostgreSQL: the DDL lock, and the keys a load into empty tables builds at
its end."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Connection, create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from orderpipe.core.errors import OrderpipeError
from orderpipe.db import postgres
from orderpipe.db.engine import create_tables, deferred_indexes, make_engine
from orderpipe.etl.run import run_etl
from orderpipe.generate.writer import generate_events
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
    assert [thread for thread in threads if thread.is_alive()] == []  # each one finished
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
        # keys a killed owner's load left out: the writer's commands go on without them
        with owner.connect() as conn:
            postgres.drop_deferred_keys(conn)
        writing = make_engine(writer.render_as_string(hide_password=False))
        try:
            create_tables(writing)
        finally:
            writing.dispose()
        assert keys(postgres_url) == {"table_orders": set(), "table_events": set()}
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
    from orderpipe.runs.doctor import check_database

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


def test_a_fresh_load_meets_an_order_of_two_days_and_the_newer_still_wins(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Into empty tables each chunk tries a plain INSERT; an order met on two days (two units,
    on two connections) makes the second fail with unique_violation: that chunk goes in by
    the upsert, and the newer state wins whichever unit commits first."""
    from orderpipe import ingest
    from orderpipe.db import upsert
    from tests.factories import raw_event, write_lines

    paths = layout_under(tmp_path)
    days = [
        raw_event(event_id=f"e{day}", event_time=f"2026-11-{day}T09:00:00Z", order__n_items=day)
        for day in (20, 21, 22)  # one order (the factory's), on three days
    ]
    run_etl(write_lines(tmp_path / "raw.jsonl", days), paths)
    monkeypatch.setattr(ingest, "READ_ROWS", 1)  # a unit per day
    tried: list[bool] = []
    original = upsert._inserted_new

    def spy(conn: Connection, insert: str) -> int | None:
        stored = original(conn, insert)  # the rows it stored; None: a key was there already
        tried.append(stored is not None)
        return stored

    monkeypatch.setattr(upsert, "_inserted_new", spy)
    assert run_ingest(paths.table, postgres_url).events == 3
    assert False in tried and True in tried  # the fast path, and its fallback
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            orders = conn.execute(text("SELECT n_items, updated_at FROM table_orders")).all()
            events = conn.execute(text("SELECT count(*) FROM table_events")).scalar()
    finally:
        engine.dispose()
    assert [order[0] for order in orders] == [22] and events == 3
    assert keys(postgres_url) == EXPECTED


def test_a_load_into_tables_with_rows_never_tries_the_plain_insert(
    postgres_url: str, table: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orderpipe.db import upsert

    run_ingest(table, postgres_url)

    def refused(_conn: Connection, _insert: str) -> int | None:
        raise AssertionError("a plain INSERT into tables that hold rows")

    monkeypatch.setattr(upsert, "_inserted_new", refused)
    assert run_ingest(table, postgres_url, full=True).events == 3000


def test_other_commands_leave_the_keys_of_a_running_load_alone(postgres_url: str) -> None:
    """A load that deferred the keys holds LOAD_LOCK: create_tables (a consumer or predict
    starting meanwhile) does not add them back under it; once the load is gone, it does."""
    engine = make_engine(postgres_url)
    loader = create_engine(postgres_url)
    try:
        create_tables(engine)
        with engine.begin() as conn:
            postgres.drop_deferred_keys(conn)
        with loader.connect() as held:
            held.execute(text(f"SELECT pg_advisory_lock_shared({postgres.LOAD_LOCK})"))
            held.commit()
            create_tables(engine)
            assert keys(postgres_url) == {"table_orders": set(), "table_events": set()}
            held.execute(text("SELECT pg_advisory_unlock_all()"))
            held.commit()
        create_tables(engine)  # the load is gone (killed): its keys come back
        assert keys(postgres_url) == EXPECTED
    finally:
        loader.dispose()
        engine.dispose()


def test_a_key_that_no_longer_holds_is_a_warning_not_the_end_of_every_command(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from orderpipe.runs.doctor import check_database

    engine = make_engine(postgres_url)
    try:
        create_tables(engine)
        with engine.begin() as conn:
            postgres.drop_deferred_keys(conn)
            conn.execute(
                text(
                    "INSERT INTO table_events VALUES "
                    "('orphan', now(), 2024, 1, 1, 0, 'no-such-order', 'no-such-customer')"
                )
            )
        with caplog.at_level("WARNING", logger="orderpipe.db"):
            create_tables(engine)  # no exception: the commands go on
        assert "could not add back" in caplog.text
    finally:
        engine.dispose()
    check = check_database(postgres_url)
    assert check.ok and "table_events(order_id) foreign key" in check.detail
