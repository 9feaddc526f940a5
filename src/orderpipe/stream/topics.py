"""Topic creation: a topic and its dead-letter topic, made when missing (by the producer, and
by `stream topic create` before any producer or consumer starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orderpipe.core.errors import OrderpipeError
from orderpipe.stream.broker import kafka_endpoint
from orderpipe.stream.kafka import KafkaEndpoint, in_one_line, start_client
from orderpipe.stream.messages import dlq_topic

if TYPE_CHECKING:
    from orderpipe.core.settings import Settings

log = logging.getLogger("orderpipe.stream")


async def ensure_topic(
    endpoint: KafkaEndpoint, topic: str, partitions: int, replication_factor: int = 1
) -> list[str]:
    """Create `topic` (and its dead-letter topic) when missing; returns the ones created."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = await start_client(AIOKafkaAdminClient(**endpoint.client_options()), endpoint)
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name, num_partitions=partitions, replication_factor=replication_factor)
            for name in (topic, dlq_topic(topic))
            if name not in existing
        ]
        if not wanted:
            return []
        with contextlib.suppress(TopicAlreadyExistsError):
            response = await admin.create_topics(wanted)
            return _created(response, [new.name for new in wanted])
        return []
    finally:
        await admin.close()


def _created(response: Any, names: list[str]) -> list[str]:
    """The topics a CreateTopics answer says were made; a refusal (not "already exists", which
    a concurrent creator can cause) is one line: the broker answers per topic, it raises not."""
    from aiokafka.errors import for_code

    errors = getattr(response, "topic_errors", None)
    if errors is None:
        return names
    created = []
    for entry in errors:
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 and entry[2] else for_code(code).__name__
        if code == 0:
            created.append(name)
        elif code != TOPIC_ALREADY_EXISTS:
            raise OrderpipeError(f"Kafka refused to create the topic {name!r}: {message}")
    return created


TOPIC_ALREADY_EXISTS = 36  # Kafka's error code


@dataclass(frozen=True)
class TopicsResult:
    """`stream topic create`: the topic and its DLQ, which of them this call created."""

    topic: str
    dlq_topic: str
    partitions: dict[str, int]  # per topic, as the cluster reports it now
    created: list[str]


DESCRIBE_SECONDS = 10.0  # longest wait for created topics to show in the cluster's metadata


def create_topics_with_settings(
    settings: Settings, partitions: int, replication_factor: int = 1
) -> TopicsResult:
    """Create the configured topic and its DLQ (those missing), without producing, so consumers
    can start before producers."""
    if settings.kafka_bootstrap_servers == "embedded":
        log.warning(
            "ORDERPIPE_KAFKA_BOOTSTRAP_SERVERS=embedded: the topics live only as long as this "
            "command's broker; point it at `orderpipe broker` or your cluster"
        )
    topic = settings.kafka_topic
    with kafka_endpoint(settings) as endpoint:
        work = _create_and_describe(endpoint, topic, partitions, replication_factor)
        return asyncio.run(in_one_line(work))


async def _create_and_describe(
    endpoint: KafkaEndpoint, topic: str, partitions: int, replication_factor: int
) -> TopicsResult:
    """Create the topic and its DLQ, then wait until the cluster describes both."""
    from aiokafka.admin import AIOKafkaAdminClient

    names = [topic, dlq_topic(topic)]
    created = await ensure_topic(endpoint, topic, partitions, replication_factor)
    admin = await start_client(AIOKafkaAdminClient(**endpoint.client_options()), endpoint)
    try:
        counts: dict[str, int] = {}
        deadline = time.monotonic() + DESCRIBE_SECONDS
        while True:  # a new topic's metadata reaches every broker in a moment
            described = await admin.describe_topics(names)
            counts = {
                str(entry.get("topic", entry.get("name"))): len(entry["partitions"])
                for entry in described
                if not entry.get("error_code") and entry["partitions"]
            }
            if all(name in counts for name in names) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    missing = [name for name in names if name not in counts]
    if missing:
        raise OrderpipeError(
            f"{', '.join(missing)} not described by the cluster {DESCRIBE_SECONDS:.0f} s "
            "after its creation"
        )
    return TopicsResult(topic, dlq_topic(topic), counts, created)
