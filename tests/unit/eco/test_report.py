"""The eco report merges CodeCarbon's task files, backups included, and skips bad rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from orderpipe.core.errors import OrderpipeError
from orderpipe.core.layout import Layout
from orderpipe.eco.report import build_report, run_eco_report
from tests.factories import HEADER, phases_file, task_row, write_csv


def test_backups_are_merged_and_duplicates_counted_once(tmp_path: Path) -> None:
    rows = [task_row("etl", "r1", "t1", 2.0, 0.004), task_row("ingest", "r1", "t2", 1.0, 0.002)]
    write_csv(tmp_path / "emissions_base_r1.csv", HEADER, rows)
    write_csv(tmp_path / "emissions_base_r1.csv.bak", HEADER, rows)  # a backup of the same run
    write_csv(
        tmp_path / "emissions_base_r2.csv_1.bak", HEADER, [task_row("etl", "r2", "t3", 4.0, 0.006)]
    )
    phases_file(tmp_path, [("r1", "etl", 1000), ("r2", "etl", 3000), ("r1", "ingest", 1000)])
    report = build_report(tmp_path)
    phases = {p.phase: p for p in report.phases}
    assert report.runs == 2
    assert phases["etl"].energy_kwh == pytest.approx(0.010)
    assert phases["etl"].duration_s == pytest.approx(6.0)
    assert phases["etl"].events == 4000
    assert phases["etl"].energy_kwh_per_1000_events == pytest.approx(0.0025)
    assert phases["ingest"].energy_kwh_per_1000_events == pytest.approx(0.002)
    assert sum(p.share for p in report.phases) == pytest.approx(1.0)
    assert report.carbon_intensity_kg_per_kwh == pytest.approx(0.05)
    assert [run["run_id"] for run in report.per_run] == ["r1", "r2"]
    assert report.per_run[0]["energy_kwh"] == pytest.approx(0.006)


def test_corrupt_and_foreign_rows_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_csv(
        tmp_path / "emissions_base_r1.csv",
        HEADER,
        [
            task_row("etl", "r1", "t1", 2.0, 0.004),
            task_row("etl", "r9", "t2", 1.0, 0.001, project="someone-else"),
            ["etl", "t3", "orderpipe", "r1", "two", "x", "0", "y", "FRA", "machine"],
            ["truncated", "row"],
        ],
    )
    with caplog.at_level("WARNING", logger="orderpipe.eco"):
        report = build_report(tmp_path)
    assert report.skipped_rows == 3
    assert [p.energy_kwh for p in report.phases] == [pytest.approx(0.004)]
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"{path} line 3: foreign project" in m for m in messages)
    assert any(f"{path} line 4: a number is not a number" in m for m in messages)
    assert any(f"{path} line 5: 2 fields instead of 10" in m for m in messages)


def test_an_empty_folder_is_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(OrderpipeError, match="no CodeCarbon measurements in"):
        build_report(tmp_path)
    with pytest.raises(OrderpipeError):
        build_report(tmp_path / "missing")


def test_report_files_are_written(tmp_path: Path) -> None:
    write_csv(tmp_path / "emissions_base_r1.csv", HEADER, [task_row("etl", "r1", "t", 1, 0.5)])
    phases_file(tmp_path, [("r1", "etl", 500)])
    layout = Layout(tmp_path, tmp_path, tmp_path / "reports", eco_output_dir=tmp_path)
    report = run_eco_report(layout)
    markdown = report.outputs["markdown"].read_text()
    assert "| etl | 1 |" in markdown and "eco_energy_by_phase.svg" in markdown
    assert "country FRA" in markdown and "method machine" in markdown
    assert "## Runs" in markdown and "| r1 |" in markdown
    assert report.outputs["chart"].read_text().startswith("<svg")
    csv_lines = report.outputs["csv"].read_text().splitlines()
    assert csv_lines[1].startswith("etl,1,1.000,0.500000000")
    assert csv_lines[1].split(",")[7] == "1.000000000"  # kWh per 1,000 events
