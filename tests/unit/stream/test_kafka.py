"""stream.kafka: every client gets the endpoint's security options."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from pydantic import SecretStr

from orderpipe.core.errors import ConfigError, OrderpipeError
from orderpipe.core.settings import Settings, load_settings
from orderpipe.stream import kafka
from orderpipe.stream.kafka import KafkaEndpoint, start_client


def test_plaintext_options_are_the_address_only() -> None:
    assert KafkaEndpoint("k:9092").client_options() == {
        "bootstrap_servers": "k:9092",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_options_check_certificates_and_host_names() -> None:
    endpoint = KafkaEndpoint(
        "k:9094",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="me",
        sasl_password=SecretStr("pw"),
    )
    options = endpoint.client_options()
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("me", "pw")
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert "pw" not in repr(endpoint)


def test_settings_build_the_endpoint(settings: Settings, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read until a client starts")
    secured = load_settings(
        _env_file=None,
        kafka_bootstrap_servers="k:9094",
        kafka_security_protocol="sasl_ssl",
        kafka_sasl_mechanism="scram-sha-256",
        kafka_sasl_username="me",
        kafka_sasl_password="pw",
        kafka_ssl_cafile=str(ca),
    )
    endpoint = KafkaEndpoint.from_settings(secured)
    assert endpoint.security_protocol == "SASL_SSL"
    assert endpoint.sasl_mechanism == "SCRAM-SHA-256"
    assert endpoint.ssl_cafile == ca
    assert secured.public_view()["kafka_sasl_password"] == "**********"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs ORDERPIPE_KAFKA_SASL_MECHANISM"),
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_mechanism": "PLAIN",
                "kafka_sasl_username": "me",
            },
            "ORDERPIPE_KAFKA_SASL_PASSWORD is unset",
        ),
        ({"kafka_ssl_cafile": "/nonexistent/ca.pem"}, "ORDERPIPE_KAFKA_SSL_CAFILE: no such file"),
        ({"kafka_security_protocol": "TLS"}, "ORDERPIPE_KAFKA_SECURITY_PROTOCOL"),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "ORDERPIPE_KAFKA_SASL_MECHANISM"),
    ],
)
def test_a_bad_kafka_security_setting_is_one_line(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(_env_file=None, **values)


def test_tls_files_that_cannot_be_used_are_one_line(tmp_path: Path) -> None:
    not_a_ca = tmp_path / "ca.pem"
    not_a_ca.write_text("this is not a certificate")
    endpoint = KafkaEndpoint("k:9094", security_protocol="SSL", ssl_cafile=not_a_ca)
    with pytest.raises(
        OrderpipeError, match=r"cannot use the Kafka TLS files \(ORDERPIPE_KAFKA_SSL_"
    ):
        endpoint.client_options()


def test_empty_tls_file_settings_are_unset() -> None:
    """What `.env.example`'s `ORDERPIPE_KAFKA_SSL_CERTFILE=` gives when uncommented."""
    settings = load_settings(_env_file=None, kafka_ssl_certfile="", kafka_ssl_keyfile=" ")
    assert settings.kafka_ssl_certfile is None and settings.kafka_ssl_keyfile is None


class SlowStartClient:
    """A client whose start takes a while (a bootstrap request in flight)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.events: list[str] = []

    async def start(self) -> None:
        self.events.append("starting")
        await asyncio.sleep(self.seconds)
        self.events.append("started")

    async def stop(self) -> None:
        self.events.append("stopped")


async def cancel_while_starting(client: SlowStartClient) -> None:
    """start_client(client), cancelled 10 ms in: the cancellation must come through (5 s)."""
    task = asyncio.ensure_future(start_client(client, KafkaEndpoint("127.0.0.1:1")))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


def test_a_cancelled_start_is_let_finish_then_the_client_is_stopped() -> None:
    """aiokafka leaks the connection of a start cancelled mid-request: the start finishes, the
    client stops, then the cancellation goes on."""
    client = SlowStartClient(0.05)
    asyncio.run(cancel_while_starting(client))
    assert client.events == ["starting", "started", "stopped"]


def test_a_start_that_does_not_finish_within_the_grace_is_stopped_anyway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kafka, "START_GRACE_SECONDS", 0.02)
    client = SlowStartClient(3600)
    asyncio.run(cancel_while_starting(client))
    assert client.events == ["starting", "stopped"]


def test_a_second_cancel_does_not_cut_the_start_short() -> None:
    client = SlowStartClient(0.05)

    async def cancel_twice() -> None:
        task = asyncio.ensure_future(start_client(client, KafkaEndpoint("127.0.0.1:1")))
        await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)

    asyncio.run(cancel_twice())
    assert client.events == ["starting", "started", "stopped"]
