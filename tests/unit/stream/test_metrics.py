"""stream/metrics.py: latency percentiles of a stream run."""

from __future__ import annotations

import numpy as np
import pytest

from orderpipe.stream.metrics import latency_summary


def test_no_latencies_give_an_empty_summary() -> None:
    assert latency_summary([]) == {}


def test_percentiles_match_numpy_on_a_known_list() -> None:
    latencies = [float(value) for value in range(1000, 0, -1)]  # unsorted on purpose
    summary = latency_summary(latencies)
    assert set(summary) == {"p50", "p95", "p99", "max"}
    for key, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        assert summary[key] == pytest.approx(np.percentile(latencies, q))
    assert summary["p50"] == pytest.approx(500.5)
    assert summary["p99"] == pytest.approx(990.01)
    assert summary["max"] == 1000.0


def test_a_single_latency_is_every_percentile() -> None:
    assert latency_summary([42.5]) == {"p50": 42.5, "p95": 42.5, "p99": 42.5, "max": 42.5}


def test_summary_values_are_plain_floats() -> None:
    summary = latency_summary(np.array([1, 2, 3]))
    assert all(type(value) is float for value in summary.values())
