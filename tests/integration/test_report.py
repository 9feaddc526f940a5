"""`orderpipe report` after run-all: one self-contained page, a chart per section, rendered by a
headless browser without a console message."""

from __future__ import annotations

import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orderpipe.cli import app

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECTIONS = ("data", "models", "drift", "stream", "energy")
EXTERNAL_TAGS = {"script", "link", "img", "iframe", "object", "embed", "audio", "video", "base"}


class _Page(HTMLParser):
    """Charts per section, and every attribute or tag that could reach outside the file."""

    def __init__(self) -> None:
        super().__init__()
        self.section: str | None = None
        self.charts: dict[str, int] = {}
        self.outside: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section":
            self.section = values.get("id")
        if tag == "svg" and self.section:
            self.charts[self.section] = self.charts.get(self.section, 0) + 1
        if tag in EXTERNAL_TAGS:
            self.outside.append(f"<{tag}>")
        for name, value in attrs:
            inside = (value or "").startswith(("#", "data:"))  # an anchor, or bytes held inline
            if name.endswith(("href", "src", "action", "srcset")) and not inside:
                self.outside.append(f"{tag} {name}={value}")
            if "url(" in (value or "") and not re.fullmatch(r"url\(#[\w-]+\)", value or ""):
                self.outside.append(f"{tag} {name}={value}")


def _console_messages(chromium: str, page: Path, shot: Path) -> list[str]:
    run = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,4000",
            "--enable-logging=stderr",
            "--v=0",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return [line for line in run.stderr.splitlines() if ":CONSOLE" in line]


def test_run_all_writes_a_self_contained_report_a_browser_renders(
    workdir: Path, chromium: str
) -> None:
    result = CliRunner().invoke(app, ["run-all", "--events", "3000", "--fresh", "--json"])
    assert result.exit_code == 0, result.stderr
    page = workdir / "reports" / "report.html"
    assert json.loads(result.stdout)["report"]["html"] == "reports/report.html"
    html = page.read_text(encoding="utf-8")
    parsed = _Page()
    parsed.feed(html)
    assert parsed.outside == []
    assert "@import" not in html
    assert all(parsed.charts.get(key, 0) >= 1 for key in SECTIONS), parsed.charts
    assert parsed.charts["models"] >= 6  # ROC, PR, reliability, confusion, importance, regressor

    shot = workdir / "report.png"
    assert _console_messages(chromium, page, shot) == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000

    # the same check sees a console message when a page has one
    noisy = workdir / "noisy.html"
    noisy.write_text("<p>x</p><script>console.error('broken')</script>", encoding="utf-8")
    assert any("broken" in line for line in _console_messages(chromium, noisy, shot))


def test_report_of_nothing_says_what_to_run_in_each_section(workdir: Path) -> None:
    result = CliRunner().invoke(app, ["report", "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["charts"] == dict.fromkeys(SECTIONS, 0)
    notes = report["notes"]
    assert "run `orderpipe etl`" in notes["data"][0]
    assert "run `orderpipe train classification`" in notes["models"][0]
    assert "run `orderpipe run-all` or `orderpipe stream run`" in notes["stream"][0]
    assert "no CodeCarbon measurements" in notes["energy"][0]
    assert (workdir / "reports" / "report.html").is_file()


def test_drift_compares_the_events_newer_than_the_training_data(workdir: Path) -> None:
    def ok(*args: str) -> dict:
        result = CliRunner().invoke(app, [*args, "--json"])
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)

    ok("generate", "--events", "3000", "--start", "2026-03-02", "--days", "2", "--seed", "1")
    ok("etl")
    ok("ingest")
    ok("train", "classification")
    ok("generate", "--events", "1500", "--start", "2026-03-09", "--days", "1", "--seed", "2")
    ok("etl")
    ok("ingest")
    ok("predict")
    notes = ok("report")["notes"]["drift"]
    assert "the 1,500 most recent events newer than its training data" in notes[0], notes
