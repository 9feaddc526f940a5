"""MySQL/MariaDB connections that answer a server's LOAD DATA LOCAL request only for the file
orderpipe is loading at that moment, on that connection, and never send the password in clear.

PyMySQL alone sends whatever file the *server* names once `local_infile` is on (and breaks the
connection when it is off), and the password itself to a server that asks for the clear-text
plugins: a rogue or hijacked server could take `.env`, SSH keys, tokens or the password.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pymysql
from pymysql.connections import Connection, MySQLResult
from pymysql.protocol import LoadLocalPacketWrapper

if TYPE_CHECKING:
    from sqlalchemy import Connection as SAConnection


class LocalFileRefused(pymysql.err.NotSupportedError):
    """The server asked for a local file that orderpipe was not loading."""

    def __init__(self, host: str, port: int, filename: bytes) -> None:
        name = os.fsdecode(filename)
        super().__init__(
            2000,
            f"the server {host}:{port} asked to read the local file {name!r}, which orderpipe "
            "is not loading: refused (is this the server you meant?)",
        )
        self.message = str(self.args[1])

    def __str__(self) -> str:
        return self.message


CLEAR_TEXT_PLUGINS = (b"mysql_clear_password", b"dialog")


class ClearTextPasswordRefused(pymysql.err.NotSupportedError):
    """The server asked for the password in clear text over a connection not checked by TLS."""

    def __init__(self, host: str, port: int, plugin: bytes) -> None:
        super().__init__(
            2059,
            f"the server {host}:{port} asked for the password in clear text "
            f"({plugin.decode(errors='replace')}): refused without TLS checked against a CA "
            "(add ssl_ca=... to the URL if the server really needs it)",
        )
        self.message = str(self.args[1])

    def __str__(self) -> str:
        return self.message


class _GuardedResult(MySQLResult):
    def _read_load_local_packet(self, first_packet: Any) -> None:
        conn: GuardedConnection = self.connection  # type: ignore[assignment]
        filename = LoadLocalPacketWrapper(first_packet).filename
        allowed = conn.allowed_local_file
        if conn._local_infile and allowed is not None and filename == os.fsencode(allowed):
            super()._read_load_local_packet(first_packet)
            return
        # Refuse without breaking the protocol: no data, the end-of-data packet, the answer.
        conn.write_packet(b"")
        with contextlib.suppress(pymysql.err.MySQLError):
            conn._read_packet()
        raise LocalFileRefused(conn.host, conn.port, filename)


class GuardedConnection(Connection):
    """A PyMySQL connection whose LOAD DATA LOCAL answers only `allowed_local_file`.

    Every place PyMySQL reads a query's result (`_read_query_result`, `show_warnings`) goes
    through `_GuardedResult`; COMMIT/ROLLBACK answers are read as OK packets only.
    """

    allowed_local_file: str | None = None

    def _process_auth(self, plugin_name: bytes, auth_packet: Any, handler: Any = None) -> Any:
        if plugin_name in CLEAR_TEXT_PLUGINS and not self.verified_tls():
            raise ClearTextPasswordRefused(self.host, self.port, plugin_name)
        return super()._process_auth(plugin_name, auth_packet, handler)

    def verified_tls(self) -> bool:
        """Encrypted, and the server's certificate checked against a CA."""
        sock = getattr(self, "_sock", None)
        return isinstance(sock, ssl.SSLSocket) and sock.context.verify_mode == ssl.CERT_REQUIRED

    def tls_cipher(self) -> str | None:
        """The cipher this connection uses, or None when it is not encrypted."""
        sock = getattr(self, "_sock", None)
        return sock.cipher()[0] if isinstance(sock, ssl.SSLSocket) and sock.cipher() else None

    def _read_query_result(self, unbuffered: bool = False) -> int:
        self._result = None
        result = _GuardedResult(self)
        if unbuffered:
            result.init_unbuffered_query()
        else:
            result.read()
        self._result = result
        if result.server_status is not None:
            self.server_status = result.server_status
        return result.affected_rows

    def show_warnings(self) -> Any:
        from pymysql.constants import COMMAND

        self._execute_command(COMMAND.COM_QUERY, "SHOW WARNINGS")
        result = _GuardedResult(self)
        result.read()
        return result.rows


def guarded_connect(*args: Any, **kwargs: Any) -> GuardedConnection:
    """What SQLAlchemy's pymysql dialect calls instead of `pymysql.connect` (see make_engine)."""
    return GuardedConnection(*args, **kwargs)


@contextlib.contextmanager
def allow_local_file(conn: SAConnection, path: str) -> Iterator[None]:
    """Let the server of `conn` read `path`, and only it, for the statement run in the block."""
    raw = conn.connection.dbapi_connection
    if not isinstance(raw, GuardedConnection):
        raise RuntimeError("LOAD DATA LOCAL needs a connection from orderpipe's make_engine")
    raw.allowed_local_file = path
    try:
        yield
    finally:
        raw.allowed_local_file = None


ID_COLUMNS = ("event_id", "order_id", "customer_id")


def case_insensitive_ids(conn: SAConnection) -> list[str]:
    """`table.column` of the contract tables' id columns stored with another collation than
    orderpipe's byte-order one (tables created by an earlier orderpipe)."""
    from orderpipe.db.models import MYSQL_ID_COLLATION, Base

    tables = list(Base.metadata.tables)
    rows = conn.exec_driver_sql(
        "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = DATABASE() AND COLLATION_NAME <> %s "
        f"AND TABLE_NAME IN ({', '.join(['%s'] * len(tables))}) "
        f"AND COLUMN_NAME IN ({', '.join(['%s'] * len(ID_COLUMNS))}) "
        "ORDER BY TABLE_NAME, COLUMN_NAME",
        (MYSQL_ID_COLLATION, *tables, *ID_COLUMNS),
    )
    return [f"{table}.{column}" for table, column in rows]
