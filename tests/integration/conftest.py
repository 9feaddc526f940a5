"""Fixtures shared by the integration test modules: the stream's data (trained model included),
the backends a stream test runs against, and the private service instances of the tests that
stop a server. Plain helpers are in helpers.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orderpipe.etl.run import run_etl
from orderpipe.generate.dirt import Dirt
from orderpipe.generate.writer import generate_events
from orderpipe.ml.train import run_train
from orderpipe.stream.broker import EmbeddedBroker
from orderpipe.table.export import export_dataset
from tests.factories import layout_under
from tests.helpers import mysql_database, postgres_database, unavailable
from tests.integration.helpers import (
    BAD,
    EVENTS,
    Backend,
    PrivateService,
    PrivateServiceError,
    StreamData,
    start_private,
    stop_quietly,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> StreamData:
    root = tmp_path_factory.mktemp("stream")
    raw = generate_events(
        root / "raw.jsonl", EVENTS, seed=11, dirt=Dirt(duplicates=60, bad_lines=BAD)
    ).output
    paths = layout_under(root)
    result = run_etl(raw, paths)
    run_train("classification", paths.table, root / "artifacts")
    clean_jsonl = export_dataset(paths.table, paths.export("jsonl"), "jsonl").output
    return StreamData(raw, clean_jsonl, root / "artifacts", result.clean)


@pytest.fixture
def embedded_backend(tmp_path: Path) -> Iterator[Backend]:
    broker = EmbeddedBroker()
    try:
        yield Backend(broker.start(), f"sqlite:///{tmp_path}/stream.db", embedded=True)
    finally:
        broker.stop()


@pytest.fixture
def kafka_backend(kafka_bootstrap: str, mysql_url: str) -> Backend:
    return Backend(kafka_bootstrap, mysql_url, embedded=False)


@pytest.fixture
def kafka_postgres_backend(kafka_bootstrap: str, postgres_url: str) -> Backend:
    return Backend(kafka_bootstrap, postgres_url, embedded=False)


# ---------------------------------------------------------------- private instances
# A test that stops a server stops its own: a private instance of docker/services.sh's service
# with its own state folder (under this session's pytest temporary folder) and free ports,
# started on first use and stopped at the end of the session. The shared services, which the
# other tests (and other runs) use, are never stopped.
def _private(service: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateService]:
    def root() -> Path:  # a short path: the server's socket lives there
        return tmp_path_factory.mktemp(service)

    try:
        instance = start_private(service, root)  # stops what it started when it fails
    except PrivateServiceError as error:
        unavailable(f"a private {service} instance could not start: {error}")
    try:
        yield instance
    finally:
        stop_quietly(instance)


@pytest.fixture(scope="session")
def private_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateService]:
    """A MariaDB server of this session only (`.url`, `.down()`, `.up()`)."""
    yield from _private("mariadb", tmp_path_factory)


@pytest.fixture(scope="session")
def private_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateService]:
    """A PostgreSQL server of this session only (`.url`, `.down()`, `.up()`)."""
    yield from _private("postgres", tmp_path_factory)


@pytest.fixture(scope="session")
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateService]:
    """An Apache Kafka broker of this session only (`.bootstrap`, `.down()`, `.up()`)."""
    yield from _private("kafka", tmp_path_factory)


@pytest.fixture
def private_mysql_url(private_mariadb: PrivateService) -> Iterator[str]:
    """A fresh, empty database of the test on the private MariaDB server."""
    with mysql_database(private_mariadb.url) as url:
        yield url


@pytest.fixture
def private_postgres_url(private_postgres: PrivateService) -> Iterator[str]:
    """A fresh, empty database of the test on the private PostgreSQL server."""
    with postgres_database(private_postgres.url) as url:
        yield url


@pytest.fixture
def private_kafka_backend(
    kafka_bootstrap: str, private_mysql_url: str, private_mariadb: PrivateService
) -> Backend:
    """The shared Apache Kafka with a database of the test on the private MariaDB server."""
    return Backend(kafka_bootstrap, private_mysql_url, embedded=False, server=private_mariadb)


@pytest.fixture
def private_kafka_postgres_backend(
    kafka_bootstrap: str, private_postgres_url: str, private_postgres: PrivateService
) -> Backend:
    """The shared Apache Kafka with a database of the test on the private PostgreSQL server."""
    return Backend(kafka_bootstrap, private_postgres_url, embedded=False, server=private_postgres)
