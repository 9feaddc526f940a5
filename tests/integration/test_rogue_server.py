"""A rogue MySQL server that asks for a local file gets nothing from any command.

The server (tests/fixtures/rogue_mysql.py) lets clients log in, then answers each query with a
LOAD DATA LOCAL request for a canary file; every command must fail with one line naming it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orderpipe.cli import app
from tests.fixtures.rogue_mysql import RogueMySQL

pytestmark = [pytest.mark.integration]

COMMANDS = {
    "doctor": ["doctor"],
    "ingest": ["ingest"],
    "predict": ["predict"],
    "stream consume": ["stream", "consume", "--idle-timeout", "1"],
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean dataset and a trained model (on SQLite), for the commands to get that far."""
    root = tmp_path_factory.mktemp("rogue")
    runner = CliRunner(
        env={
            "ORDERPIPE_DATA_DIR": str(root / "data"),
            "ORDERPIPE_ARTIFACTS_DIR": str(root / "artifacts"),
            "ORDERPIPE_REPORTS_DIR": str(root / "reports"),
            "ORDERPIPE_DATABASE_URL": f"sqlite:///{root}/ok.db",
        }
    )
    for args in (["generate", "--events", "600"], ["etl"], ["train", "classification"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.stderr
    return root


@pytest.mark.parametrize("local_infile", ["true", "false"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_the_rogue_server_gets_no_file(
    prepared: Path, workdir: Path, command: str, local_infile: str
) -> None:
    canary = workdir / "canary.txt"
    secret = f"CANARY-{uuid.uuid4().hex}"
    canary.write_text(secret)
    with RogueMySQL(str(canary)) as rogue:
        env = {
            "ORDERPIPE_DATA_DIR": str(prepared / "data"),
            "ORDERPIPE_ARTIFACTS_DIR": str(prepared / "artifacts"),
            "ORDERPIPE_REPORTS_DIR": str(workdir / "reports"),
            "ORDERPIPE_DATABASE_URL": f"mysql+pymysql://u:p@127.0.0.1:{rogue.port}/shop",
            "ORDERPIPE_MYSQL_LOCAL_INFILE": local_infile,
            "ORDERPIPE_ECO_ENABLED": "false",
        }
        result = CliRunner(env=env).invoke(app, COMMANDS[command])
    assert secret.encode() not in rogue.received
    assert rogue.requests >= 1  # it did ask
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "asked to read the local file" in last and str(canary) in last, result.stderr
    assert f"127.0.0.1:{rogue.port}" in last
    assert "Traceback" not in result.stderr
