"""The real Apache Kafka broker from docker/services.sh: aiokafka produce, consume, commit;
metadata as doctor and `metadata_answers` ask for it."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from orderpipe.core.settings import Settings
from orderpipe.runs.doctor import check_kafka
from orderpipe.stream.broker import free_port, metadata_answers
from orderpipe.stream.kafka import KafkaEndpoint, cluster_metadata

pytestmark = [pytest.mark.integration, pytest.mark.kafka]


async def _round_trip(bootstrap: str, topic: str, group: str, count: int) -> tuple[int, int]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, compression_type="gzip"
    )
    await producer.start()
    try:
        for i in range(count):
            await producer.send(
                topic,
                key=f"ORD-{i % 17}".encode(),
                value=f"{i}".encode(),
                headers=[("source", b"test")],
            )
        await producer.flush()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    received = 0
    try:
        async with asyncio.timeout(60):
            while received < count:
                batch = await consumer.getmany(timeout_ms=1000)
                for tp, messages in batch.items():
                    received += len(messages)
                    await consumer.commit({tp: messages[-1].offset + 1})
        committed = 0
        for partition in range(3):
            committed += await consumer.committed(TopicPartition(topic, partition)) or 0
    finally:
        await consumer.stop()
    return received, committed


def test_aiokafka_produces_consumes_and_commits(kafka_bootstrap: str) -> None:
    topic = f"orderpipe-smoke-{uuid.uuid4().hex[:8]}"
    received, committed = asyncio.run(
        _round_trip(kafka_bootstrap, topic, f"g-{uuid.uuid4().hex[:6]}", 300)
    )
    assert received == 300
    assert committed == 300  # committed offsets add up to every message


def test_doctor_sees_the_broker(kafka_bootstrap: str) -> None:
    check = check_kafka(Settings(_env_file=None, kafka_bootstrap_servers=kafka_bootstrap), 10)
    assert check.ok, check.detail
    assert "broker(s)" in check.detail
    assert check.facts["security_protocol"] == "PLAINTEXT"


def test_doctor_reports_a_closed_port() -> None:
    check = check_kafka(Settings(_env_file=None, kafka_bootstrap_servers="127.0.0.1:1"), 3)
    assert not check.ok


def test_cluster_metadata_counts_brokers_and_topics(kafka_bootstrap: str) -> None:
    from orderpipe.stream.topics import ensure_topic

    endpoint = KafkaEndpoint(kafka_bootstrap)
    brokers, before = asyncio.run(cluster_metadata(endpoint, timeout=10))
    asyncio.run(ensure_topic(endpoint, f"counted-{uuid.uuid4().hex[:8]}", 1))
    _, after = asyncio.run(cluster_metadata(endpoint, timeout=10))
    assert brokers == 1  # the one KRaft broker of docker/services.sh
    assert after >= before + 1  # the new topic is counted (others may appear meanwhile)


def test_metadata_answers_on_the_real_kafka(kafka_bootstrap: str) -> None:
    assert metadata_answers(kafka_bootstrap) is True


def test_metadata_answers_inside_a_running_event_loop(kafka_bootstrap: str) -> None:
    async def from_a_coroutine() -> bool:
        return metadata_answers(kafka_bootstrap)  # asyncio.run() here would raise

    assert asyncio.run(from_a_coroutine()) is True


def test_metadata_answers_is_false_next_to_the_real_kafka() -> None:
    assert metadata_answers(f"127.0.0.1:{free_port()}") is False
