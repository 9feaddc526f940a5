"""Secured services as managed clusters have them: Kafka over SASL_SSL + SCRAM, MariaDB over TLS,
refusals that are one clear line, a least-privileged database user, secrets nowhere.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from orderpipe.cli import app
from tests.helpers import SecuredKafka

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TABLES = (
    "table_customers",
    "table_orders",
    "table_events",
    "table_predictions",
    "orderpipe_ingest_watermark",  # which version of etl's table ingest has read
    "orderpipe_predict_watermark",  # and predict has scored
)


def run(env: dict[str, str], *args: str) -> object:
    base = {"ORDERPIPE_ECO_ENABLED": "false", "COLUMNS": "200", "NO_COLOR": "1"}
    return CliRunner(env={**base, **env}).invoke(app, list(args))


def prepare(env: dict[str, str], events: int = 1500) -> None:
    """Raw events, the clean dataset and a classifier in the working folder."""
    for args in (["generate", "--events", str(events), "--bad-lines", "6"], ["etl"]):
        result = run(env, *args)
        assert result.exit_code == 0, result.stderr
    result = run(env, "train", "classification")
    assert result.exit_code == 0, result.stderr


def table_counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {t: conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar() for t in TABLES}
    finally:
        engine.dispose()


@pytest.fixture
def database_user(mysql_url: str) -> Iterator[callable]:
    """Makes users on the test database (dropped afterwards): make(password, grants) -> URL."""
    admin = create_engine(mysql_url)
    made: list[str] = []
    database = make_url(mysql_url).database

    def make(password: str, grants: list[str]) -> str:
        name = f"op_{uuid.uuid4().hex[:10]}"
        with admin.begin() as conn:
            conn.execute(text(f"CREATE USER '{name}'@'%' IDENTIFIED BY :pw"), {"pw": password})
            for grant in grants:
                conn.execute(text(grant.format(db=database, user=f"'{name}'@'%'")))
        made.append(name)
        return (
            make_url(mysql_url)
            .set(username=name, password=password)
            .render_as_string(hide_password=False)
        )

    yield make
    with admin.begin() as conn:
        for name in made:
            conn.execute(text(f"DROP USER IF EXISTS '{name}'@'%'"))
    admin.dispose()


# ---------------------------------------------------------------- encrypted end to end
@pytest.mark.kafka
@pytest.mark.mysql
def test_stream_over_sasl_ssl_into_mariadb_over_tls(
    workdir: Path, secured_kafka: SecuredKafka, mysql_tls_url: str
) -> None:
    topic = f"secure-{uuid.uuid4().hex[:8]}"
    env = {
        **secured_kafka.env(),
        "ORDERPIPE_DATABASE_URL": mysql_tls_url,
        "ORDERPIPE_KAFKA_TOPIC": topic,
        "ORDERPIPE_KAFKA_GROUP_ID": topic,
    }
    prepare(env)
    result = run(env, "stream", "run", "--json")
    assert result.exit_code == 0, result.stderr
    stream = json.loads(result.stdout)
    clean = json.loads((workdir / "reports" / "etl_quality.json").read_text())["clean"]
    assert stream["produced"] == stream["stored"] == clean
    counts = table_counts(mysql_tls_url)
    assert counts["table_events"] == counts["table_predictions"] == clean  # each event once

    doctor = run(env, "doctor", "--json")
    assert doctor.exit_code == 0, doctor.stderr
    report = json.loads(doctor.stdout)
    assert report["database"]["tls"]  # the cipher, e.g. TLS_AES_256_GCM_SHA384
    assert report["database"]["tls_verified"]  # ssl_ca in the URL: the certificate is checked
    assert report["kafka"]["security_protocol"] == "SASL_SSL"


# ---------------------------------------------------------------- refusals
REFUSALS = {
    "wrong password": ({"ORDERPIPE_KAFKA_SASL_PASSWORD": "not-the-password"}, "Authentication"),
    "untrusted CA": ({"ORDERPIPE_KAFKA_SSL_CAFILE": ""}, "CERTIFICATE_VERIFY_FAILED"),
    "plaintext client on the TLS port": (
        {"ORDERPIPE_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"},
        "closed",
    ),
}


@pytest.mark.kafka
@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_connection_is_one_clear_line(
    workdir: Path, secured_kafka: SecuredKafka, case: str
) -> None:
    changes, reason = REFUSALS[case]
    env = {**secured_kafka.env(), "ORDERPIPE_KAFKA_TOPIC": f"refused-{uuid.uuid4().hex[:6]}"}
    env.update(changes)
    env = {key: value for key, value in env.items() if value}  # "" = unset (system CAs)
    prepare({}, events=300)
    began = time.monotonic()
    result = run(env, "stream", "produce")
    assert time.monotonic() - began < 60, "a refusal must not hang or retry"
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: cannot connect to Kafka at {secured_kafka.bootstrap}")
    assert reason in lines[-1]
    assert "Traceback" not in result.stderr and "Unable connect" not in result.stderr
    doctor = run(env, "doctor", "--json")
    assert doctor.exit_code == 1
    kafka = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "kafka")
    assert not kafka["ok"] and reason in kafka["detail"]


# ---------------------------------------------------------------- least privilege
@pytest.mark.mysql
def test_a_least_privileged_user_can_stream_and_predict(
    workdir: Path, mysql_url: str, database_user: callable
) -> None:
    """Tables created once by an owner; the consumer and ingest need SELECT, INSERT and UPDATE
    on them, ingest's watermark included (and CREATE TEMPORARY TABLES for the LOAD DATA fast
    path)."""
    prepare({"ORDERPIPE_DATABASE_URL": mysql_url})
    owner = run({"ORDERPIPE_DATABASE_URL": mysql_url}, "ingest")
    assert owner.exit_code == 0, owner.stderr
    grants = [f"GRANT SELECT, INSERT, UPDATE ON `{{db}}`.`{t}` TO {{user}}" for t in TABLES]
    fast = database_user(
        "least-priv-1", [*grants, "GRANT CREATE TEMPORARY TABLES ON `{db}`.* TO {user}"]
    )
    plain = database_user("least-priv-2", grants)
    for url, infile in ((fast, "true"), (plain, "false")):
        env = {"ORDERPIPE_DATABASE_URL": url, "ORDERPIPE_MYSQL_LOCAL_INFILE": infile}
        ingested = run(env, "ingest", "--json")  # the same rows again: updates, no DDL
        assert ingested.exit_code == 0, ingested.stderr
        streamed = run(env, "stream", "run", "--json")
        assert streamed.exit_code == 0, streamed.stderr
        assert json.loads(streamed.stdout)["stored"] > 0
        predicted = run(env, "predict", "--json")
        assert predicted.exit_code == 0, predicted.stderr
    counts = table_counts(mysql_url)
    assert counts["table_events"] == counts["table_predictions"] > 0


# ---------------------------------------------------------------- secrets nowhere
@pytest.mark.kafka
@pytest.mark.mysql
def test_passwords_appear_in_no_output_and_no_file(
    workdir: Path, mysql_url: str, secured_kafka: SecuredKafka, database_user: callable
) -> None:
    mark = uuid.uuid4().hex[:12]
    secrets = {"db": f"DbCanary{mark}", "wrong": f"BadCanary{mark}", "sasl": f"SaslCanary{mark}"}
    url = database_user(secrets["db"], ["GRANT ALL PRIVILEGES ON `{db}`.* TO {user}"])
    wrong = make_url(url).set(password=secrets["wrong"]).render_as_string(hide_password=False)
    good = {"ORDERPIPE_DATABASE_URL": url, "ORDERPIPE_ECO_ENABLED": "true"}
    bad_db = {"ORDERPIPE_DATABASE_URL": wrong}
    bad_sasl = {**secured_kafka.env(), "ORDERPIPE_KAFKA_SASL_PASSWORD": secrets["sasl"]}
    runs = [
        (good, ["generate", "--events", "1200"]),
        (good, ["etl"]),
        (good, ["--debug", "ingest"]),
        (good, ["train"]),
        (good, ["--log-format", "json", "predict", "--json"]),
        (good, ["--debug", "--log-format", "json", "stream", "run", "--json"]),
        (good, ["doctor", "--json"]),
        (good, ["--log-format", "json", "run-all", "--events", "1200", "--json"]),
        (good, ["eco", "report"]),
        (good, ["bench", "--events", "800", "--database-url", url, "--json"]),
        (bad_db, ["--debug", "ingest"]),
        (bad_db, ["--debug", "--log-format", "json", "predict"]),
        (bad_db, ["doctor", "--json"]),
        (bad_db, ["--debug", "stream", "consume", "--idle-timeout", "1"]),
        (bad_sasl, ["--debug", "--log-format", "json", "stream", "produce"]),
        (bad_sasl, ["doctor", "--json"]),
    ]
    seen: list[str] = []
    for env, args in runs:
        result = run(env, *args)
        expected_ok = env is good
        assert (result.exit_code == 0) == expected_ok, (args, result.stderr[-2000:])
        seen += [result.stdout, result.stderr]
    # the scripts' own .env form (MYSQL_*), failing on purpose: the password is the wrong one
    (workdir / ".env").write_text(
        f"MYSQL_USER=nobody\nMYSQL_PASSWORD={secrets['wrong']}\nMYSQL_DATABASE=none\n"
    )
    result = run({}, "--debug", "doctor", "--json")
    assert result.exit_code == 1
    seen += [result.stdout, result.stderr]
    (workdir / ".env").unlink()

    written = [path for path in workdir.rglob("*") if path.is_file()]
    assert any(path.suffix == ".csv" for path in written)  # eco, exports: there was output
    for secret in secrets.values():
        for form in {secret, secret.encode().hex()}:
            assert not any(form in text for text in seen), f"{secret} printed"
        for path in written:
            assert secret.encode() not in path.read_bytes(), f"{secret} written to {path}"
