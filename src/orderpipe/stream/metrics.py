"""Figures of a stream run: end-to-end latency percentiles in fixed memory."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


class LatencyHistogram:
    """Latencies (ms) counted in a fixed set of log-spaced buckets, so a consumer that runs for
    days keeps the same few kilobytes (about 2,500 buckets) however many events it sees.

    Each bucket is 1 % wider than the one below it, and a percentile is reported as the middle
    of its bucket: within 0.5 % of the exact value (nearest rank). The maximum is exact. Values
    below 0.01 ms count as 0.01 ms, above 7 days as 7 days (clock skew can make one negative).
    """

    GROWTH = 1.01
    LOWEST_MS = 0.01
    HIGHEST_MS = 7 * 24 * 3600 * 1000.0

    def __init__(self) -> None:
        size = math.ceil(math.log(self.HIGHEST_MS / self.LOWEST_MS, self.GROWTH)) + 1
        self.counts = np.zeros(size, dtype=np.int64)
        self.count = 0
        self.max_ms = 0.0

    def _buckets(self, values: np.ndarray) -> np.ndarray:
        index = np.floor(np.log(values / self.LOWEST_MS) / math.log(self.GROWTH)).astype(np.int64)
        return np.minimum(index, self.counts.size - 1)

    def add(self, latencies_ms: Sequence[float] | np.ndarray) -> None:
        values = np.clip(np.asarray(latencies_ms, dtype=float), self.LOWEST_MS, self.HIGHEST_MS)
        if values.size == 0:
            return
        self.counts += np.bincount(self._buckets(values), minlength=self.counts.size)
        self.count += int(values.size)
        self.max_ms = max(self.max_ms, float(values.max()))

    def add_repeated(self, latency_ms: float, times: int) -> None:
        """`latency_ms` counted `times` times (a batch's one figure), as `add` would."""
        if times <= 0:
            return
        values = np.clip(np.array([latency_ms], dtype=float), self.LOWEST_MS, self.HIGHEST_MS)
        self.counts[int(self._buckets(values)[0])] += times
        self.count += times
        self.max_ms = max(self.max_ms, float(values[0]))

    def percentile(self, q: float) -> float:
        """The q-th percentile (nearest rank), within 0.5 %."""
        rank = max(1, math.ceil(q / 100 * self.count))
        bucket = int(np.searchsorted(np.cumsum(self.counts), rank))
        middle = self.LOWEST_MS * self.GROWTH ** (bucket + 0.5)
        return min(middle, self.max_ms)

    def summary(self) -> dict[str, float]:
        """p50/p95/p99/max in ms; empty when nothing was counted."""
        if not self.count:
            return {}
        return {
            "p50": self.percentile(50),
            "p95": self.percentile(95),
            "p99": self.percentile(99),
            "max": self.max_ms,
        }


def latency_summary(latencies_ms: Sequence[float] | np.ndarray) -> dict[str, float]:
    """p50/p95/p99/max of a list of latencies, through the same histogram."""
    histogram = LatencyHistogram()
    histogram.add(latencies_ms)
    return histogram.summary()
