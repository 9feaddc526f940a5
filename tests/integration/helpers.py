"""Helpers shared by the integration test modules, which never import each other: the stream's
data and backends, views of its tables and its DLQ, service outages. Fixtures: conftest.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
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
    server: PrivateService | None = None  # the private database server, when it is one

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


# A private instance of a docker/services.sh service: its own state folder and free ports, so a
# test that stops it stops nothing another test (or another run) uses. Only private instances
# are ever stopped by the tests: `database_outage` and the Kafka restart take one.
_PORTS = {
    "mariadb": ("ORDERPIPE_SERVICES_MYSQL_PORT",),
    "postgres": ("ORDERPIPE_SERVICES_POSTGRES_PORT",),
    "kafka": (
        "ORDERPIPE_SERVICES_KAFKA_PORT",
        "ORDERPIPE_SERVICES_KAFKA_CONTROLLER_PORT",
        "ORDERPIPE_SERVICES_KAFKA_SASL_PORT",
    ),
}
# Less memory than the shared instances ask for (6G buffer pool, 2GB shared buffers...): a
# private instance holds a few test databases or topics.
_SMALL = {
    "ORDERPIPE_SERVICES_MYSQL_BUFFER_POOL_SIZE": "512M",
    "ORDERPIPE_SERVICES_MYSQL_LOG_FILE_SIZE": "256M",
    "ORDERPIPE_SERVICES_POSTGRES_SHARED_BUFFERS": "256MB",
    "ORDERPIPE_SERVICES_KAFKA_HEAP": "512m",
}
# What a start that lost its port says (services.sh, or the server's own log).
_PORT_TAKEN = ("is taken by another program", "Address already in use", "BindException")
# The PID file an instance of the state folder writes once its server runs: proof that what
# answers on the port is this instance, not another one that took the port meanwhile.
_PID_FILES = {
    "mariadb": "mariadb/mariadb.pid",
    "postgres": "postgres/data/postmaster.pid",
    "kafka": "kafka/kafka.pid",
}
_URLS = {
    "mariadb": "ORDERPIPE_TEST_MYSQL_URL",
    "postgres": "ORDERPIPE_TEST_POSTGRES_URL",
    "kafka": "ORDERPIPE_TEST_KAFKA_BOOTSTRAP",
}


class PrivateServiceError(RuntimeError):
    """A private instance did not start; `port_taken` when it lost one of its ports."""

    def __init__(self, message: str, *, port_taken: bool = False) -> None:
        super().__init__(message)
        self.port_taken = port_taken


@dataclass(eq=False)  # one instance is one server: compared (and hashed) by identity
class PrivateService:
    """One private instance of `service` (mariadb, postgres or kafka): `up()` and `down()` run
    docker/services.sh with this instance's environment (state folder, ports) only."""

    service: str
    state: Path
    ports: dict[str, int]
    urls: dict[str, str]  # the ORDERPIPE_TEST_* lines of `services.sh env`

    @property
    def environ(self) -> dict[str, str]:
        """The ORDERPIPE_SERVICES_* variables that select this instance."""
        return {
            "ORDERPIPE_SERVICES_DIR": str(self.state),
            **{name: str(port) for name, port in self.ports.items()},
            **_SMALL,
        }

    @property
    def url(self) -> str:
        """The server's URL (a database server's test database, Kafka's bootstrap)."""
        return self.urls[_URLS[self.service]]

    @property
    def bootstrap(self) -> str:
        return self.urls["ORDERPIPE_TEST_KAFKA_BOOTSTRAP"]

    @property
    def port(self) -> int:
        return self.ports[_PORTS[self.service][0]]

    def up(self) -> None:
        self._run("up")

    def down(self) -> None:
        self._run("down")

    def answers(self) -> bool:
        """Whether the instance accepts TCP connections on its (first) port."""
        return port_answers(self.port)

    def _run(self, action: str) -> subprocess.CompletedProcess[str]:
        searchable(self.state)
        limit = 300 if self.service == "kafka" else 150  # services.sh waits up to 180 s, 60 s
        try:
            result = subprocess.run(
                [str(SERVICES), action, self.service],
                env={**os.environ, **self.environ},
                timeout=limit,
                capture_output=True,
                text=True,
            )
        except subprocess.TimeoutExpired as error:
            raise PrivateServiceError(
                f"`services.sh {action} {self.service}` (state {self.state}) still ran after "
                f"{limit} s"
            ) from error
        if result.returncode != 0:
            raise PrivateServiceError(
                f"`services.sh {action} {self.service}` (state {self.state}, ports "
                f"{sorted(self.ports.values())}) exited with {result.returncode}:\n"
                f"{result.stderr[-3000:]}",
                port_taken=action == "up" and self._lost_a_port(result.stderr),
            )
        return result

    def _lost_a_port(self, stderr: str) -> bool:
        logs = [stderr]
        for name in ("mariadb/error.log", "postgres/server.log", "kafka/kafka.log"):
            path = self.state / name
            if path.is_file():
                logs.append(path.read_text(errors="replace")[-20_000:])
        return any(sign in text for text in logs for sign in _PORT_TAKEN)

    def _env(self) -> dict[str, str]:
        """The export lines of `services.sh env` for this instance, as a dict."""
        try:
            result = subprocess.run(
                [str(SERVICES), "env"],
                env={**os.environ, **self.environ},
                timeout=60,
                capture_output=True,
                text=True,
                check=True,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            raise PrivateServiceError(f"`services.sh env` failed: {error}") from error
        found: dict[str, str] = {}
        for line in result.stdout.splitlines():
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").partition("=")
                found[name] = shlex.split(value)[0]
        return found


def port_answers(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_ports(count: int) -> list[int]:
    """`count` distinct ports nobody listens on now (the kernel's choice, then released)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def searchable(state: Path) -> None:
    """As root, services.sh runs MariaDB and PostgreSQL as the mysql and postgres users, which
    must reach the state folder: open it, and every folder above it, to others' search (o+x).
    Done before every services.sh call, as another pytest run makes pytest-of-<user> 0700 again
    when it starts."""
    if os.geteuid() != 0:
        return
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(state.stat().st_mode | 0o755)
    for folder in state.parents:
        mode = folder.stat().st_mode
        if not mode & 0o001:
            folder.chmod(mode | 0o001)


def start_private(service: str, root: Callable[[], Path], tries: int = 3) -> PrivateService:
    """Start a private instance of `service` in a new state folder (`root()`), on free ports;
    when a port was taken meanwhile, again in a new folder with other ports (`tries` in all).
    Raises PrivateServiceError when it cannot start."""
    for attempt in range(1, tries + 1):
        names = _PORTS[service]
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        instance = PrivateService(service, root(), ports, {})
        try:
            instance.up()
            if not (instance.state / _PID_FILES[service]).is_file():
                raise PrivateServiceError(
                    f"{service}: another server answers on port {instance.port}", port_taken=True
                )
            instance.urls = instance._env()
            if _URLS[service] not in instance.urls:
                raise PrivateServiceError(f"{service} started but `services.sh env` has no URL")
            return instance
        except PrivateServiceError as error:
            stop_quietly(instance)
            if not error.port_taken or attempt == tries:
                raise
    raise AssertionError("unreachable")


def stop_quietly(instance: PrivateService) -> None:
    """Stop an instance, whatever its state (at the end of the session, after a failed start)."""
    with contextlib.suppress(PrivateServiceError):
        instance.down()


def database_outage(server: PrivateService, seconds: float, log: list[tuple[str, float]]) -> None:
    """Stop the private database server `server` (MariaDB or PostgreSQL) for `seconds`, then
    start it again (always, even when the stop failed)."""
    log.append(("stopping", time.monotonic()))
    try:
        server.down()
        log.append(
            ("down" if not server_answers(server.url) else "still answers", time.monotonic())
        )
        time.sleep(seconds)
    finally:
        server.up()
        log.append(("up", time.monotonic()))
