"""Prometheus metrics of `stream consume`: what the consumer counts, and the HTTP endpoint.

`serve_metrics` gives a `ConsumerMetrics` (its own registry, served on a port) or a `NoMetrics`
with the same methods that does nothing, so the consumer calls them unconditionally.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from orderpipe.core.errors import UsageError

log = logging.getLogger("orderpipe.stream")

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    import numpy as np

# prometheus_client and numpy are imported only when metrics are on: `orderpipe --help` and a
# consumer without --metrics-port never load them.

PREFIX = "orderpipe_consumer"
LABELS = ("topic", "group")
STATES = ("starting", "running", "paused", "stopping")
WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
MAX_REASON_LENGTH = 60
# A safety net on top of `reason_label`: whatever the reasons look like, the series stay bounded.
MAX_REASON_LABELS = 50
OTHER_REASON = "other"

_REASON_END = re.compile(r"[:(]")


def reason_label(reason: str) -> str:
    """A dead-letter reason as a bounded label: its text before the first ':' or '(' (where the
    values start: "n_items is out of range (1-100)", "database refused the event: Duplicate…"),
    whitespace collapsed, at most MAX_REASON_LENGTH characters; "unknown" when nothing is left."""
    head = " ".join(_REASON_END.split(reason, maxsplit=1)[0].split())
    return head[:MAX_REASON_LENGTH].rstrip() or "unknown"


class ConsumerMetrics:
    """The consumer's Prometheus metrics, labelled with its topic and group, in a registry of
    its own (several consumers, or tests, in one process do not collide)."""

    def __init__(self, topic: str, group: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram

        self.registry = CollectorRegistry()
        self._labels = (topic, group)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        registry = self.registry

        def counter(name: str, doc: str, extra: Sequence[str] = ()) -> Any:
            return Counter(f"{PREFIX}_{name}", doc, (*LABELS, *extra), registry=registry)

        self._consumed = counter("events_consumed", "Messages read from Kafka.").labels(
            *self._labels
        )
        self._stored = counter("events_stored", "Events stored in the database.").labels(
            *self._labels
        )
        self._dead = counter(
            "events_dead_lettered", "Messages sent to the dead-letter topic.", ("reason",)
        )
        self._reasons: set[str] = set()
        self._batches = counter("batches", "Micro-batches stored and committed.").labels(
            *self._labels
        )
        self._retries = counter(
            "database_retries", "Batch writes retried after a transient database error."
        ).labels(*self._labels)
        self._write_seconds = Histogram(
            f"{PREFIX}_batch_write_seconds",
            "Time to write one batch to the database (upserts, scores, transaction commit).",
            LABELS,
            buckets=WRITE_BUCKETS,
            registry=registry,
        ).labels(*self._labels)
        self._latency = _BulkHistogram(
            f"{PREFIX}_end_to_end_latency_seconds",
            "From the message's Kafka timestamp until its batch is stored and committed.",
            self._labels,
            LATENCY_BUCKETS,
        )
        registry.register(self._latency)
        self._lag = Gauge(
            f"{PREFIX}_lag_messages",
            "Messages behind the end of the partition.",
            (*LABELS, "partition"),
            registry=registry,
        )
        self._state = Enum(
            f"{PREFIX}_state",
            "What the consumer is doing.",
            LABELS,
            states=list(STATES),
            registry=registry,
        ).labels(*self._labels)

    def consumed(self, n: int) -> None:
        self._consumed.inc(n)

    def stored(self, n: int) -> None:
        self._stored.inc(n)

    def dead_lettered(self, reasons: Iterable[str]) -> None:
        # Count the raw texts first: a batch of 20,000 bad messages has a handful of distinct ones.
        by_label: collections.Counter[str] = collections.Counter()
        for reason, n in collections.Counter(reasons).items():
            by_label[self._reason(reason)] += n
        for label, n in by_label.items():
            self._dead.labels(*self._labels, label).inc(n)

    def _reason(self, reason: str) -> str:
        label = reason_label(reason)
        if label not in self._reasons:
            if len(self._reasons) >= MAX_REASON_LABELS:
                return OTHER_REASON
            self._reasons.add(label)
        return label

    def batch(self, write_seconds: float) -> None:
        self._batches.inc()
        self._write_seconds.observe(max(0.0, write_seconds))

    def retry(self) -> None:
        self._retries.inc()

    def latency(self, ms_values: Sequence[float] | np.ndarray) -> None:
        self._latency.observe_ms(ms_values)

    def lag(self, partition: int, value: int) -> None:
        self._lag.labels(*self._labels, str(partition)).set(value)

    def drop_lag(self, partitions: Iterable[int]) -> None:
        """Forget the lag of partitions no longer assigned (call it on revocation)."""
        for partition in partitions:
            # Older prometheus_client releases raise KeyError for a partition never reported.
            with contextlib.suppress(KeyError):
                self._lag.remove(*self._labels, str(partition))

    def state(self, name: str) -> None:
        """One of STATES."""
        self._state.state(name)

    def serve(self, port: int, addr: str = "127.0.0.1") -> WSGIServer:
        """Serve the registry at http://addr:port/metrics from a daemon thread; port 0 picks a
        free port (see `port`). A port that cannot be used is a one-line UsageError."""
        from prometheus_client import start_http_server

        if self._server is not None:
            raise RuntimeError(f"metrics are already served on port {self.port}")
        if not 0 <= port <= 65535:
            raise UsageError(f"metrics port {port} is out of range (0-65535)")
        try:
            self._server, self._thread = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                why = "is already in use; pick another --metrics-port"
            else:
                why = f"cannot be used: {exc.strerror or exc}"
            raise UsageError(f"metrics port {port} on {addr} {why}") from None
        return self._server

    @property
    def port(self) -> int | None:
        """The port metrics are served on (the one picked for port 0), None when not serving."""
        return None if self._server is None else self._server.server_port

    def close(self) -> None:
        """Stop serving and free the port; does nothing when not serving."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> ConsumerMetrics:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class NoMetrics:
    """ConsumerMetrics' methods, doing nothing: the consumer without --metrics-port."""

    def consumed(self, n: int) -> None:
        pass

    def stored(self, n: int) -> None:
        pass

    def dead_lettered(self, reasons: Iterable[str]) -> None:
        pass

    def batch(self, write_seconds: float) -> None:
        pass

    def retry(self) -> None:
        pass

    def latency(self, ms_values: Sequence[float] | np.ndarray) -> None:
        pass

    def lag(self, partition: int, value: int) -> None:
        pass

    def drop_lag(self, partitions: Iterable[int]) -> None:
        pass

    def state(self, name: str) -> None:
        # Checked here too, so a wrong name fails without --metrics-port as well.
        if name not in STATES:
            raise ValueError(f"unknown consumer state {name!r}; one of {STATES}")

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Nothing to serve."""

    @property
    def port(self) -> int | None:
        return None

    def close(self) -> None:
        pass

    def __enter__(self) -> NoMetrics:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


Metrics = ConsumerMetrics | NoMetrics


def serve_metrics(topic: str, group: str, port: int | None, addr: str = "127.0.0.1") -> Metrics:
    """Metrics served on `port`, or NoMetrics when port is None. Close it (or use `with`)."""
    if port is None:
        return NoMetrics()
    metrics = ConsumerMetrics(topic, group)
    metrics.serve(port, addr)
    # the port a scraper needs (the one picked when 0 was asked for)
    host = f"[{addr}]" if ":" in addr else addr
    log.info("metrics served at http://%s:%d/metrics", host, metrics.port)
    return metrics


class _BulkHistogram:
    """A Prometheus histogram fed a whole batch at once: numpy counts the buckets of 20,000
    latencies in well under a millisecond, where one `Histogram.observe` each takes ~20 ms."""

    def __init__(
        self, name: str, doc: str, label_values: Sequence[str], buckets: Sequence[float]
    ) -> None:
        import numpy as np

        self.name, self.doc = name, doc
        self._label_values = list(label_values)
        self._bounds = np.asarray(buckets, dtype=float)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_ms(self, ms_values: Sequence[float] | np.ndarray) -> None:
        import numpy as np

        seconds = np.asarray(ms_values, dtype=float).ravel() / 1000.0
        # NaN/inf would poison the sum forever; a negative value (clock skew) would make it go
        # down, which rate() reads as a reset.
        seconds = np.maximum(seconds[np.isfinite(seconds)], 0.0)
        if seconds.size == 0:
            return
        # side="left": a value equal to a bound belongs to that bound's bucket (le = "<=").
        counts = np.bincount(
            np.searchsorted(self._bounds, seconds, side="left"), minlength=self._counts.size
        )
        total = float(seconds.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def describe(self) -> Iterator[Any]:
        from prometheus_client.core import HistogramMetricFamily

        yield HistogramMetricFamily(self.name, self.doc, labels=list(LABELS))

    def collect(self) -> Iterator[Any]:
        import numpy as np
        from prometheus_client.core import HistogramMetricFamily
        from prometheus_client.utils import floatToGoString

        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        edges = [floatToGoString(bound) for bound in self._bounds.tolist()] + ["+Inf"]
        family = HistogramMetricFamily(self.name, self.doc, labels=list(LABELS))
        family.add_metric(self._label_values, list(zip(edges, cumulative, strict=True)), total)
        yield family
