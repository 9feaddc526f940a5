"""How a stream consumer starts and ends around its loop: its sink and Kafka clients opened
together (the database waited for during an outage), its worker threads, and what is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orderpipe.db.errors import Fault, reason_of
from orderpipe.stream.errors import classify
from orderpipe.stream.kafka import start_client
from orderpipe.stream.observe import NoMetrics
from orderpipe.stream.runtime import (
    back_off,
    backoff_delay,
    collector_paused,
    open_in,
    run_in,
    shut_down,
)

if TYPE_CHECKING:
    from orderpipe.stream.kafka import KafkaEndpoint
    from orderpipe.stream.sink import Sink

log = logging.getLogger("orderpipe.stream")

EMBEDDED_FETCH_WAIT_MS = 10  # see ConsumerLifecycle._fetch_wait_ms


@dataclass(frozen=True)
class ConsumerOptions:
    """Micro-batching and stopping rules."""

    batch_size: int = 20_000
    batch_wait_ms: int = 100
    max_events: int | None = None
    idle_timeout: float | None = None
    assign: bool = False  # assign every partition (one consumer) instead of joining the group
    # how long a consumer started during a database outage waits for it before giving up
    database_wait: float = 120.0


class ConsumerLifecycle:
    """The start and the end of a consumer (`stream.consumer.StreamConsumer` runs the loop
    between them): the sink opens in the writer thread while the Kafka clients start, a
    database outage at start is waited for, and whatever was opened is closed."""

    def __init__(
        self,
        endpoint: KafkaEndpoint,
        group_id: str,
        sink_factory: Callable[[], Sink],
        options: ConsumerOptions | None = None,
        metrics: Any = None,
    ) -> None:
        self.endpoint, self.group_id = endpoint, group_id
        self.sink_factory = sink_factory
        self.options = options or ConsumerOptions()
        self.metrics = metrics or NoMetrics()  # stream.observe.ConsumerMetrics when served
        self.retries = 0
        self._stop = asyncio.Event()
        self._consumer: Any = None
        self._writer: ThreadPoolExecutor | None = None
        self._cleaner: ThreadPoolExecutor | None = None

    async def _start(self) -> tuple[Sink, Any, Any] | None:
        """Open the sink (the model loads, the database answers) while the Kafka clients start
        (they were in turn: ~0.3 s of `stream run`). The first failure is raised, the sink's
        when both fail (a missing model says more than a broker that is down); what the other
        start opened is closed. None when asked to stop while the database was unreachable."""
        opening = asyncio.ensure_future(self._open_sink())
        starting = asyncio.ensure_future(self._start_clients())
        try:
            await asyncio.wait({opening, starting}, return_when=asyncio.FIRST_EXCEPTION)
        except BaseException:  # cancelled
            await self._abandon(opening, starting)
            raise
        failed = [task for task in (opening, starting) if task.done() and task.exception()]
        if failed:
            await self._abandon(opening, starting)
            raise failed[0].exception()  # type: ignore[misc]
        consumer, dlq = starting.result()
        sink = opening.result()
        if sink is None:
            await self._stop_clients(consumer, dlq)
            return None
        return sink, consumer, dlq

    async def _abandon(self, opening: asyncio.Future[Any], starting: asyncio.Future[Any]) -> None:
        """A start failed or was cancelled: stop the other one, and close what either opened."""
        self._stop.set()  # a sink waiting for its database gives up (see _open_sink)
        starting.cancel()
        sink, clients = await asyncio.gather(opening, starting, return_exceptions=True)
        if isinstance(clients, tuple):
            await self._stop_clients(*clients)
        if sink is not None and not isinstance(sink, BaseException):
            with contextlib.suppress(Exception):
                await self._in_writer(sink.close)
        self._shutdown_threads()
        # A stopped client cancels its connections' readers without waiting for them: one
        # pass of the loop lets them end, so nothing of the consumer outlives its run
        await asyncio.sleep(0)

    async def _start_clients(self) -> tuple[Any, Any]:
        """The started Kafka consumer (not yet a member of its group) and dead-letter producer."""
        from orderpipe.stream.producer import ProducerOptions, producer_config, start_producer

        consumer = self._consumer = self._kafka_consumer()
        try:
            await start_client(consumer, self.endpoint)
            dlq = await start_producer(
                self.endpoint, producer_config(self.endpoint, ProducerOptions())
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise
        return consumer, dlq

    @staticmethod
    async def _stop_clients(consumer: Any, dlq: Any) -> None:
        with contextlib.suppress(Exception):
            await dlq.stop()
        with contextlib.suppress(Exception):
            await consumer.stop()

    async def _open_sink(self) -> Sink | None:
        """The sink, once the database answers: a consumer (re)started during an outage waits
        for it (`database_wait` at most) with the same backoff as a batch, instead of exiting;
        other faults, a wrong host that never answers included once the wait is over, stop it."""
        attempt, deadline = 0, time.monotonic() + self.options.database_wait
        while True:
            if attempt and self._stop.is_set():
                return None
            try:
                with collector_paused():  # the libraries and the model load in the writer
                    # a sink that opens after a cancel (the thread cannot be) is closed at once
                    return await open_in(self._writer, self.sink_factory)
            except Exception as exc:
                if classify(exc) is not Fault.transient or time.monotonic() >= deadline:
                    raise
                if self._stop.is_set():
                    return None
                attempt += 1
                why = f"database unavailable at start ({reason_of(exc)})"
                await self._retry_later(attempt, why)

    async def _retry_later(self, attempt: int, why: str) -> None:
        """Count a database retry, say why, and back off before attempt `attempt + 1`."""
        self.retries += 1
        self.metrics.retry()
        delay = backoff_delay(attempt)
        log.warning("%s; retry %d in %.1f s", why, attempt, delay)
        await back_off(delay, self._stop, self.metrics)

    async def _in_writer(self, call: Callable[..., Any], *args: Any) -> Any:
        return await run_in(self._writer, call, *args)

    async def _in_cleaner(self, call: Callable[..., Any], *args: Any) -> Any:
        return await run_in(self._cleaner, call, *args)

    async def _close(self, sink: Sink) -> None:
        try:
            await self._in_writer(sink.close)
        finally:
            self._shutdown_threads()

    def _shutdown_threads(self) -> None:
        shut_down(self._writer, self._cleaner)

    def _kafka_consumer(self) -> Any:
        from aiokafka import AIOKafkaConsumer

        return AIOKafkaConsumer(
            **self.endpoint.client_options(),
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.options.batch_size,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=min(self.options.batch_wait_ms, self._fetch_wait_ms()),
            # A rebalance waits at most max_poll_interval for members to rejoin: keep it short
            # (a batch takes seconds), so a new member in the group gets its partitions in
            # seconds rather than minutes. A member backing off through a longer outage does not
            # poll (see runtime.back_off): it leaves the group, and rejoins with its next poll.
            heartbeat_interval_ms=1000,
            session_timeout_ms=10_000,
            max_poll_interval_ms=60_000,
        )

    def _fetch_wait_ms(self) -> int:
        """How long a fetch may wait for records. Apache Kafka answers a fetch as soon as a
        record comes (fetch_min_bytes=1), whatever the wait. The embedded broker (tansu)
        answers only when the wait is over: records came in bursts every ~50 ms, and paced
        at 2,000 events/s p50 was ~60 ms; with 10 ms, ~51 ms. The cost: while there is
        nothing to read, a fetch every 10 ms, which the local broker and this consumer answer
        and decode; a `stream run` on it is a bounded run."""
        return EMBEDDED_FETCH_WAIT_MS if self.endpoint.embedded else 500
