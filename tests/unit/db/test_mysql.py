"""db.mysql: a server gets the file being loaded on that connection, and nothing else."""

from __future__ import annotations

from pathlib import Path

import pymysql
import pytest

from orderpipe.db.mysql import ClearTextPasswordRefused, GuardedConnection, LocalFileRefused
from tests.fixtures.rogue_mysql import RogueMySQL


def connect(port: int, local_infile: bool = True) -> GuardedConnection:
    return GuardedConnection(
        host="127.0.0.1", port=port, user="u", password="p", database="d", local_infile=local_infile
    )


@pytest.mark.parametrize("local_infile", [True, False])
def test_a_file_the_server_names_is_refused_and_the_connection_stays_usable(
    tmp_path: Path, local_infile: bool
) -> None:
    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE-KEY-CANARY")
    with RogueMySQL(str(secret)) as rogue:
        conn = connect(rogue.port, local_infile)
        with pytest.raises(LocalFileRefused, match=r"asked to read the local file .*id_rsa"):
            conn.cursor().execute("SELECT 1")
        conn.ping()  # the protocol is still in step
        assert rogue.received == b""
        conn.close()


def test_only_the_file_being_loaded_is_sent_and_only_during_its_statement(tmp_path: Path) -> None:
    batch = tmp_path / "batch.csv"
    batch.write_text("1,2,3\n")
    with RogueMySQL(str(batch)) as rogue:
        conn = connect(rogue.port)
        conn.allowed_local_file = str(batch)
        conn.cursor().execute("LOAD DATA LOCAL INFILE 'x' INTO TABLE t")
        assert bytes(rogue.received) == b"1,2,3\n"
        conn.allowed_local_file = None  # the statement is over: the same name is refused now
        with pytest.raises(LocalFileRefused):
            conn.cursor().execute("SELECT 1")
        assert bytes(rogue.received) == b"1,2,3\n"
        conn.close()


def test_another_file_is_refused_while_one_is_allowed(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("ORDERPIPE_DATABASE_URL=mysql://u:CANARY@h/d")
    with RogueMySQL(str(tmp_path / ".env")) as rogue:
        conn = connect(rogue.port)
        conn.allowed_local_file = str(tmp_path / "batch.csv")
        with pytest.raises(LocalFileRefused):
            conn.cursor().execute("LOAD DATA LOCAL INFILE 'batch.csv' INTO TABLE t")
        assert rogue.received == b""
        conn.close()


@pytest.mark.parametrize("plugin", [b"mysql_clear_password", b"dialog"])
def test_the_password_is_never_sent_in_clear_text_to_a_server_that_asks(
    tmp_path: Path, plugin: bytes
) -> None:
    with RogueMySQL(str(tmp_path / "x"), auth_switch=plugin) as rogue:
        # what PyMySQL alone does: the password goes to the server as it is
        leaked = pymysql.connect(host="127.0.0.1", port=rogue.port, user="u", password="PwCanary1")
        leaked.close()
        assert b"PwCanary1" in rogue.auth_received
        rogue.auth_received.clear()
        with pytest.raises(ClearTextPasswordRefused, match="password in clear text"):
            GuardedConnection(host="127.0.0.1", port=rogue.port, user="u", password="PwCanary2")
        assert b"PwCanary2" not in rogue.auth_received
