"""stream/observe.py: the consumer's Prometheus metrics, as a scraper reads them over HTTP."""

from __future__ import annotations

import inspect
import logging
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from orderpipe.core.errors import UsageError
from orderpipe.stream.observe import (
    LATENCY_BUCKETS,
    MAX_REASON_LABELS,
    STATES,
    ConsumerMetrics,
    NoMetrics,
    reason_label,
    serve_metrics,
)

TOPIC, GROUP = "orders-events", "g1"
LABELS = f'group="{GROUP}",topic="{TOPIC}"'
LATENCY = "orderpipe_consumer_end_to_end_latency_seconds"


@pytest.fixture
def metrics() -> Iterator[ConsumerMetrics]:
    with ConsumerMetrics(TOPIC, GROUP) as served:
        served.serve(0)
        yield served


def scrape(metrics: ConsumerMetrics) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/metrics", timeout=5) as page:
        assert page.status == 200
        return page.read().decode().splitlines()


def samples(lines: list[str], name: str) -> dict[str, float]:
    """`{labels}` -> value of the samples called exactly `name`."""
    found = {}
    for line in lines:
        if line.startswith(f"{name}{{"):
            labels, value = line[len(name) :].rsplit(" ", 1)
            found[labels] = float(value)
    return found


def labels() -> dict[str, str]:
    return {"topic": TOPIC, "group": GROUP}


def bucket_samples(registry: CollectorRegistry) -> list:
    return [
        sample
        for family in registry.collect()
        if family.name == LATENCY
        for sample in family.samples
        if sample.name.endswith("_bucket")
    ]


def test_every_method_shows_up_as_exact_samples_on_the_endpoint(metrics: ConsumerMetrics) -> None:
    metrics.state("running")
    metrics.consumed(5)
    metrics.consumed(2)
    metrics.stored(6)
    metrics.dead_lettered(["n_items is out of range (1-100)"])
    metrics.batch(0.012)
    metrics.retry()
    metrics.retry()
    metrics.latency([4.0, 5.0, 6.0, 5_000.0, 70_000.0])  # ms; 5 ms and 5 s sit on a bucket bound
    metrics.lag(0, 7)
    metrics.lag(3, 0)

    lines = set(scrape(metrics))
    expected = {
        f"orderpipe_consumer_events_consumed_total{{{LABELS}}} 7.0",
        f"orderpipe_consumer_events_stored_total{{{LABELS}}} 6.0",
        "orderpipe_consumer_events_dead_lettered_total"
        f'{{group="{GROUP}",reason="n_items is out of range",topic="{TOPIC}"}} 1.0',
        f"orderpipe_consumer_batches_total{{{LABELS}}} 1.0",
        f"orderpipe_consumer_database_retries_total{{{LABELS}}} 2.0",
        f'orderpipe_consumer_batch_write_seconds_bucket{{group="{GROUP}",le="0.01",'
        f'topic="{TOPIC}"}} 0.0',
        f'orderpipe_consumer_batch_write_seconds_bucket{{group="{GROUP}",le="0.025",'
        f'topic="{TOPIC}"}} 1.0',
        f"orderpipe_consumer_batch_write_seconds_count{{{LABELS}}} 1.0",
        f"orderpipe_consumer_batch_write_seconds_sum{{{LABELS}}} 0.012",
        f'{LATENCY}_bucket{{group="{GROUP}",le="0.005",topic="{TOPIC}"}} 2.0',
        f'{LATENCY}_bucket{{group="{GROUP}",le="0.01",topic="{TOPIC}"}} 3.0',
        f'{LATENCY}_bucket{{group="{GROUP}",le="2.5",topic="{TOPIC}"}} 3.0',
        f'{LATENCY}_bucket{{group="{GROUP}",le="5.0",topic="{TOPIC}"}} 4.0',
        f'{LATENCY}_bucket{{group="{GROUP}",le="60.0",topic="{TOPIC}"}} 4.0',
        f'{LATENCY}_bucket{{group="{GROUP}",le="+Inf",topic="{TOPIC}"}} 5.0',
        f"{LATENCY}_count{{{LABELS}}} 5.0",
        f"{LATENCY}_sum{{{LABELS}}} 75.015",
        f'orderpipe_consumer_lag_messages{{group="{GROUP}",partition="0",topic="{TOPIC}"}} 7.0',
        f'orderpipe_consumer_lag_messages{{group="{GROUP}",partition="3",topic="{TOPIC}"}} 0.0',
        f'orderpipe_consumer_state{{group="{GROUP}",orderpipe_consumer_state="running",'
        f'topic="{TOPIC}"}} 1.0',
        f'orderpipe_consumer_state{{group="{GROUP}",orderpipe_consumer_state="paused",'
        f'topic="{TOPIC}"}} 0.0',
        f"# TYPE {LATENCY} histogram",
        "# TYPE orderpipe_consumer_lag_messages gauge",
    }
    assert expected - lines == set()


def test_counters_start_at_zero_before_the_first_batch(metrics: ConsumerMetrics) -> None:
    lines = scrape(metrics)
    for name in ("events_consumed", "events_stored", "batches", "database_retries"):
        assert samples(lines, f"orderpipe_consumer_{name}_total") == {f"{{{LABELS}}}": 0.0}
    assert samples(lines, f"{LATENCY}_count") == {f"{{{LABELS}}}": 0.0}
    state = samples(lines, "orderpipe_consumer_state")
    assert state[f'{{group="{GROUP}",orderpipe_consumer_state="starting",topic="{TOPIC}"}}'] == 1


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("n_items is out of range (1-100)", "n_items is out of range"),
        ("database refused the event: Duplicate entry 'ORD-1'", "database refused the event"),
        ("missing basket_value and order_total", "missing basket_value and order_total"),
        ("undecodable (UnicodeDecodeError: byte 0xff)", "undecodable"),
        ("  spaced\n  out \t reason  ", "spaced out reason"),
        ("x" * 500, "x" * 60),
        ("", "unknown"),
        (": only a value", "unknown"),
        ("(1-100)", "unknown"),
    ],
)
def test_reason_label_keeps_the_text_before_the_values(reason: str, label: str) -> None:
    assert reason_label(reason) == label


def test_reasons_that_differ_only_in_their_values_share_one_series(
    metrics: ConsumerMetrics,
) -> None:
    metrics.dead_lettered(
        [f"database refused the event: Duplicate entry 'ORD-{n}'" for n in range(1_000)]
    )
    metrics.dead_lettered(["event_time is out of range (2000-2100)"] * 3)
    dead = samples(scrape(metrics), "orderpipe_consumer_events_dead_lettered_total")
    assert dead == {
        f'{{group="{GROUP}",reason="database refused the event",topic="{TOPIC}"}}': 1000.0,
        f'{{group="{GROUP}",reason="event_time is out of range",topic="{TOPIC}"}}': 3.0,
    }


def test_distinct_reasons_beyond_the_cap_count_as_other(metrics: ConsumerMetrics) -> None:
    metrics.dead_lettered([f"reason number {n}" for n in range(MAX_REASON_LABELS + 10)])
    metrics.dead_lettered(["reason number 0"])  # an already known label keeps its series
    dead = samples(scrape(metrics), "orderpipe_consumer_events_dead_lettered_total")
    assert len(dead) == MAX_REASON_LABELS + 1
    assert dead[f'{{group="{GROUP}",reason="other",topic="{TOPIC}"}}'] == 10.0
    assert dead[f'{{group="{GROUP}",reason="reason number 0",topic="{TOPIC}"}}'] == 2.0


def test_latency_buckets_match_prometheus_own_histogram(metrics: ConsumerMetrics) -> None:
    rng = np.random.default_rng(3)
    bounds_ms = [bound * 1000 for bound in LATENCY_BUCKETS]
    latencies_ms = np.concatenate([rng.lognormal(5, 2, 5_000), bounds_ms])
    metrics.latency(latencies_ms[:2_000])
    metrics.latency(latencies_ms[2_000:].tolist())  # a list works as well as an array

    reference_registry = CollectorRegistry()
    reference = Histogram(
        LATENCY, "", ["topic", "group"], buckets=LATENCY_BUCKETS, registry=reference_registry
    ).labels(TOPIC, GROUP)
    for value in latencies_ms:
        reference.observe(value / 1000)

    ours = {s.labels["le"]: s.value for s in bucket_samples(metrics.registry)}
    theirs = {s.labels["le"]: s.value for s in bucket_samples(reference_registry)}
    assert ours == theirs
    assert reference_registry.get_sample_value(
        f"{LATENCY}_sum", {"topic": TOPIC, "group": GROUP}
    ) == pytest.approx(metrics.registry.get_sample_value(f"{LATENCY}_sum", labels()))


def test_latency_drops_non_finite_values_and_counts_clock_skew_as_zero(
    metrics: ConsumerMetrics,
) -> None:
    metrics.latency([float("nan"), float("inf"), -250.0, 20.0])
    metrics.latency([])
    assert metrics.registry.get_sample_value(f"{LATENCY}_count", labels()) == 2
    assert metrics.registry.get_sample_value(f"{LATENCY}_sum", labels()) == pytest.approx(0.02)
    first = metrics.registry.get_sample_value(f"{LATENCY}_bucket", {**labels(), "le": "0.005"})
    assert first == 1


def test_latency_of_many_batches_adds_up() -> None:
    # speed is measured by benchmarks, not asserted here: a full batch costs ~0.5 ms, against
    # ~20 ms for Histogram.observe once per value (see the module's note)
    metrics = ConsumerMetrics(TOPIC, GROUP)
    latencies = np.random.default_rng(1).lognormal(3, 1, 20_000).tolist()
    for _ in range(5):
        metrics.latency(latencies)
    assert metrics.registry.get_sample_value(f"{LATENCY}_count", labels()) == 100_000
    total = metrics.registry.get_sample_value(f"{LATENCY}_sum", labels())
    assert total == pytest.approx(5 * sum(latencies) / 1000)


def test_a_revoked_partition_stops_reporting_lag(metrics: ConsumerMetrics) -> None:
    metrics.lag(0, 5)
    metrics.lag(1, 9)
    metrics.drop_lag([1, 7])  # 7 was never reported: nothing to drop, no error
    lag = samples(scrape(metrics), "orderpipe_consumer_lag_messages")
    assert lag == {f'{{group="{GROUP}",partition="0",topic="{TOPIC}"}}': 5.0}


def test_an_unknown_state_is_refused_with_or_without_metrics() -> None:
    for metrics in (ConsumerMetrics(TOPIC, GROUP), NoMetrics()):
        for name in STATES:
            metrics.state(name)
        with pytest.raises(ValueError):
            metrics.state("sleeping")


def test_two_consumers_in_one_process_keep_their_own_figures() -> None:
    first, second = ConsumerMetrics(TOPIC, GROUP), ConsumerMetrics(TOPIC, GROUP)
    first.consumed(3)
    name = "orderpipe_consumer_events_consumed_total"
    assert first.registry.get_sample_value(name, labels()) == 3
    assert second.registry.get_sample_value(name, labels()) == 0


def test_a_port_in_use_is_a_one_line_usage_error_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        metrics = ConsumerMetrics(TOPIC, GROUP)
        with pytest.raises(UsageError) as caught:
            metrics.serve(port)
    message = str(caught.value)
    assert str(port) in message
    assert "in use" in message
    assert "\n" not in message
    assert metrics.port is None


def test_a_second_consumer_on_the_same_port_is_a_usage_error(metrics: ConsumerMetrics) -> None:
    with pytest.raises(UsageError, match=str(metrics.port)):
        serve_metrics(TOPIC, "other-group", metrics.port)


@pytest.mark.parametrize("port", [-1, 65_536])
def test_a_port_out_of_range_is_a_usage_error(port: int) -> None:
    with pytest.raises(UsageError, match=str(port)):
        ConsumerMetrics(TOPIC, GROUP).serve(port)


def test_close_frees_the_port_and_can_be_called_twice() -> None:
    metrics = ConsumerMetrics(TOPIC, GROUP)
    # Held on purpose: a server garbage-collected would free its port by itself, hiding a leak.
    server = metrics.serve(0)
    port = metrics.port
    assert port == server.server_port
    scrape(metrics)
    metrics.close()
    metrics.close()
    assert metrics.port is None
    again = ConsumerMetrics(TOPIC, GROUP)
    again.serve(port)
    try:
        assert again.port == port
        scrape(again)
    finally:
        again.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_serving_twice_is_a_programming_error(metrics: ConsumerMetrics) -> None:
    with pytest.raises(RuntimeError, match="already served"):
        metrics.serve(0)


def test_the_address_served_is_logged_with_the_port_picked_for_0(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # port 0 bound a free port that nothing reported. (The CLI's configure_logging stops
    # orderpipe's records at its own handler: let them reach caplog's, whatever ran before.)
    monkeypatch.setattr(logging.getLogger("orderpipe"), "propagate", True)
    with (
        caplog.at_level(logging.INFO, logger="orderpipe.stream"),
        serve_metrics(TOPIC, GROUP, 0) as metrics,
    ):
        assert metrics.port
        assert f"http://127.0.0.1:{metrics.port}/metrics" in caplog.text


def test_no_port_means_no_metrics_and_nothing_served() -> None:
    with serve_metrics(TOPIC, GROUP, None) as metrics:
        assert isinstance(metrics, NoMetrics)
        assert metrics.serve(9) is None
        assert metrics.port is None


def _public(cls: type) -> dict[str, object]:
    members = {}
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") and name not in ("__enter__", "__exit__"):
            continue
        if isinstance(member, property):
            members[name] = "property"
        elif callable(member):
            members[name] = [
                (p.name, p.kind, p.default) for p in inspect.signature(member).parameters.values()
            ]
    return members


def test_no_metrics_has_the_same_public_methods_as_consumer_metrics() -> None:
    assert _public(NoMetrics) == _public(ConsumerMetrics)
    assert {"consumed", "stored", "dead_lettered", "batch", "retry", "latency", "lag"} <= set(
        _public(NoMetrics)
    )


def test_help_and_a_consumer_without_metrics_do_not_import_prometheus_client() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from orderpipe.cli import app\n"
        "from orderpipe.stream.observe import serve_metrics\n"
        "assert CliRunner().invoke(app, ['--help']).exit_code == 0\n"
        "with serve_metrics('t', 'g', None) as metrics:\n"
        "    metrics.consumed(1); metrics.latency([1.0]); metrics.dead_lettered(['x'])\n"
        "print('prometheus_client' in sys.modules)\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert ran.stdout.strip() == "False"
