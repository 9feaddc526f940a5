"""`orderpipe bench` measures every batch phase in its own process."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from orderpipe.cli import app

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_reports_each_phase(workdir: object) -> None:
    result = CliRunner().invoke(app, ["bench", "--events", "4000", "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    phases = {p["phase"]: p for p in report["phases"]}
    assert list(phases) == [
        "generate",
        "etl",
        "etl-eco-on",
        "ingest-sqlite",
        "train",
        "predict-sqlite",
        "stream-embedded-sqlite",
        "stream-eco-on",
        "stream-latency-2000/s",
    ]
    assert "latency_p99_ms" in phases["stream-latency-2000/s"]["detail"]
    # the stream row is the whole call, start-up included, as a user waits for it (it used to
    # leave the start-up out); the rate once the consumer is ready is beside it, labelled
    stream = phases["stream-embedded-sqlite"]
    assert stream["seconds"] > stream["detail"]["startup_seconds"] > 0
    assert stream["events_per_second"] < stream["detail"]["streaming_events_per_second"]
    assert phases["generate"]["events"] == 4000 + 80  # lines: 2 % duplicates by default
    assert phases["ingest-sqlite"]["events"] == 4000
    assert phases["predict-sqlite"]["events"] == 4000
    assert phases["predict-sqlite"]["detail"]["scoring_events_per_second"] > 0
    assert "roc_auc" in phases["train"]["detail"]
    for figures in phases.values():
        assert figures["seconds"] > 0
        assert figures["events_per_second"] > 0
        assert figures["peak_rss_mb"] > 10


@pytest.mark.parametrize(
    ("server", "dialect"),
    [
        pytest.param("mysql", "mysql", marks=pytest.mark.mysql, id="mariadb"),
        pytest.param("postgres", "postgresql", marks=pytest.mark.postgres, id="postgres"),
    ],
)
def test_bench_measures_a_database_server_too(
    workdir: object, request: pytest.FixtureRequest, server: str, dialect: str
) -> None:
    url = request.getfixturevalue(f"{server}_url")
    result = CliRunner().invoke(app, ["bench", "--events", "3000", "--json", "--database-url", url])
    assert result.exit_code == 0, result.stderr
    phases = [p["phase"] for p in json.loads(result.stdout)["phases"]]
    assert phases[-2:] == [f"ingest-{dialect}", f"predict-{dialect}"]


def test_bench_measures_the_phases_asked_for_and_what_they_need(workdir: object) -> None:
    result = CliRunner().invoke(app, ["bench", "-n", "2000", "--phases", "ingest", "--json"])
    assert result.exit_code == 0, result.stderr
    measured = [p["phase"] for p in json.loads(result.stdout)["phases"]]
    assert measured == ["generate", "etl", "etl-eco-on", "ingest-sqlite"]
    unknown = CliRunner().invoke(app, ["bench", "--phases", "ingest,strem"])
    assert unknown.exit_code != 0
    assert "unknown phase strem" in unknown.stderr and "Traceback" not in unknown.stderr
