"""Streaming against the real Apache Kafka + MariaDB and the embedded broker + SQLite.

Every test uses its own topic and consumer group; loads are small and bounded in time.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import text

from orderpipe.core.errors import OrderpipeError
from orderpipe.db.engine import make_engine
from orderpipe.stream.admin import collect_status
from orderpipe.stream.consumer import StreamConsumer
from orderpipe.stream.lifecycle import ConsumerOptions
from orderpipe.stream.producer import ProducerOptions, produce
from orderpipe.stream.run import run_stream
from orderpipe.stream.sink import Sink
from tests.hostile import CORPUS, POISON_MESSAGES
from tests.integration.helpers import (
    BAD,
    EVENTS,
    Backend,
    StreamData,
    consume,
    consume_process,
    counts,
    database_outage,
    dead_letters,
    new_topic,
    snapshot,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


ON_MARIADB = pytest.param("kafka", marks=[pytest.mark.kafka, pytest.mark.mysql], id="mariadb")
ON_POSTGRES = pytest.param(
    "kafka_postgres", marks=[pytest.mark.kafka, pytest.mark.postgres], id="postgres"
)


@pytest.fixture(params=["embedded", ON_MARIADB, ON_POSTGRES])
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.getfixturevalue(f"{request.param}_backend")


@pytest.fixture(params=[ON_MARIADB, ON_POSTGRES])
def server_backend(request: pytest.FixtureRequest) -> Backend:
    """Apache Kafka with each database server."""
    return request.getfixturevalue(f"{request.param}_backend")


@pytest.fixture(params=[ON_MARIADB, ON_POSTGRES])
def private_server_backend(request: pytest.FixtureRequest) -> Backend:
    """Apache Kafka with each database server, a private one of this session (that a test may
    stop: no other test uses it)."""
    return request.getfixturevalue(f"private_{request.param}_backend")


# ---------------------------------------------------------------- conservation
def test_stream_run_stores_or_dead_letters_every_event(backend: Backend, data: StreamData) -> None:
    result = asyncio.run(
        run_stream(
            backend.endpoint,
            new_topic(),
            f"g-{uuid.uuid4().hex[:6]}",
            data.raw,
            backend.sink(data.artifacts),
            kind="raw",
            consumer_options=ConsumerOptions(batch_size=700),
        )
    )
    stored = counts(backend.database_url)
    assert result.produced == EVENTS + 60 + BAD
    assert result.dead_lettered == BAD
    assert stored["table_events"] == data.valid_events == EVENTS
    assert stored["table_predictions"] == stored["table_events"]
    assert stored["orphans"] == stored["unscored"] == 0
    assert result.produce_to_stored_ms["p99"] >= result.produce_to_stored_ms["p50"] > 0
    assert result.produce_to_stored_ms["p50"] >= result.fetch_to_stored_ms["p50"] > 0


def test_clean_stream_conserves_produced_events(backend: Backend, data: StreamData) -> None:
    topic, group = new_topic(), f"g-{uuid.uuid4().hex[:6]}"
    sent = asyncio.run(produce(backend.endpoint, topic, data.clean_jsonl, kind="clean"))
    consumed = consume(backend, topic, group, data.artifacts, batch_size=500)
    stored = counts(backend.database_url)
    assert sent.sent == consumed.consumed == EVENTS  # type: ignore[attr-defined]
    assert stored["table_events"] + consumed.dead_lettered == sent.sent  # type: ignore[attr-defined]
    assert stored["table_predictions"] == stored["table_events"]


def test_max_events_stores_and_commits_exactly_that_many(
    embedded_backend: Backend, data: StreamData
) -> None:
    # a batch used to take batch_size records whatever was left: --max-events 100 stored and
    # committed a whole batch (3000), and the next consumer of the group missed none of them
    topic, group = new_topic(), f"g-{uuid.uuid4().hex[:6]}"
    sent = asyncio.run(produce(embedded_backend.endpoint, topic, data.clean_jsonl, kind="clean"))
    first = consume(embedded_backend, topic, group, data.artifacts, batch_size=1000, max_events=150)
    assert first.consumed == first.stored == 150  # type: ignore[attr-defined]
    assert counts(embedded_backend.database_url)["table_events"] == 150
    status = asyncio.run(collect_status(embedded_backend.endpoint, topic, group))
    assert sum(part.committed or 0 for part in status.partitions) == 150
    assert status.lag_total == sent.sent - 150


# ---------------------------------------------------------------- dead letters
@pytest.mark.kafka
@pytest.mark.mysql
def test_malformed_messages_reach_the_dlq_with_headers(
    kafka_backend: Backend, data: StreamData
) -> None:
    from aiokafka import AIOKafkaProducer

    topic = new_topic()
    asyncio.run(
        produce(
            kafka_backend.endpoint, topic, data.raw, kind="raw", options=ProducerOptions(limit=400)
        )
    )

    async def send_odd() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_backend.bootstrap)
        await producer.start()
        await producer.send_and_wait(topic, b'{"event_id": "\xff\xfe"}', key=b"k")
        await producer.send_and_wait(topic, b'{"event_id": "x", "order": 3}', key=b"k")
        await producer.stop()

    asyncio.run(send_odd())
    raw_lines = data.raw.read_text().splitlines()[:400]
    bad_in_first = sum(
        1
        for line in raw_lines
        if '"bad-' in line or '"event_id":null' in line or not line.startswith("{")
    )
    result = consume(kafka_backend, topic, f"g-{uuid.uuid4().hex[:6]}", data.artifacts)
    assert result.dead_lettered == bad_in_first + 2  # type: ignore[attr-defined]
    letters = asyncio.run(dead_letters(kafka_backend.bootstrap, topic, bad_in_first + 2))
    assert len(letters) == bad_in_first + 2
    errors = []
    for letter in letters:
        headers = dict(letter.headers)  # type: ignore[attr-defined]
        assert set(headers) == {"error", "source-topic", "source-partition", "source-offset"}
        assert headers["source-topic"].decode() == topic
        assert int(headers["source-offset"]) >= 0
        errors.append(headers["error"].decode())
    assert "not UTF-8 text" in errors
    assert "order must be an object (got number)" in errors


def test_stream_run_stops_on_its_own_events_not_on_a_count(
    embedded_backend: Backend, data: StreamData
) -> None:
    """Messages left on the topic used to count towards `produced`: the run stopped early."""
    topic = new_topic()
    leftovers = data.raw.read_bytes().splitlines()[2000:2400]
    asyncio.run(send_exactly(embedded_backend, topic, leftovers))
    result = asyncio.run(
        run_stream(
            embedded_backend.endpoint,
            topic,
            f"g-{uuid.uuid4().hex[:6]}",
            data.clean_jsonl,
            embedded_backend.sink(data.artifacts),
            producer_options=ProducerOptions(limit=500),
        )
    )
    assert result.produced == 500
    own = {json.loads(line)["event_id"] for line in data.clean_jsonl.read_text().splitlines()[:500]}
    engine = make_engine(embedded_backend.database_url)
    with engine.connect() as conn:
        stored = set(conn.execute(text("SELECT event_id FROM table_events")).scalars())
    engine.dispose()
    assert own <= stored  # every one of its own events, whatever was on the topic before


def test_stream_run_whose_consumer_fails_at_start_stops_its_producer(
    embedded_backend: Backend, data: StreamData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unpaced run sends while the consumer starts: a consumer that cannot start (here its
    sink) ends the run with its own error, the producer still sending is cancelled, and
    nothing is left running."""
    from orderpipe.stream import run as pipeline

    sending = asyncio.Event()
    cancelled: list[bool] = []

    async def endless_producer(*args: object, **kwargs: object) -> object:
        sending.set()
        try:
            await asyncio.Event().wait()  # a producer that never finishes on its own
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return None

    def broken_sink() -> Sink:
        raise OrderpipeError("the sink cannot open")

    monkeypatch.setattr(pipeline, "produce", endless_producer)

    async def run_and_list_tasks() -> set[asyncio.Task[object]]:
        with pytest.raises(OrderpipeError, match="the sink cannot open"):
            await run_stream(
                embedded_backend.endpoint,
                new_topic(),
                f"g-{uuid.uuid4().hex[:6]}",
                data.clean_jsonl,
                broken_sink,
                timeout=60,
            )
        assert sending.is_set()  # it was sending when the consumer failed
        return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}

    began = time.monotonic()
    assert asyncio.run(run_and_list_tasks()) == set()
    assert cancelled == [True]
    assert time.monotonic() - began < 30


def test_consumer_whose_sink_fails_while_its_clients_start_leaves_no_connection(
    embedded_backend: Backend,
) -> None:
    """The sink fails at once, while the Kafka clients are starting: whatever point their start
    had reached, nothing of them is left (a start cancelled mid-request leaked its connection's
    reader, in about half the tries; CI caught it in the test above)."""

    def broken_sink() -> Sink:
        raise OrderpipeError("the sink cannot open")

    async def run_and_list_tasks() -> set[asyncio.Task[object]]:
        consumer = StreamConsumer(
            embedded_backend.endpoint,
            new_topic(),
            f"g-{uuid.uuid4().hex[:6]}",
            broken_sink,
            options=ConsumerOptions(assign=True, database_wait=0.0),
        )
        with pytest.raises(OrderpipeError, match="the sink cannot open"):
            await consumer.run()
        return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}

    left = [asyncio.run(run_and_list_tasks()) for _ in range(20)]
    assert left == [set()] * 20


# ---------------------------------------------------------------- hostile messages
async def send_exactly(backend: Backend, topic: str, values: list[bytes]) -> None:
    """Each value as one message, byte for byte, no key (what a foreign producer may send)."""
    from aiokafka import AIOKafkaProducer

    from orderpipe.stream.topics import ensure_topic

    await ensure_topic(backend.endpoint, topic, 3)
    producer = AIOKafkaProducer(bootstrap_servers=backend.bootstrap, max_request_size=8_000_000)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, value) for value in values])
    finally:
        await producer.stop()


def poison_run(backend: Backend, data: StreamData, poison: list[bytes]) -> None:
    """Valid events with poison mixed in: the consumer ends normally, each valid event is stored
    once with one prediction, each poison message is in the DLQ."""
    valid = data.clean_jsonl.read_bytes().splitlines()[:150]
    messages = [*valid[:75], *poison, *valid[75:]]
    topic = new_topic()
    asyncio.run(send_exactly(backend, topic, messages))
    # Ends once every message is consumed (a lost one: after the idle wait, and the count fails).
    result = consume(
        backend, topic, f"g-{uuid.uuid4().hex[:6]}", data.artifacts, idle=10.0,
        max_events=len(messages), assign=True,  # no group join to wait for
    )  # fmt: skip
    assert result.consumed == len(messages)  # type: ignore[attr-defined]
    assert result.stored == 150 and result.dead_lettered == len(poison)  # type: ignore[attr-defined]
    stored = counts(backend.database_url)
    assert stored["table_events"] == stored["table_predictions"] == 150
    letters = asyncio.run(dead_letters(backend.bootstrap, topic, len(poison)))
    sources = {
        (headers["source-partition"], headers["source-offset"])
        for headers in (dict(letter.headers) for letter in letters)  # type: ignore[attr-defined]
    }
    assert len(sources) == len(poison)  # each poison message once (the DLQ is at-least-once)


def test_the_regression_corpus_never_stops_the_consumer(backend: Backend, data: StreamData) -> None:
    poison_run(backend, data, [line for line in CORPUS.values() if len(line) < 900_000])


# The broker and the database are shared by the examples on purpose (a broker and a database
# per example would cost seconds each): every example has a topic and a group of its own, its
# 150 valid events are the same ones, which the newer-wins upserts store once, and it checks
# its own consumer's counts and its own topic's dead letters. CI: 20 examples a backend.
@given(poison=st.lists(POISON_MESSAGES, min_size=1, max_size=6))
@hypothesis_settings(
    max_examples=max(20, hypothesis_settings.default.max_examples // 15),
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_poison_messages_never_stop_the_consumer(
    backend: Backend, data: StreamData, poison: list[bytes]
) -> None:
    poison_run(backend, data, poison)


# ---------------------------------------------------------------- replay, scale-out
@pytest.mark.kafka
@pytest.mark.mysql
def test_replaying_the_topic_from_offset_zero_changes_no_table(
    kafka_backend: Backend, data: StreamData
) -> None:
    topic = new_topic()
    asyncio.run(produce(kafka_backend.endpoint, topic, data.raw, kind="raw"))
    consume(kafka_backend, topic, f"g-{uuid.uuid4().hex[:6]}", data.artifacts)
    before = snapshot(kafka_backend.database_url)
    replay = consume(kafka_backend, topic, f"replay-{uuid.uuid4().hex[:6]}", data.artifacts)
    assert replay.consumed == EVENTS + 60 + BAD  # type: ignore[attr-defined]
    assert snapshot(kafka_backend.database_url) == before


@pytest.mark.kafka
@pytest.mark.mysql
def test_two_consumers_in_one_group_split_the_partitions(
    kafka_backend: Backend, data: StreamData
) -> None:
    from orderpipe.stream.topics import ensure_topic

    topic, group = new_topic(), f"g-{uuid.uuid4().hex[:6]}"
    asyncio.run(ensure_topic(kafka_backend.endpoint, topic, 4))

    async def scenario() -> tuple[object, list[object]]:
        consumers = [
            StreamConsumer(
                kafka_backend.endpoint,
                topic,
                group,
                kafka_backend.sink(data.artifacts),
                options=ConsumerOptions(batch_size=200),
            )
            for _ in range(2)
        ]
        running = [asyncio.create_task(c.run()) for c in consumers]
        async with asyncio.timeout(120):  # both members hold partitions before any event
            while not (
                all(c.assigned_partitions() for c in consumers)
                and sum(len(c.assigned_partitions()) for c in consumers) == 4
            ):
                await asyncio.sleep(0.2)
        sent = await produce(kafka_backend.endpoint, topic, data.clean_jsonl)
        async with asyncio.timeout(90):
            while sum(c.consumed for c in consumers) < sent.sent:
                await asyncio.sleep(0.2)
        for consumer in consumers:
            consumer.stop()
        return sent, list(await asyncio.gather(*running))

    sent, (first, second) = asyncio.run(scenario())
    assert first.consumed > 0 and second.consumed > 0  # type: ignore[attr-defined]
    assert first.consumed + second.consumed == sent.sent  # type: ignore[attr-defined]
    stored = counts(kafka_backend.database_url)
    assert stored["table_events"] == sent.sent  # type: ignore[attr-defined]
    assert stored["table_predictions"] == sent.sent  # type: ignore[attr-defined]


# ---------------------------------------------------------------- crashes and outages
KILL_AT = "stream.batch-stored:2"  # batches of at most 250: at most 500 of EVENTS stored


def _wait_for_rows(url: str, at_least: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stored = counts(url)["table_events"]
        except Exception:
            stored = 0
        if stored >= at_least:
            return stored
        time.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} events stored after {timeout} s")


def test_kill_9_mid_stream_then_restart_stores_each_event_once(
    server_backend: Backend, data: StreamData
) -> None:
    kafka_backend = server_backend
    topic, group = new_topic(), f"g-{uuid.uuid4().hex[:6]}"
    asyncio.run(
        produce(
            kafka_backend.endpoint,
            topic,
            data.raw,
            kind="raw",
            options=ProducerOptions(partitions=3),
        )
    )
    # Killed (-9, by its own crash point) once its second batch is stored and dead-lettered but
    # before its offsets are committed: that batch is redelivered, and work remains.
    victim = consume_process(kafka_backend, topic, group, data.artifacts, crash=KILL_AT)
    _, err = victim.communicate(timeout=120)
    assert victim.returncode == -signal.SIGKILL, err.decode()[-2000:]
    partial = counts(kafka_backend.database_url)["table_events"]
    assert 0 < partial < EVENTS
    survivor = consume_process(
        kafka_backend, topic, group, data.artifacts, "--idle-timeout", "8", "--json"
    )
    _out, err = survivor.communicate(timeout=120)
    assert survivor.returncode == 0, err.decode()
    stored = counts(kafka_backend.database_url)
    assert stored["table_events"] == EVENTS
    assert stored["table_predictions"] == EVENTS
    assert stored["orphans"] == stored["unscored"] == 0
    letters = asyncio.run(dead_letters(kafka_backend.bootstrap, topic, BAD))
    # The DLQ is at-least-once: a batch dead-lettered just before the kill is dead-lettered
    # again on redelivery; its source headers identify the copies.
    sources = {
        (dict(m.headers)["source-partition"], dict(m.headers)["source-offset"]) for m in letters
    }  # type: ignore[attr-defined]
    assert len(sources) == BAD
    valid_ids = {row[0] for row in snapshot(kafka_backend.database_url)["events"]}
    for letter in letters:
        value = (letter.value or b"").decode("utf-8", "replace")  # type: ignore[attr-defined]
        assert not any(f'"{event_id}"' in value for event_id in valid_ids)


def test_database_outage_pauses_and_resumes_without_loss(
    private_server_backend: Backend, data: StreamData, tmp_path: Path
) -> None:
    """The second half of the events is produced while the database server is down, so the
    consumer meets the outage whatever its speed: it pauses, retries, and loses nothing."""
    import json
    import threading

    kafka_backend = private_server_backend
    server = kafka_backend.server
    assert server is not None
    topic, group = new_topic(), f"g-{uuid.uuid4().hex[:6]}"
    lines = data.clean_jsonl.read_bytes().splitlines(keepends=True)
    halves = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    halves[0].write_bytes(b"".join(lines[: len(lines) // 2]))
    halves[1].write_bytes(b"".join(lines[len(lines) // 2 :]))

    def produce_half(path: Path) -> None:
        options = ProducerOptions(partitions=3)
        asyncio.run(produce(kafka_backend.endpoint, topic, path, options=options))

    produce_half(halves[0])
    process = consume_process(
        kafka_backend, topic, group, data.artifacts, "--idle-timeout", "15", "--json"
    )
    outage_log: list[tuple[str, float]] = []
    outage = threading.Thread(target=database_outage, args=(server, 3.0, outage_log))
    try:
        _wait_for_rows(kafka_backend.database_url, 250, timeout=60)
        outage.start()
        deadline = time.monotonic() + 120  # a bound on a hang, not on speed
        while len(outage_log) < 2 and outage.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [step for step, _ in outage_log][:2] == ["stopping", "down"], outage_log
        produce_half(halves[1])  # met by a consumer whose database is down
        outage.join(timeout=120)
        assert [step for step, _ in outage_log] == ["stopping", "down", "up"], outage_log
        out, err = process.communicate(timeout=180)
    finally:
        if outage.is_alive():
            outage.join(timeout=120)
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["database_retries"] > 0
    stored = counts(kafka_backend.database_url)
    assert stored["table_events"] == stored["table_predictions"] == EVENTS
    assert report["consumed"] >= EVENTS


# ---------------------------------------------------------------- the commands
def test_stream_run_command_on_the_embedded_defaults(workdir: Path) -> None:
    import json

    from typer.testing import CliRunner

    from orderpipe.cli import app

    runner = CliRunner()
    for command in (
        ["generate", "--events", "1500", "--bad-lines", "10"],
        ["etl"],
        ["train", "classification"],
    ):
        assert runner.invoke(app, command).exit_code == 0
    result = runner.invoke(app, ["stream", "run", "--source", "raw", "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["produced"] == 1500 + 30 + 10
    assert report["dead_lettered"] == 10
    assert counts("sqlite:///data/orderpipe.db")["table_predictions"] == 1500


def test_producer_skips_invalid_clean_lines_with_reasons(
    embedded_backend: Backend, data: StreamData, tmp_path: Path
) -> None:
    source = tmp_path / "mixed.jsonl"
    good = data.clean_jsonl.read_text().splitlines()[:50]
    source.write_text("\n".join([*good, "not json", '{"event_id": "x"}']) + "\n")
    result = asyncio.run(produce(embedded_backend.endpoint, new_topic(), source))
    assert (result.sent, result.skipped) == (50, 2)
    assert sum(result.skipped_by_reason.values()) == 2


def _sigterm_once_stored(
    process: subprocess.Popen[bytes], url: str, at_least: int
) -> tuple[bytes, bytes, list[str]]:
    """SIGTERM to `process` once `at_least` events are stored: its stdout, its stderr, and the
    pids of the children it had then."""
    try:
        _wait_for_rows(url, at_least, timeout=60)
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    return out, err, children


@pytest.mark.kafka
@pytest.mark.mysql
def test_sigterm_finishes_the_batch_and_exits_0(kafka_backend: Backend, data: StreamData) -> None:
    topic, group = new_topic(), f"g-{uuid.uuid4().hex[:6]}"
    asyncio.run(produce(kafka_backend.endpoint, topic, data.clean_jsonl))
    process = consume_process(kafka_backend, topic, group, data.artifacts, "--json")
    out, err, _children = _sigterm_once_stored(process, kafka_backend.database_url, 250)
    assert process.returncode == 0, err.decode()
    import json

    first = json.loads(out)
    rest = consume(kafka_backend, topic, group, data.artifacts)
    # committed offsets match stored work: the restart reads exactly what was left
    assert first["consumed"] + rest.consumed == EVENTS  # type: ignore[attr-defined]
    assert counts(kafka_backend.database_url)["table_events"] == EVENTS


def test_sigterm_stops_stream_run_cleanly(data: StreamData, tmp_path: Path) -> None:
    """SIGTERM to `stream run`: one line, exit 143, its embedded broker stopped with it, and
    every event stored has its prediction (before, it was killed where it stood, silently)."""
    database = f"sqlite:///{tmp_path}/terminated.db"
    env = {
        **os.environ,
        "ORDERPIPE_KAFKA_BOOTSTRAP_SERVERS": "embedded",
        "ORDERPIPE_KAFKA_TOPIC": new_topic(),
        "ORDERPIPE_DATABASE_URL": database,
        "ORDERPIPE_ARTIFACTS_DIR": str(data.artifacts),
    }
    command = ["stream", "run", "--input", str(data.clean_jsonl), "--rate", "300"]
    process = subprocess.Popen(
        [sys.executable, "-m", "orderpipe", *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _out, err, children = _sigterm_once_stored(process, database, 100)
    assert process.returncode == 143, err.decode()
    assert "stopped by SIGTERM" in err.decode() and "Traceback" not in err.decode()
    assert children and not any(Path(f"/proc/{child}").exists() for child in children)
    stored = counts(database)
    assert 100 <= stored["table_events"] < EVENTS
    assert stored["table_predictions"] == stored["table_events"]


def test_kill_9_on_the_embedded_broker_and_sqlite(data: StreamData, tmp_path: Path) -> None:
    """The crash test on the embedded defaults: a broker of its own (`orderpipe broker`)."""
    from orderpipe.stream.broker import free_port, metadata_answers

    port = free_port()
    broker = subprocess.Popen(
        [sys.executable, "-m", "orderpipe", "broker", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not metadata_answers(f"127.0.0.1:{port}") and time.monotonic() < deadline:
            time.sleep(0.2)
        backend = Backend(f"127.0.0.1:{port}", f"sqlite:///{tmp_path}/crash.db", embedded=True)
        topic, group = new_topic(), f"g-{uuid.uuid4().hex[:6]}"
        asyncio.run(produce(backend.endpoint, topic, data.raw, kind="raw"))
        victim = consume_process(backend, topic, group, data.artifacts, crash=KILL_AT)
        _, err = victim.communicate(timeout=120)
        assert victim.returncode == -signal.SIGKILL, err.decode()[-2000:]
        assert 0 < counts(backend.database_url)["table_events"] < EVENTS
        survivor = consume_process(
            backend, topic, group, data.artifacts, "--idle-timeout", "10", "--json"
        )
        _, err = survivor.communicate(timeout=180)
        assert survivor.returncode == 0, err.decode()
        stored = counts(backend.database_url)
        assert stored["table_events"] == stored["table_predictions"] == EVENTS
        assert stored["orphans"] == stored["unscored"] == 0
    finally:
        broker.terminate()
        broker.wait(timeout=10)
