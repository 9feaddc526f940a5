"""Helpers shared by test modules (which never import each other, nor conftest).

`unavailable` is the one way a test says a tool or service is missing: a skip on a laptop, a
failure under CI, where every service and tool the suite uses is required. `mysql_database` and
`postgres_database` make the database of one test on a server (shared or private).
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import pytest


def ci_requires_services(value: str | None) -> bool:
    """Whether this CI value makes every service required: CI=1 and CI=yes count, CI=false not.

    The same rule as `docker/services.sh ci-requires`, which the Makefile's test target uses.
    """
    return value is not None and value.lower() not in ("", "false", "0")


IN_CI = ci_requires_services(os.environ.get("CI"))


def unavailable(message: str) -> NoReturn:
    """Skip the test, or fail it under CI (a missing service or tool is never a silent skip)."""
    if IN_CI:
        pytest.fail(f"CI={os.environ['CI']} requires every service and tool: {message}")
    pytest.skip(message)


@dataclasses.dataclass(frozen=True)
class SecuredKafka:
    """The SASL_SSL + SCRAM-SHA-512 listener of docker/services.sh."""

    bootstrap: str
    username: str
    password: str
    cafile: str

    def env(self) -> dict[str, str]:
        """The ORDERPIPE_* variables that point orderpipe at it."""
        return {
            "ORDERPIPE_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "ORDERPIPE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "ORDERPIPE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "ORDERPIPE_KAFKA_SASL_USERNAME": self.username,
            "ORDERPIPE_KAFKA_SASL_PASSWORD": self.password,
            "ORDERPIPE_KAFKA_SSL_CAFILE": self.cafile,
        }


# ---------------------------------------------------------------- a database per test
@contextmanager
def mysql_database(server_url: str) -> Iterator[str]:
    """A fresh, empty database on the MariaDB/MySQL server of `server_url`, dropped after use."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"orderpipe_it_{uuid.uuid4().hex[:10]}"
    server = create_engine(make_url(server_url), pool_pre_ping=True)  # survives restarts
    with server.begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with server.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        server.dispose()


@contextmanager
def postgres_database(server_url: str) -> Iterator[str]:
    """A fresh, empty database on the PostgreSQL server of `server_url`, dropped after use."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"orderpipe_it_{uuid.uuid4().hex[:10]}"
    server = create_engine(make_url(server_url), isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        _drop_postgres_database(server, name)
        server.dispose()


def _drop_postgres_database(server: Any, name: str) -> None:
    """DROP DATABASE ... WITH (FORCE), tried again for a few seconds: a server restarting after
    an outage test, or a backend that is just ending, can refuse it for a moment."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    deadline = time.monotonic() + 15
    while True:
        try:
            with server.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except DBAPIError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
