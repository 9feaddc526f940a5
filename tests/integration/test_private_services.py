"""Hermetic outages: a test that stops a server stops a private instance of its own (its state
folder, its ports), started by a session fixture; the shared services other tests and other
runs use keep answering, their open connections too.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.integration.helpers import PrivateService

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHARED_STATE = Path(os.environ.get("ORDERPIPE_SERVICES_DIR", "/tmp/orderpipe-services"))


async def _kafka_topics(bootstrap: str) -> set[str]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await consumer.start()
    try:
        return await consumer.topics()
    finally:
        await consumer.stop()


@pytest.mark.parametrize(
    ("private_fixture", "shared_fixture"),
    [
        pytest.param("private_mariadb", "mysql_server_url", marks=pytest.mark.mysql, id="mariadb"),
        pytest.param(
            "private_postgres", "postgres_server_url", marks=pytest.mark.postgres, id="postgres"
        ),
    ],
)
def test_stopping_a_private_database_server_leaves_the_shared_one_answering(
    request: pytest.FixtureRequest, private_fixture: str, shared_fixture: str
) -> None:
    private: PrivateService = request.getfixturevalue(private_fixture)
    shared_url = request.getfixturevalue(shared_fixture)
    assert private.port != make_url(shared_url).port
    assert private.state != SHARED_STATE
    shared = create_engine(make_url(shared_url))  # no pre-ping: a restart would break `conn`
    try:
        with shared.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
            try:
                private.down()
                assert not private.answers()
                # the shared server answers, on the connection opened before: never restarted
                assert conn.execute(text("SELECT 2")).scalar() == 2
            finally:
                private.up()
            assert private.answers()
            assert conn.execute(text("SELECT 3")).scalar() == 3
    finally:
        shared.dispose()


@pytest.mark.kafka
def test_stopping_the_private_kafka_leaves_the_shared_one_answering(
    private_kafka: PrivateService, kafka_bootstrap: str
) -> None:
    assert private_kafka.bootstrap != kafka_bootstrap
    assert private_kafka.state != SHARED_STATE
    try:
        private_kafka.down()
        assert not private_kafka.answers()
        assert isinstance(asyncio.run(_kafka_topics(kafka_bootstrap)), set)
    finally:
        private_kafka.up()
    assert private_kafka.answers()
    assert isinstance(asyncio.run(_kafka_topics(private_kafka.bootstrap)), set)
