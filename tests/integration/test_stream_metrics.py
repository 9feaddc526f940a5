"""`stream consume --metrics-port`: Prometheus text served while the consumer runs, with
what it consumed, stored and dead-lettered (by reason), and its lag per partition."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request
import uuid

import pytest

from orderpipe.stream.producer import ProducerOptions, produce
from tests.integration.helpers import (
    BAD,
    EVENTS,
    Backend,
    StreamData,
    consume_process,
    new_topic,
)

pytestmark = [pytest.mark.integration, pytest.mark.kafka, pytest.mark.mysql, pytest.mark.slow]
PREFIX = "orderpipe_consumer"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """Every sample line of the endpoint: {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def total(samples: dict[str, float], name: str) -> float:
    return sum(value for key, value in samples.items() if key.split("{")[0] == name)


def test_consume_serves_prometheus_metrics_while_running(
    kafka_backend: Backend, data: StreamData
) -> None:
    topic, group = new_topic(), f"g-{uuid.uuid4().hex[:6]}"
    sent = asyncio.run(
        produce(
            kafka_backend.endpoint,
            topic,
            data.raw,
            kind="raw",
            options=ProducerOptions(partitions=3),
        )
    )
    port = free_port()
    process = consume_process(
        kafka_backend,
        topic,
        group,
        data.artifacts,
        "--idle-timeout",
        "6",
        "--metrics-port",
        str(port),
    )
    samples: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                samples = scrape(port)
            except OSError:
                samples = {}
            if total(samples, f"{PREFIX}_events_consumed_total") >= sent.sent:
                break
            assert process.poll() is None, process.stderr.read().decode()  # type: ignore[union-attr]
            time.sleep(0.3)
        else:
            raise AssertionError(f"metrics never showed {sent.sent} consumed: {samples}")
    finally:
        _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err.decode()
    labels = f'group="{group}",topic="{topic}"'
    assert samples[f"{PREFIX}_events_consumed_total{{{labels}}}"] == sent.sent
    # a duplicate counts as stored when it lands in another batch than its event
    assert EVENTS <= samples[f"{PREFIX}_events_stored_total{{{labels}}}"] <= EVENTS + 60
    assert total(samples, f"{PREFIX}_events_dead_lettered_total") == BAD
    batches = samples[f"{PREFIX}_batches_total{{{labels}}}"]
    assert batches >= 1
    assert samples[f"{PREFIX}_batch_write_seconds_count{{{labels}}}"] == batches
    assert samples[f"{PREFIX}_end_to_end_latency_seconds_count{{{labels}}}"] == sent.sent
    lags = {key: value for key, value in samples.items() if key.startswith(f"{PREFIX}_lag")}
    assert len(lags) == 3 and set(lags.values()) == {0.0}
    # the port is free again once the consumer has stopped (scrapes leave TIME_WAIT behind)
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def test_a_metrics_port_in_use_is_a_one_line_error(
    kafka_backend: Backend, data: StreamData
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = consume_process(
            kafka_backend, new_topic(), "g-port", data.artifacts, "--metrics-port", str(port)
        )
        _out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and f"metrics port {port}" in lines[0]
