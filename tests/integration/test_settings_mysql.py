"""A `.env` of the original scripts (MYSQL_*) whose password holds URL characters connects.

The password `p w+@:/%x` broke the URL built with quote_plus; each test makes its own user.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from orderpipe.core.settings import Settings, load_settings

pytestmark = [pytest.mark.integration, pytest.mark.mysql]

PASSWORD = "p w+@:/%x"


@dataclass(frozen=True)
class MysqlAccount:
    """A user of the test server that may use one database, and nothing else."""

    user: str
    database: str
    host: str
    port: int


@pytest.fixture
def special_password_account(mysql_url: str) -> Iterator[MysqlAccount]:
    """A fresh user identified by PASSWORD, granted ALL on the test's database; dropped after."""
    url = make_url(mysql_url)
    account = MysqlAccount(
        user=f"op_pw_{uuid.uuid4().hex[:10]}",
        database=str(url.database),
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
    )
    admin = create_engine(url)
    # '%' so the user matches whatever address the server sees the test connect from.
    with admin.begin() as conn:
        conn.execute(text(f"CREATE USER '{account.user}'@'%' IDENTIFIED BY :pw"), {"pw": PASSWORD})
        conn.execute(text(f"GRANT ALL ON `{account.database}`.* TO '{account.user}'@'%'"))
    try:
        yield account
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP USER IF EXISTS '{account.user}'@'%'"))
        admin.dispose()


def _write_original_env(workdir: Path, account: MysqlAccount) -> None:
    (workdir / ".env").write_text(
        f"MYSQL_USER={account.user}\nMYSQL_PASSWORD={PASSWORD}\n"
        f"MYSQL_DATABASE={account.database}\nMYSQL_HOST={account.host}\n"
        f"MYSQL_PORT={account.port}\n"
    )


def _password_forms(settings: Settings) -> set[str]:
    """The password as written and as encoded inside the unmasked URL."""
    rendered = settings.db_url.render_as_string(hide_password=False)
    encoded = rendered.split("://", 1)[1].rsplit("@", 1)[0].split(":", 1)[1]
    return {PASSWORD, encoded}


def test_original_env_with_special_password_connects_as_its_user(
    workdir: Path, special_password_account: MysqlAccount
) -> None:
    _write_original_env(workdir, special_password_account)
    settings = load_settings()
    assert settings.db_url.password == PASSWORD

    engine = create_engine(settings.db_url)
    try:
        with engine.connect() as conn:
            current = conn.execute(text("SELECT CURRENT_USER()")).scalar_one()
            database = conn.execute(text("SELECT DATABASE()")).scalar_one()
    finally:
        engine.dispose()
    assert current.split("@", 1)[0] == special_password_account.user
    assert database == special_password_account.database

    for form in _password_forms(settings):
        assert form not in settings.masked_database_url()
        assert form not in str(settings.public_view())


def test_doctor_connects_with_the_special_password_and_never_shows_it(
    workdir: Path, special_password_account: MysqlAccount
) -> None:
    from typer.testing import CliRunner

    from orderpipe.cli import app

    _write_original_env(workdir, special_password_account)
    runner = CliRunner(env={"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"})
    result = runner.invoke(app, ["doctor", "--json"])

    report = json.loads(result.stdout)
    # The Kafka check (embedded broker binary) is not this test's business; the exit code must
    # still agree with the report.
    assert result.exit_code == (0 if report["ok"] else 1), result.stderr
    database = next(check for check in report["checks"] if check["name"] == "database")
    assert database["ok"] is True, database["detail"]
    assert f"//{special_password_account.user}:***@" in report["settings"]["database_url"]
    for form in _password_forms(load_settings()):
        assert form not in result.stdout
        assert form not in result.stderr
