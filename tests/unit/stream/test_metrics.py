"""stream/metrics.py: latency percentiles of a stream run, in fixed memory."""

from __future__ import annotations

import numpy as np
import pytest

from orderpipe.stream.metrics import LatencyHistogram, latency_summary


def test_no_latencies_give_an_empty_summary() -> None:
    assert latency_summary([]) == {}


def test_percentiles_are_within_half_a_percent_of_the_exact_ones() -> None:
    rng = np.random.default_rng(7)
    latencies = np.concatenate([rng.lognormal(3, 1, 200_000), [0.5, 90_000.0]])
    summary = latency_summary(latencies)
    assert set(summary) == {"p50", "p95", "p99", "max"}
    for key, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        exact = np.percentile(latencies, q, method="inverted_cdf")  # nearest rank
        assert summary[key] == pytest.approx(exact, rel=0.005)
    assert summary["max"] == 90_000.0


def test_memory_does_not_grow_with_the_number_of_events() -> None:
    histogram = LatencyHistogram()
    size = histogram.counts.nbytes
    for _ in range(50):
        histogram.add(np.full(100_000, 12.5))
    assert histogram.counts.nbytes == size < 32_000
    assert histogram.count == 5_000_000
    assert histogram.summary()["p50"] == pytest.approx(12.5, rel=0.005)


def test_a_single_latency_is_every_percentile() -> None:
    summary = latency_summary([42.5])
    assert summary["max"] == 42.5
    assert all(value == pytest.approx(42.5, rel=0.005) for value in summary.values())


def test_clock_skew_and_huge_values_are_clipped_not_errors() -> None:
    summary = latency_summary([-5.0, 0.0, 1e15])
    assert summary["p50"] == pytest.approx(0.01, rel=0.01)
    assert summary["max"] == LatencyHistogram.HIGHEST_MS


def test_summary_values_are_plain_floats() -> None:
    summary = latency_summary(np.array([1, 2, 3]))
    assert all(type(value) is float for value in summary.values())


@pytest.mark.parametrize("ms", [0.0, 0.004, 3.7, 150.0, 1e12])
def test_one_figure_counted_many_times_equals_adding_it_that_many_times(ms: float) -> None:
    one, many = LatencyHistogram(), LatencyHistogram()
    one.add_repeated(ms, 20_000)
    many.add(np.full(20_000, ms))
    assert one.count == many.count and one.max_ms == many.max_ms
    assert (one.counts == many.counts).all()
    assert one.summary() == many.summary()
