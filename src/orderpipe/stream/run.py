"""`stream run`: (embedded broker) + producer + consumer in one process until every produced
event is stored or dead-lettered; reports throughput and end-to-end latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from orderpipe.core.errors import OrderpipeError, Terminated
from orderpipe.stream.broker import kafka_endpoint
from orderpipe.stream.consumer import ConsumeResult, StreamConsumer
from orderpipe.stream.lifecycle import ConsumerOptions
from orderpipe.stream.producer import ProduceResult, ProducerOptions, produce
from orderpipe.stream.topics import ensure_topic

if TYPE_CHECKING:
    from orderpipe.core.settings import Settings
    from orderpipe.stream.kafka import KafkaEndpoint
    from orderpipe.stream.sink import Sink

T = TypeVar("T")


@dataclass(frozen=True)
class StreamRunResult:
    """Both sides of one `stream run`."""

    topic: str
    produced: int
    skipped: int
    stored: int
    dead_lettered: int
    seconds: float  # the whole command, start-up included
    # until the first send: topic creation (and, paced, the consumer's start: model load,
    # assignment; unpaced, the consumer starts while the producer sends)
    startup_seconds: float
    events_per_second: float  # produced events / time from first send to last commit
    # p50/p95/p99/max (ms): from produce to stored, and the consumer's share (fetch to stored)
    produce_to_stored_ms: dict[str, float] = field(default_factory=dict)
    fetch_to_stored_ms: dict[str, float] = field(default_factory=dict)
    producer: ProduceResult | None = None
    consumer: ConsumeResult | None = None


async def run_stream(
    endpoint: KafkaEndpoint,
    topic: str,
    group_id: str,
    source: Path,
    sink_factory: Callable[[], Sink],
    *,
    kind: str = "clean",
    producer_options: ProducerOptions | None = None,
    consumer_options: ConsumerOptions | None = None,
    timeout: float = 600.0,
) -> StreamRunResult:
    """Produce `source` and consume it concurrently; done when every message is accounted for."""
    producer_options = producer_options or ProducerOptions()
    options = _bounded(consumer_options or ConsumerOptions())
    began = time.perf_counter()
    await ensure_topic(endpoint, topic, producer_options.partitions)
    consumer = StreamConsumer(endpoint, topic, group_id, sink_factory, options=options)
    consuming = asyncio.create_task(consumer.run())
    producing: asyncio.Task[ProduceResult] | None = None
    try:
        if producer_options.rate:
            # Paced: send once the consumer is ready (model loaded, partitions assigned), so the
            # latencies measure the pipeline at that rate, not the consumer's start-up.
            await _until_ready(consumer, consuming)
        # Unpaced: send at once; the topic holds the messages while the consumer starts (its
        # model load and the producer's reading overlap, and the consumer reads from where its
        # group's offsets are, the beginning of a new topic).
        streaming_began = time.perf_counter()
        producing = asyncio.create_task(
            produce(endpoint, topic, source, kind=kind, options=producer_options)
        )
        await asyncio.wait({producing, consuming}, return_when=asyncio.FIRST_COMPLETED)
        if not producing.done():  # the consumer failed (or stopped) first
            await consuming  # raises its error
            raise OrderpipeError("stream run: the consumer stopped before the producer finished")
        produced = producing.result()
        # Done when everything up to our own last message is stored or dead-lettered: messages
        # left on the topic before count, and never in place of ours. (The brokers' answers to
        # the producer say where ours end; tansu's ListOffsets does not.)
        consumer.stop_at = _ends(topic, produced)
        # shielded: a cancel (SIGTERM, Ctrl-C) stops the consumer in `finally`, which ends its
        # batch and commits it, instead of cancelling it in the middle of one
        consumed = await asyncio.wait_for(asyncio.shield(consuming), timeout)
    except TimeoutError:
        consumer.stop()
        raise OrderpipeError(
            f"stream run: the consumer did not account for every message "
            f"within {timeout:.0f} s ({consumer.consumed} consumed)"
        ) from None
    finally:
        if producing is not None and not producing.done():
            producing.cancel()
            await asyncio.gather(producing, return_exceptions=True)
        if not consuming.done():
            consumer.stop()
            await asyncio.gather(consuming, return_exceptions=True)
    return _run_result(topic, produced, consumed, began, streaming_began)


def _bounded(options: ConsumerOptions) -> ConsumerOptions:
    """The consumer options of `stream run`: its batching, one consumer, no database wait."""
    return ConsumerOptions(
        batch_size=options.batch_size,
        batch_wait_ms=options.batch_wait_ms,
        assign=True,  # one consumer owns every partition: no group wait
        database_wait=0.0,  # a bounded command: an unreachable database is an error at once
    )


async def _until_ready(consumer: StreamConsumer, consuming: asyncio.Task[ConsumeResult]) -> None:
    """Wait for the consumer to be ready; raise its error when it fails at start instead."""
    ready = asyncio.create_task(consumer.ready.wait())
    await asyncio.wait({ready, consuming}, return_when=asyncio.FIRST_COMPLETED)
    if consuming.done():
        ready.cancel()
        await consuming  # it failed at start: raise its error


def _ends(topic: str, produced: ProduceResult) -> dict[Any, int]:
    """Per partition of `topic`, the offset just after the producer's last message."""
    from aiokafka import TopicPartition

    return {
        TopicPartition(topic, partition): end for partition, end in produced.end_offsets.items()
    }


def _run_result(
    topic: str, produced: ProduceResult, consumed: ConsumeResult, began: float, streaming: float
) -> StreamRunResult:
    """Both sides' figures; `began`, `streaming`: perf_counter() at the start, at the first send."""
    ended = time.perf_counter()
    seconds, streaming = ended - began, ended - streaming
    return StreamRunResult(
        topic=topic,
        produced=produced.sent,
        skipped=produced.skipped,
        stored=consumed.stored,
        dead_lettered=consumed.dead_lettered,
        seconds=seconds,
        startup_seconds=seconds - streaming,
        events_per_second=produced.sent / streaming if streaming else 0.0,
        produce_to_stored_ms=consumed.produce_to_stored_ms,
        fetch_to_stored_ms=consumed.fetch_to_stored_ms,
        producer=produced,
        consumer=consumed,
    )


def run_stream_with_settings(
    settings: Settings,
    source: Path,
    *,
    kind: str = "clean",
    producer_options: ProducerOptions | None = None,
    consumer_options: ConsumerOptions | None = None,
) -> StreamRunResult:
    """`run_stream` on the configured Kafka (or an embedded broker) and database."""
    from orderpipe.stream.sink import DatabaseSink

    with kafka_endpoint(settings) as endpoint:
        return asyncio.run(
            _cancelled_by_sigterm(
                run_stream(
                    endpoint,
                    settings.kafka_topic,
                    settings.kafka_group_id,
                    source,
                    DatabaseSink.factory(settings),
                    kind=kind,
                    producer_options=producer_options,
                    consumer_options=consumer_options,
                ),
                "stream run",
            )
        )


def consume_with_settings(
    settings: Settings,
    options: ConsumerOptions,
    *,
    metrics_port: int | None = None,
    metrics_addr: str = "127.0.0.1",
) -> ConsumeResult:
    """`stream consume`: join the configured group until a stop rule, SIGINT or SIGTERM;
    with `metrics_port`, Prometheus metrics are served at http://addr:port/metrics meanwhile."""
    from orderpipe.stream.observe import serve_metrics
    from orderpipe.stream.sink import DatabaseSink

    topic, group = settings.kafka_topic, settings.kafka_group_id
    with (
        serve_metrics(topic, group, metrics_port, metrics_addr) as metrics,
        kafka_endpoint(settings) as endpoint,
    ):
        consumer = StreamConsumer(
            endpoint, topic, group, DatabaseSink.factory(settings), options=options, metrics=metrics
        )
        return asyncio.run(_until_signal(consumer.run(), consumer.stop))


def produce_with_settings(
    settings: Settings, source: Path, *, kind: str, options: ProducerOptions
) -> ProduceResult:
    """`stream produce`: send `source` to the configured topic."""
    with kafka_endpoint(settings) as endpoint:
        return asyncio.run(
            _cancelled_by_sigterm(
                produce(endpoint, settings.kafka_topic, source, kind=kind, options=options),
                "stream produce",
            )
        )


async def _until_signal(
    work: Coroutine[Any, Any, T], stop: Callable[[], None], signals: tuple[int, ...] = ()
) -> T:
    """Run `work`; the `signals` (SIGINT and SIGTERM when none are named) call `stop` so it
    can finish cleanly."""
    import contextlib
    import signal

    loop = asyncio.get_running_loop()
    for sig in signals or (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop)
    return await work


async def _cancelled_by_sigterm(work: Coroutine[Any, Any, T], command: str) -> T:
    """Run `work`; SIGTERM cancels it as Ctrl-C does (its clean-up runs: the producer stops,
    the consumer finishes its batch and commits it, then the embedded broker stops), and the
    command ends with `Terminated` (exit 143) instead of being killed where it stood."""
    import signal

    task = asyncio.current_task()
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        if not terminated and task is not None:  # once: a second one must not cut the clean-up
            terminated = True
            task.cancel()

    try:
        return await _until_signal(work, terminate, (signal.SIGTERM,))
    except asyncio.CancelledError:
        if terminated:
            raise Terminated(f"{command}: stopped by SIGTERM") from None
        raise
