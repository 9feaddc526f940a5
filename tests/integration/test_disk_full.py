"""A full disk: one line that says where, while writing what and about how much more space is
needed, exit 1, and nothing changed (no partial output, no temporary file, no orphan data file).
The disk is a small tmpfs (mounting one needs root, as CI runs)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orderpipe.cli import app
from orderpipe.table.read import table_version
from tests.helpers import IN_CI

pytestmark = [pytest.mark.integration]
FULL = re.compile(
    r"^error: no space left on tmpfs \((?P<mount>.+)\) while writing (?P<what>.+) "
    r"\(about (?P<mb>[\d,]+) MB more needed\); nothing was changed$"
)


def unavailable(what: str) -> None:
    if IN_CI:  # CI runs as root: a tmpfs must be there
        pytest.fail(f"CI requires {what}")
    pytest.skip(f"{what} is not available")


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MB tmpfs of its own."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        unavailable("a tmpfs for the full-disk tests (mounting one needs root)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode:
        unavailable(f"a tmpfs for the full-disk tests: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave_mb: float) -> Path:
    """Take all of the disk's space but `leave_mb`."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    filler = disk / "filler"
    with filler.open("ab") as out:
        out.write(b"\0" * max(int(free - leave_mb * 1e6), 0))
    return filler


def files_under(folder: Path) -> dict[str, int]:
    return {
        str(path.relative_to(folder)): path.stat().st_size
        for path in folder.rglob("*")
        if path.is_file() and path.name != "filler"
    }


def run(data: Path, *args: str) -> object:
    env = {
        "ORDERPIPE_DATA_DIR": str(data),
        "ORDERPIPE_REPORTS_DIR": str(data / "reports"),
        "ORDERPIPE_ARTIFACTS_DIR": str(data / "artifacts"),
        "ORDERPIPE_ECO_ENABLED": "false",
        "COLUMNS": "200",
        "NO_COLOR": "1",
    }
    return CliRunner(env=env).invoke(app, list(args))


def test_generate_on_a_full_disk_says_so_and_writes_nothing(disk: Path) -> None:
    fill(disk, leave_mb=2)
    result = run(disk / "data", "generate", "--events", "30000")
    assert result.exit_code == 1
    line = result.stderr.strip()
    match = FULL.match(line)
    assert match, line
    assert match["what"] == "the raw events" and Path(match["mount"]) == disk.resolve()
    assert 7 <= int(match["mb"].replace(",", "")) <= 14  # ~11 MB of events, 2 MB were free
    assert files_under(disk) == {}  # not even a temporary file
    (disk / "filler").unlink()
    assert run(disk / "data", "generate", "--events", "30000").exit_code == 0


def test_etl_on_a_full_disk_changes_neither_the_table_nor_the_space(
    disk: Path, tmp_path: Path
) -> None:
    data = disk / "data"
    day1, day2 = tmp_path / "day1.jsonl", tmp_path / "day2.jsonl"
    for output, seed, start in ((day1, 1, "2026-01-01"), (day2, 2, "2026-02-01")):
        made = run(
            tmp_path / "gen",
            "generate",
            "--events",
            "40000",
            "--seed",
            str(seed),
            "--start",
            start,
            "--output",
            str(output),
        )
        assert made.exit_code == 0, made.stderr
    # a first run with no room: no table, no quarantine, nothing left
    fill(disk, leave_mb=0.5)
    first = run(data, "etl", "--input", str(day1))
    assert first.exit_code == 1
    match = FULL.match(first.stderr.strip())
    assert match, first.stderr
    assert match["what"] == "etl's clean table and quarantine"
    assert files_under(disk) == {}
    (disk / "filler").unlink()
    assert run(data, "etl", "--input", str(day1)).exit_code == 0
    table = data / "processed" / "orders_events_cleaned"
    version, before = table_version(table), files_under(disk)
    # a merge with no room for the days it writes: the table and its files are as they were
    fill(disk, leave_mb=1)
    second = run(data, "etl", "--input", str(day2))
    assert second.exit_code == 1
    assert FULL.match(second.stderr.strip()), second.stderr
    assert table_version(table) == version
    assert files_under(disk) == before
    (disk / "filler").unlink()
    assert run(data, "etl", "--input", str(day2)).exit_code == 0
    assert table_version(table) == version + 1


def test_export_and_train_on_a_full_disk_leave_what_was_there(disk: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    for args in (("generate", "--events", "20000"), ("etl",)):
        assert run(data, *args).exit_code == 0
    fill(disk, leave_mb=0.2)
    exported = run(data, "export", "--format", "jsonl", "--output", str(disk / "out.jsonl"))
    assert exported.exit_code == 1
    match = FULL.match(exported.stderr.strip())
    assert match, exported.stderr
    assert match["what"] == "the jsonl export"
    assert 5 <= int(match["mb"].replace(",", "")) <= 12  # ~8 MB of JSON Lines
    assert files_under(disk) == {}
    fill(disk, leave_mb=0)  # a model takes a few kB
    env_models = {"ORDERPIPE_ARTIFACTS_DIR": str(disk / "artifacts")}
    trained = CliRunner(env={**env_models, "ORDERPIPE_DATA_DIR": str(data)}).invoke(
        app, ["train", "classification"]
    )
    assert trained.exit_code == 1
    assert trained.stderr.strip().endswith(
        "while writing the classification model; the classification model was not changed"
    ), trained.stderr
    assert files_under(disk) == {}
