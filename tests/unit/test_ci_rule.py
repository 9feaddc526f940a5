"""The CI rule: which CI values make every service required, in Python and in the shell.

tests/conftest.py and `docker/services.sh ci-requires` (used by `make test`) must agree.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ci_requires_services

SERVICES_SH = Path(__file__).resolve().parents[2] / "docker" / "services.sh"

CASES = [
    ("true", True),
    ("TRUE", True),
    ("1", True),
    ("yes", True),
    ("", False),
    ("false", False),
    ("False", False),
    ("0", False),
    (None, False),  # CI unset
]


def _shell_says_required(ci: str | None) -> bool:
    env = {name: value for name, value in os.environ.items() if name != "CI"}
    if ci is not None:
        env["CI"] = ci
    done = subprocess.run(
        ["bash", str(SERVICES_SH), "ci-requires"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode == 0


@pytest.mark.parametrize(("ci", "required"), CASES)
def test_conftest_requires_services_for_any_ci_but_false_or_0(
    ci: str | None, required: bool
) -> None:
    assert ci_requires_services(ci) is required


@pytest.mark.parametrize(("ci", "required"), CASES)
def test_services_sh_ci_requires_follows_the_same_rule(ci: str | None, required: bool) -> None:
    assert _shell_says_required(ci) is required


def test_a_second_make_test_refuses_at_once_with_one_line(tmp_path: Path) -> None:
    """While one `make test` runs (holding the suite lock), another refuses with one line, and
    runs nothing."""
    import fcntl
    import shutil

    if shutil.which("flock") is None or shutil.which("make") is None:
        pytest.fail("make and flock (util-linux) are needed by `make test`")
    lock = tmp_path / "suite.lock"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running `make test` does
        done = subprocess.run(
            ["make", "-s", "-o", "install", "test", f"SUITE_LOCK={lock}"],
            cwd=SERVICES_SH.parents[1],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("make test:")]
    assert lines == [
        f"make test: another make test or make chaos is running on this machine (it holds "
        f"{lock}); wait for it to end"
    ], done.stderr
    assert done.stdout == ""  # nothing ran: no service started, no test collected
