"""run-all on the embedded defaults, eco on and off, and two trackers side by side."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orderpipe.cli import app

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_run_all_on_the_embedded_defaults(workdir: Path) -> None:
    result = CliRunner().invoke(app, ["run-all", "--events", "1500", "--fresh", "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [p["phase"] for p in report["phases"]] == [
        "generate",
        "etl",
        "ingest",
        "train",
        "predict",
        "stream",
    ]
    energies = [p["energy_kwh"] for p in report["phases"]]
    assert all(energy is not None and energy >= 0 for energy in energies)  # tiny phases ~0
    assert sum(energies) > 0
    for name in ("eco_report.md", "eco_report.csv", "eco_energy_by_phase.svg", "runs.jsonl"):
        assert (workdir / "reports" / name).is_file()
    history = (workdir / "reports" / "runs.jsonl").read_text().splitlines()
    assert json.loads(history[-1])["events"] == 1500
    again = CliRunner().invoke(app, ["run-all", "--events", "1500", "--json"])
    assert again.exit_code == 0, again.stderr
    assert len((workdir / "reports" / "runs.jsonl").read_text().splitlines()) == 2


def test_eco_disabled_writes_no_measurement(workdir: Path) -> None:
    result = CliRunner().invoke(app, ["run-all", "--events", "800", "--no-eco", "--json"])
    assert result.exit_code == 0, result.stderr
    assert all(p["energy_kwh"] is None for p in json.loads(result.stdout)["phases"])
    assert not (workdir / "reports" / "emissions").exists()
    assert not (workdir / "reports" / "eco_report.md").exists()


def test_a_failing_phase_stops_with_its_reason(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDERPIPE_DATABASE_URL", "mysql+pymysql://u:p@127.0.0.1:1/none")
    result = CliRunner().invoke(app, ["run-all", "--events", "500", "--no-eco"])
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("error: run-all stopped in phase ingest: cannot reach the database")
    )
    assert (workdir / "data" / "processed" / "orders_events_cleaned" / "_delta_log").is_dir()


def test_two_processes_can_track_at_the_same_time(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from orderpipe.eco.tracking import EcoTracker\n"
        "t = EcoTracker(enabled=True, output_dir=Path(sys.argv[1]), country_iso_code='FRA')\n"
        "with t.phase('work', events=10):\n"
        "    time.sleep(1.5)\n"
        "t.close()\n"
        "print(t.records[0].energy_kwh)\n"
    )
    out = tmp_path / "emissions"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr.decode()
        assert float(stdout.decode().strip().splitlines()[-1]) > 0
    assert len(list(out.glob("emissions_base_*.csv"))) == 2


@pytest.mark.kafka
@pytest.mark.parametrize(
    "server",
    [
        pytest.param("mysql", marks=pytest.mark.mysql, id="mariadb"),
        pytest.param("postgres", marks=pytest.mark.postgres, id="postgres"),
    ],
)
def test_run_all_against_a_database_server_and_apache_kafka(
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    server: str,
    kafka_bootstrap: str,
) -> None:
    import uuid

    from sqlalchemy import create_engine, text

    database_url = request.getfixturevalue(f"{server}_url")
    monkeypatch.setenv("ORDERPIPE_DATABASE_URL", database_url)
    monkeypatch.setenv("ORDERPIPE_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("ORDERPIPE_KAFKA_TOPIC", f"run-all-{uuid.uuid4().hex[:8]}")
    result = CliRunner().invoke(app, ["run-all", "--events", "1200", "--json"])
    assert result.exit_code == 0, result.stderr
    engine = create_engine(database_url)
    with engine.connect() as conn:
        events = conn.execute(text("SELECT COUNT(*) FROM table_events")).scalar()
        predictions = conn.execute(text("SELECT COUNT(*) FROM table_predictions")).scalar()
    engine.dispose()
    assert events == predictions == 1200
    assert json.loads(result.stdout)["kafka"] == kafka_bootstrap
