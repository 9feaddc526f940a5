"""Figures of a stream run: end-to-end latency percentiles."""

from __future__ import annotations

from collections.abc import Sequence


def latency_summary(latencies: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max of end-to-end latencies in milliseconds (empty when there are none)."""
    import numpy as np

    if not len(latencies):
        return {}
    values = np.asarray(latencies, dtype=float)
    return {
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "p99": float(np.percentile(values, 99)),
        "max": float(values.max()),
    }
