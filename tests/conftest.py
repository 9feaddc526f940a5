"""Shared fixtures: a working folder per test, the real services from docker/services.sh.

A service fixture skips its test when the service is not configured, except under CI (any CI
value but empty, false or 0), where a missing service is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis.database import DirectoryBasedExampleDatabase, ReadOnlyDatabase

from orderpipe.core.settings import Settings
from tests.helpers import IN_CI, SecuredKafka, mysql_database, postgres_database, unavailable

# Property tests: CI runs 300 examples of each property, first replaying every failure that
# `make fuzz` (the same properties for minutes, HYPOTHESIS_PROFILE=fuzz) ever found: fuzz saves
# them in tests/hypothesis-examples, which is committed and which CI only reads. A failure prints
# its reproduction blob. Health checks stay on but for the two that hostile inputs trip by design
# (large, slow examples); a test that shares a fixture across examples says why, where it does.
EXAMPLES = Path(__file__).resolve().parent / "hypothesis-examples"
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large]
hypothesis_settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    suppress_health_check=_QUIET,
    database=ReadOnlyDatabase(DirectoryBasedExampleDatabase(EXAMPLES)),
    print_blob=True,
)
hypothesis_settings.register_profile(  # `make test-fast`: each property's smoke test
    "quick",
    max_examples=25,
    deadline=None,
    suppress_health_check=_QUIET,
    database=ReadOnlyDatabase(DirectoryBasedExampleDatabase(EXAMPLES)),
)
hypothesis_settings.register_profile(
    "fuzz",
    max_examples=5_000,
    deadline=None,
    suppress_health_check=_QUIET,
    database=DirectoryBasedExampleDatabase(EXAMPLES),
    print_blob=True,
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _require(variable: str, service: str) -> str:
    value = os.environ.get(variable)
    if value:
        return value
    unavailable(f"{service} is not available: {variable} is unset (run `docker/services.sh up`)")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, headless, for rendering the HTML report (`make browser` installs it)."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    message = "Chromium is not installed (run `make browser`)"
    if IN_CI:
        pytest.fail(f"CI={os.environ['CI']} requires every tool the tests use: {message}")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test inherits its caller's settings: ORDERPIPE_*, MYSQL_*, KAFKA_* and CC_* variables
    are removed for every test, but the services' test URLs (ORDERPIPE_TEST_*)."""
    for name in list(os.environ):
        if name.startswith(("ORDERPIPE_", "MYSQL_", "KAFKA_", "CC_")) and "_TEST_" not in name:
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current directory (no `.env` in it), the environment cleaned as for every test."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def settings(workdir: Path) -> Settings:
    """Settings for a test: every folder inside its working directory, SQLite database."""
    return Settings(
        _env_file=None,
        data_dir=workdir / "data",
        artifacts_dir=workdir / "artifacts",
        reports_dir=workdir / "reports",
    )


@pytest.fixture(scope="session")
def mysql_server_url() -> str:
    """The URL of the MariaDB/MySQL test database (ORDERPIPE_TEST_MYSQL_URL)."""
    return _require("ORDERPIPE_TEST_MYSQL_URL", "MariaDB")


@pytest.fixture
def mysql_url(mysql_server_url: str) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped after the test."""
    with mysql_database(mysql_server_url) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The URL of the PostgreSQL test database (ORDERPIPE_TEST_POSTGRES_URL)."""
    return _require("ORDERPIPE_TEST_POSTGRES_URL", "PostgreSQL")


@pytest.fixture(scope="session")
def postgres_tls_url() -> str:
    """The PostgreSQL test database over TLS, the server's certificate checked against the
    services' CA (ORDERPIPE_TEST_POSTGRES_TLS_URL)."""
    return _require("ORDERPIPE_TEST_POSTGRES_TLS_URL", "PostgreSQL over TLS")


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty database on the PostgreSQL test server, dropped after the test."""
    with postgres_database(postgres_server_url) as url:
        yield url


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The Apache Kafka broker started by docker/services.sh (ORDERPIPE_TEST_KAFKA_BOOTSTRAP)."""
    return _require("ORDERPIPE_TEST_KAFKA_BOOTSTRAP", "Apache Kafka")


@pytest.fixture(scope="session")
def secured_kafka() -> SecuredKafka:
    """Kafka over SASL_SSL (ORDERPIPE_TEST_KAFKA_SASL_*, ORDERPIPE_TEST_KAFKA_SSL_CAFILE)."""
    return SecuredKafka(
        bootstrap=_require("ORDERPIPE_TEST_KAFKA_SASL_BOOTSTRAP", "Kafka SASL_SSL"),
        username=_require("ORDERPIPE_TEST_KAFKA_SASL_USERNAME", "Kafka SASL_SSL"),
        password=_require("ORDERPIPE_TEST_KAFKA_SASL_PASSWORD", "Kafka SASL_SSL"),
        cafile=_require("ORDERPIPE_TEST_KAFKA_SSL_CAFILE", "Kafka SASL_SSL"),
    )


@pytest.fixture
def mysql_tls_url(mysql_url: str) -> str:
    """A fresh database reached by a user that requires TLS, the server certificate checked."""
    from sqlalchemy.engine import make_url

    tls = make_url(_require("ORDERPIPE_TEST_MYSQL_TLS_URL", "MariaDB over TLS"))
    return tls.set(database=make_url(mysql_url).database).render_as_string(hide_password=False)
