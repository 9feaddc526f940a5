"""Helpers shared by the integration test modules, which never import each other: the stream's
data and backends, views of its tables and its DLQ, service outages. Fixtures: conftest.py."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from orderpipe.db.engine import make_engine
from orderpipe.db.models import Base
from orderpipe.generate.dirt import BAD_LINE_KINDS
from orderpipe.stream.consumer import StreamConsumer
from orderpipe.stream.kafka import KafkaEndpoint
from orderpipe.stream.lifecycle import ConsumerOptions
from orderpipe.stream.sink import DatabaseSink

# The stream's data (the `data` fixture): EVENTS valid events, 60 duplicates, BAD bad lines.
EVENTS = 3000
BAD = 2 * len(BAD_LINE_KINDS)
SERVICES = Path(__file__).resolve().parents[2] / "docker" / "services.sh"


# ---------------------------------------------------------------- the stream
@dataclass(frozen=True)
class StreamData:
    raw: Path
    clean_jsonl: Path
    artifacts: Path
    valid_events: int  # distinct valid events in the raw file


@dataclass(frozen=True)
class Backend:
    bootstrap: str
    database_url: str
    embedded: bool

    @property
    def endpoint(self) -> KafkaEndpoint:
        return KafkaEndpoint(self.bootstrap, embedded=self.embedded)

    def sink(self, artifacts: Path) -> Callable[[], DatabaseSink]:
        return partial(DatabaseSink, self.database_url, artifacts)


def new_topic() -> str:
    return f"orders-{uuid.uuid4().hex[:10]}"


def consume(
    backend: Backend,
    topic: str,
    group: str,
    artifacts: Path,
    *,
    idle: float = 4.0,
    **options: object,
) -> object:
    consumer = StreamConsumer(
        backend.endpoint,
        topic,
        group,
        backend.sink(artifacts),
        options=ConsumerOptions(idle_timeout=idle, **options),
    )
    return asyncio.run(consumer.run())


def consume_process(
    backend: Backend, topic: str, group: str, artifacts: Path, *extra: str, crash: str = ""
) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if k != "ORDERPIPE_CRASH_AT"},
        **({"ORDERPIPE_CRASH_AT": crash} if crash else {}),
        "ORDERPIPE_KAFKA_BOOTSTRAP_SERVERS": backend.bootstrap,
        "ORDERPIPE_KAFKA_TOPIC": topic,
        "ORDERPIPE_KAFKA_GROUP_ID": group,
        "ORDERPIPE_DATABASE_URL": backend.database_url,
        "ORDERPIPE_ARTIFACTS_DIR": str(artifacts),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orderpipe",
            "stream",
            "consume",
            "--batch-size",
            "250",
            "--batch-wait-ms",
            "50",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def dead_letters(bootstrap: str, topic: str, expected: int) -> list[object]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        f"{topic}.dlq",
        bootstrap_servers=bootstrap,
        group_id=None,  # every partition, from the start, without a group join to wait for
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[object] = []
    try:
        deadline = time.monotonic() + 30
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            records.extend(r for part in batch.values() for r in part)
    finally:
        await consumer.stop()
    return records


# ---------------------------------------------------------------- the database
def counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    with engine.connect() as conn:
        result = {
            name: conn.execute(text(f"SELECT COUNT(*) FROM {name}")).scalar() or 0
            for name in ("table_events", "table_predictions", "table_orders", "table_customers")
        }
        result["orphans"] = (
            conn.execute(
                text(
                    "SELECT COUNT(*) FROM table_events e LEFT JOIN table_orders o "
                    "ON o.order_id = e.order_id WHERE o.order_id IS NULL"
                )
            ).scalar()
            or 0
        )
        result["unscored"] = (
            conn.execute(
                text(
                    "SELECT COUNT(*) FROM table_events e LEFT JOIN table_predictions p "
                    "ON p.event_id = e.event_id WHERE p.event_id IS NULL"
                )
            ).scalar()
            or 0
        )
    engine.dispose()
    return result


def snapshot(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every table's rows, predictions without their timestamp."""
    engine = make_engine(url)
    with engine.connect() as conn:
        tables = {
            "events": conn.execute(text("SELECT * FROM table_events ORDER BY event_id")).all(),
            "orders": conn.execute(text("SELECT * FROM table_orders ORDER BY order_id")).all(),
            "customers": conn.execute(
                text("SELECT * FROM table_customers ORDER BY customer_id")
            ).all(),
            "predictions": conn.execute(
                text(
                    "SELECT event_id, return_proba, model_version FROM table_predictions "
                    "ORDER BY event_id"
                )
            ).all(),
        }
    engine.dispose()
    return {name: [tuple(row) for row in rows] for name, rows in tables.items()}


def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, ordered by key, timestamps as text."""
    engine = make_engine(url)
    tables: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows = conn.execute(select(table).order_by(*table.primary_key.columns)).all()
            tables[table.name] = [
                tuple(v.isoformat() if isinstance(v, datetime) else v for v in row) for row in rows
            ]
    engine.dispose()
    return tables


# ---------------------------------------------------------------- the services
def server_answers(url: str) -> bool:
    """Whether the database server of `url` accepts TCP connections."""
    parsed = make_url(url)
    port = parsed.port or (5432 if parsed.get_backend_name() == "postgresql" else 3306)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def services(action: str, service: str = "mariadb") -> None:
    subprocess.run([str(SERVICES), action, service], check=True, timeout=120, capture_output=True)


def database_outage(url: str, seconds: float, log: list[tuple[str, float]]) -> None:
    """Stop the database server of `url` (MariaDB or PostgreSQL) for `seconds`, then start it
    again (always, even when the stop failed)."""
    service = "postgres" if make_url(url).get_backend_name() == "postgresql" else "mariadb"
    log.append(("stopping", time.monotonic()))
    try:
        services("down", service)
        log.append(("down" if not server_answers(url) else "still answers", time.monotonic()))
        time.sleep(seconds)
    finally:
        services("up", service)
        log.append(("up", time.monotonic()))
