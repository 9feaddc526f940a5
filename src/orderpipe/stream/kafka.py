"""How orderpipe reaches Kafka: the endpoint (address, embedded or not, SASL/TLS) that every
client is built from, and one-line errors when a client cannot connect or Kafka refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orderpipe.core.errors import OrderpipeError, first_line

if TYPE_CHECKING:
    from pydantic import SecretStr

    from orderpipe.core.settings import Settings

log = logging.getLogger("orderpipe.stream")
CONNECT_CHECK_SECONDS = 10.0
START_GRACE_SECONDS = 5.0  # see start_client


@dataclass(frozen=True)
class KafkaEndpoint:
    """Where to connect and how; `client_options()` goes into every aiokafka client."""

    bootstrap: str
    embedded: bool = False  # our tansu broker: no idempotent producers
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None  # None: the system's certificate authorities
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaEndpoint:
        return cls(
            bootstrap=settings.kafka_bootstrap_servers,
            security_protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_username=settings.kafka_sasl_username,
            sasl_password=settings.kafka_sasl_password,
            ssl_cafile=settings.kafka_ssl_cafile,
            ssl_certfile=settings.kafka_ssl_certfile,
            ssl_keyfile=settings.kafka_ssl_keyfile,
        )

    @property
    def description(self) -> str:
        return f"{self.bootstrap} ({self.security_protocol})"

    def client_options(self) -> dict[str, Any]:
        """bootstrap_servers and the security options of an aiokafka client."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            # Certificates and host names are checked (create_ssl_context's defaults).
            try:
                options["ssl_context"] = create_ssl_context(
                    cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
                    certfile=str(self.ssl_certfile) if self.ssl_certfile else None,
                    keyfile=str(self.ssl_keyfile) if self.ssl_keyfile else None,
                    password="",  # an encrypted key fails here, never prompts on a terminal
                )
            except (ssl.SSLError, OSError) as exc:
                raise OrderpipeError(
                    f"cannot use the Kafka TLS files (ORDERPIPE_KAFKA_SSL_*): {first_line(exc)}"
                ) from None
        if self.security_protocol.startswith("SASL_"):
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return options


async def cluster_metadata(endpoint: KafkaEndpoint, timeout: float) -> tuple[int, int]:
    """How many brokers and topics the cluster reports; raises when it does not answer."""
    from aiokafka import AIOKafkaClient

    client = AIOKafkaClient(**endpoint.client_options(), request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        # bootstrap asks for no topic's metadata: its cluster view counts none
        cluster = await asyncio.wait_for(client.fetch_all_metadata(), timeout)
        return len(cluster.brokers()), len(cluster.topics())
    finally:
        await client.close()


async def start_client(client: Any, endpoint: KafkaEndpoint) -> Any:
    """`await client.start()`; when it cannot connect, one line saying why (wrong password,
    untrusted certificate, plaintext on a TLS port...) instead of "Unable to bootstrap".

    Other Kafka errors (a broker refusing a feature) are raised as they are; the caller stops
    the client then. Cancelled, it stops the client before it gives way: aiokafka leaks the
    connection of a start cancelled mid-request (its bootstrap connection is never closed and
    its reader runs on), so a start under way is let finish, `START_GRACE_SECONDS` at most.
    """
    from aiokafka.errors import KafkaConnectionError

    stop = getattr(client, "stop", None) or client.close
    with quiet_bootstrap_errors():
        starting = asyncio.ensure_future(client.start())
        try:
            await asyncio.shield(starting)
            return client
        except asyncio.CancelledError:
            # in a task of its own: a second cancel must not cut the start short either
            ending = asyncio.ensure_future(_let_start_end_then_stop(starting, stop))
            while not ending.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(ending)
            raise
        except (KafkaConnectionError, OSError) as exc:
            failure = exc
    with contextlib.suppress(Exception):
        await stop()
    reason = await connection_problem(endpoint) or first_line(failure)
    message = f"cannot connect to Kafka at {endpoint.description}: {reason}"
    raise OrderpipeError(message) from None


async def _let_start_end_then_stop(
    starting: asyncio.Future[Any], stop: Callable[[], Awaitable[Any]]
) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(starting, START_GRACE_SECONDS)
    with contextlib.suppress(Exception):
        await stop()


async def connection_problem(endpoint: KafkaEndpoint) -> str | None:
    """Why a connection to the first bootstrap server fails (None when it succeeds)."""
    from aiokafka.conn import create_conn

    host, _sep, port = endpoint.bootstrap.split(",")[0].strip().rpartition(":")
    try:
        options = endpoint.client_options()
    except OrderpipeError as exc:  # TLS files that cannot be used
        return str(exc)
    options.pop("bootstrap_servers")
    try:
        conn = await asyncio.wait_for(
            create_conn(host.strip("[]"), int(port), request_timeout_ms=5000, **options),
            CONNECT_CHECK_SECONDS,
        )
    except TimeoutError:
        return f"no answer within {CONNECT_CHECK_SECONDS:.0f} s (is it a TLS port? the protocol?)"
    except Exception as exc:
        return first_line(exc)
    conn.close()
    return None


class _DropBootstrapErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Unable connect to", "Unable to request metadata"))


@contextlib.contextmanager
def quiet_bootstrap_errors() -> Iterator[None]:
    """aiokafka logs each failed bootstrap attempt; our one-line error says it better."""
    logger = logging.getLogger("aiokafka")
    drop = _DropBootstrapErrors()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


async def in_one_line(work: Coroutine[Any, Any, Any]) -> Any:
    """Kafka's refusals (authorization, unknown group...) as one line."""
    from aiokafka.errors import KafkaError

    try:
        return await work
    except KafkaError as exc:
        raise OrderpipeError(f"Kafka refused the request: {first_line(exc, named=True)}") from None
