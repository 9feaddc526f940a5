"""`stream status` and `stream dlq replay` against the real Apache Kafka and the embedded broker.

Every test makes its own topic, dead letters and groups (topics are deleted afterwards on Apache
Kafka); the commands run through the CLI with --json.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from orderpipe.cli import app
from orderpipe.db.engine import make_engine
from orderpipe.etl.run import run_etl
from orderpipe.generate.dirt import Dirt
from orderpipe.generate.writer import generate_events
from orderpipe.ml.train import run_train
from orderpipe.stream.broker import EmbeddedBroker, free_port
from orderpipe.stream.consumer import StreamConsumer
from orderpipe.stream.kafka import KafkaEndpoint
from orderpipe.stream.lifecycle import ConsumerOptions
from orderpipe.stream.messages import DeadLetter, dead_letter_headers
from orderpipe.stream.producer import ProducerOptions, produce
from orderpipe.stream.sink import DatabaseSink
from orderpipe.stream.topics import ensure_topic
from orderpipe.table.export import export_dataset
from tests.factories import layout_under

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# ---------------------------------------------------------------- helpers
@dataclass(frozen=True)
class Stream:
    """A broker, a topic (its DLQ is `<topic>.dlq`) and the consumer group of the commands."""

    bootstrap: str
    topic: str
    group: str

    @property
    def dlq(self) -> str:
        return f"{self.topic}.dlq"

    def run(self, *args: str) -> Any:
        env = {
            "COLUMNS": "200",
            "NO_COLOR": "1",
            "TERM": "dumb",
            "ORDERPIPE_ECO_ENABLED": "false",
            "ORDERPIPE_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "ORDERPIPE_KAFKA_TOPIC": self.topic,
            "ORDERPIPE_KAFKA_GROUP_ID": self.group,
        }
        return CliRunner(env=env).invoke(app, list(args))

    def report(self, *args: str) -> dict[str, Any]:
        """The command's --json object (it must succeed)."""
        result = self.run(*args, "--json")
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)


def new_stream(bootstrap: str) -> Stream:
    return Stream(bootstrap, f"admin-{uuid.uuid4().hex[:10]}", f"g-{uuid.uuid4().hex[:6]}")


@pytest.fixture
def on_kafka(kafka_bootstrap: str, workdir: Path) -> Iterator[Stream]:
    stream = new_stream(kafka_bootstrap)
    yield stream
    asyncio.run(delete_topics(kafka_bootstrap, [stream.topic, stream.dlq]))


@pytest.fixture
def embedded(workdir: Path) -> Iterator[str]:
    broker = EmbeddedBroker()
    try:
        yield broker.start()
    finally:
        broker.stop()


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        if gone := [name for name in names if name in existing]:
            await admin.delete_topics(gone)
    finally:
        await admin.close()


async def topic_names(bootstrap: str) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def send_batches(
    bootstrap: str, topic: str, partition: int, messages: list[tuple[Any, ...]], per_batch: int = 5
) -> None:
    """(key, value[, headers]) messages, `per_batch` per record batch (tansu counts batches)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for first in range(0, len(messages), per_batch):
            batch = producer.create_batch()
            for key, value, *headers in messages[first : first + per_batch]:
                batch.append(
                    key=key, value=value, timestamp=None, headers=headers[0] if headers else None
                )
            batch.close()
            await (await producer.send_batch(batch, topic, partition=partition))
    finally:
        await producer.stop()


async def fill(stream: Stream, sizes: dict[int, int]) -> None:
    """The topic (and its DLQ) with `sizes[p]` messages in partition p, five per batch."""
    await ensure_topic(KafkaEndpoint(stream.bootstrap), stream.topic, len(sizes))
    for partition, size in sizes.items():
        messages = [(b"k%d" % i, b"event %d of %d" % (i, partition)) for i in range(size)]
        await send_batches(stream.bootstrap, stream.topic, partition, messages)


@dataclass(frozen=True)
class Origin:
    topic: str
    partition: int
    offset: int


async def dead_letter(stream: Stream, reasons: list[str], partition: int = 0) -> list[bytes]:
    """One dead letter per reason in the DLQ (contract headers), in batches; returns values."""
    await ensure_topic(KafkaEndpoint(stream.bootstrap), stream.topic, 2)
    tag = uuid.uuid4().hex[:6]
    values = [b"dead %s %d" % (tag.encode(), i) for i in range(len(reasons))]
    letters = [
        (
            b"key-%d" % i,
            value,
            dead_letter_headers(DeadLetter(Origin(stream.topic, 0, i), reason)),
        )
        for i, (reason, value) in enumerate(zip(reasons, values, strict=True))
    ]
    await send_batches(stream.bootstrap, stream.dlq, partition, letters)
    return values


async def commit(stream: Stream, offsets: dict[int, int]) -> None:
    """What a consumer of the group does after storing: commit per-partition offsets."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=stream.bootstrap, group_id=stream.group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = {TopicPartition(stream.topic, p): o for p, o in offsets.items()}
        consumer.assign(list(partitions))
        await consumer.commit(partitions)
    finally:
        await consumer.stop()


async def messages_of(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """Every (key, value) of an Apache Kafka topic (whose end offsets are exact)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in range(2)]
        ends = await consumer.end_offsets(partitions)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        found: list[tuple[bytes | None, bytes | None]] = []
        reads = 0  # a bound on a hang: every record is in reach after a few reads
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            reads += 1
            assert reads <= 120, f"{topic}: positions stuck below the end offsets {ends}"
            batch = await consumer.getmany(timeout_ms=1000)
            found += [(r.key, r.value) for part in batch.values() for r in part]
        return found
    finally:
        await consumer.stop()


async def replay_group_offsets(stream: Stream) -> list[int]:
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=stream.bootstrap)
    await admin.start()
    try:
        partitions = [TopicPartition(stream.dlq, p) for p in range(2)]
        answer = await admin.list_consumer_group_offsets(
            f"{stream.group}.dlq-replay", partitions=partitions
        )
        return [answer[tp].offset for tp in partitions]
    finally:
        await admin.close()


def by_partition(status: dict[str, Any]) -> dict[int, tuple[int | None, int, int]]:
    return {p["partition"]: (p["committed"], p["end"], p["lag"]) for p in status["partitions"]}


DB_REFUSED = "database refused the event: (1406, \"Data too long for column 'country'\")"


# ---------------------------------------------------------------- status
@pytest.mark.kafka
def test_status_shows_the_exact_lag_after_a_consumer_committed_part_of_the_topic(
    on_kafka: Stream,
) -> None:
    asyncio.run(fill(on_kafka, {0: 12, 1: 7, 2: 0}))
    asyncio.run(commit(on_kafka, {0: 9}))
    status = on_kafka.report("stream", "status")
    assert by_partition(status) == {0: (9, 12, 3), 1: (None, 7, 7), 2: (None, 0, 0)}
    assert (status["end_total"], status["lag_total"]) == (19, 10)
    assert status["group_has_offsets"] and status["exact"]
    assert status["dlq"]["exists"] and status["dlq"]["messages"] == 0
    human = on_kafka.run("stream", "status").stdout
    assert "none" in human  # partitions 1 and 2: no committed offset


@pytest.mark.kafka
def test_status_counts_the_top_ten_reasons_of_the_dead_letters(on_kafka: Stream) -> None:
    rare = [f"rare {i:02d}" for i in range(11)]
    rare[0] += " [/b] [red]"  # a header is text, never markup
    reasons = ["not UTF-8 text"] * 6 + [DB_REFUSED] * 4 + rare
    asyncio.run(dead_letter(on_kafka, reasons))
    dlq = on_kafka.report("stream", "status")["dlq"]
    assert (dlq["messages"], dlq["scanned"], dlq["capped"]) == (21, 21, False)
    assert list(dlq["reasons"].items())[:2] == [("not UTF-8 text", 6), (DB_REFUSED, 4)]
    assert len(dlq["reasons"]) == 10
    assert dlq["other_reasons"] == 3  # rare 08, 09 and 10
    assert "rare 00 [/b] [red]" in on_kafka.run("stream", "status").stdout
    capped = on_kafka.report("stream", "status", "--dlq-scan", "5")["dlq"]
    assert (capped["messages"], capped["scanned"], capped["capped"]) == (21, 5, True)
    assert capped["reasons"] == {f"rare {i:02d}": 1 for i in range(6, 11)}  # the newest five
    human = on_kafka.run("stream", "status", "--dlq-scan", "5").stdout
    assert "5 of 21 (--dlq-scan 5: the newest)" in human


@pytest.mark.kafka
def test_status_of_a_missing_topic_or_group_is_zero_and_creates_nothing(
    on_kafka: Stream,
) -> None:
    result = on_kafka.run("stream", "status")
    assert result.exit_code == 0, result.stderr
    assert "does not exist" in result.stdout and "Traceback" not in result.stderr
    status = on_kafka.report("stream", "status")
    assert (status["topic_exists"], status["partitions"], status["lag_total"]) == (False, [], 0)
    assert (status["dlq"]["exists"], status["dlq"]["messages"]) == (False, 0)
    replay = on_kafka.report("stream", "dlq", "replay")
    assert (replay["dlq_exists"], replay["read"], replay["sent"]) == (False, 0, 0)
    names = asyncio.run(topic_names(on_kafka.bootstrap))
    assert on_kafka.topic not in names and on_kafka.dlq not in names  # no auto-creation
    asyncio.run(fill(on_kafka, {0: 3}))
    fresh = on_kafka.run("stream", "status")
    assert "no committed offset" in fresh.stdout
    assert by_partition(on_kafka.report("stream", "status")) == {0: (None, 3, 3)}


# ---------------------------------------------------------------- replay
@pytest.mark.kafka
def test_a_dry_run_counts_by_reason_and_sends_and_commits_nothing(on_kafka: Stream) -> None:
    asyncio.run(dead_letter(on_kafka, ["not UTF-8 text"] * 3 + [DB_REFUSED] * 2))
    dry = on_kafka.report("stream", "dlq", "replay", "--dry-run")
    assert (dry["read"], dry["matched"], dry["sent"], dry["dry_run"]) == (5, 5, 0, True)
    assert dry["by_reason"] == {"not UTF-8 text": 3, DB_REFUSED: 2}
    filtered = on_kafka.report("stream", "dlq", "replay", "--dry-run", "--reason", "DATABASE")
    assert (filtered["matched"], filtered["passed_over"]) == (2, 3)
    assert asyncio.run(messages_of(on_kafka.bootstrap, on_kafka.topic)) == []
    assert asyncio.run(replay_group_offsets(on_kafka)) == [-1, -1]  # nothing committed
    human = on_kafka.run("stream", "dlq", "replay", "--dry-run").stdout
    assert "would send" in human


@pytest.mark.kafka
def test_replay_with_a_reason_sends_only_those_letters_back_with_their_keys(
    on_kafka: Stream,
) -> None:
    values = asyncio.run(dead_letter(on_kafka, ["not UTF-8 text", DB_REFUSED] * 3))
    replay = on_kafka.report("stream", "dlq", "replay", "--reason", "database refused")
    assert (replay["read"], replay["matched"], replay["sent"]) == (6, 3, 3)
    assert replay["passed_over"] == 3 and replay["sent_to"] == {on_kafka.topic: 3}
    sent = asyncio.run(messages_of(on_kafka.bootstrap, on_kafka.topic))
    assert sorted(sent) == [(b"key-%d" % i, values[i]) for i in (1, 3, 5)]
    # the letters passed over are marked read too: only --from-beginning offers them again
    assert on_kafka.report("stream", "dlq", "replay")["read"] == 0
    again = on_kafka.report("stream", "dlq", "replay", "--from-beginning", "--reason", "utf-8")
    assert (again["read"], again["sent"]) == (6, 3)


@pytest.mark.kafka
def test_a_second_replay_sends_only_new_dead_letters(on_kafka: Stream) -> None:
    asyncio.run(dead_letter(on_kafka, [DB_REFUSED] * 5))
    first = on_kafka.report("stream", "dlq", "replay", "--limit", "2")
    assert (first["sent"], first["limited"]) == (2, True)
    rest = on_kafka.report("stream", "dlq", "replay")
    assert (rest["read"], rest["sent"], rest["limited"]) == (3, 3, False)
    assert asyncio.run(replay_group_offsets(on_kafka)) == [5, -1]
    nothing = on_kafka.report("stream", "dlq", "replay")
    assert (nothing["read"], nothing["sent"]) == (0, 0)
    asyncio.run(dead_letter(on_kafka, ["not UTF-8 text"] * 2, partition=1))
    new = on_kafka.report("stream", "dlq", "replay")
    assert (new["read"], new["sent"]) == (2, 2)
    assert len(asyncio.run(messages_of(on_kafka.bootstrap, on_kafka.topic))) == 7


# ---------------------------------------------------------------- unreachable broker
@pytest.mark.parametrize("command", [["stream", "status"], ["stream", "dlq", "replay"]])
def test_an_unreachable_broker_is_one_line_and_exit_1(workdir: Path, command: list[str]) -> None:
    port = free_port()
    result = Stream(f"127.0.0.1:{port}", "orders", "g").run(*command)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: cannot connect to Kafka at 127.0.0.1:{port} (PLAINTEXT)")


# ---------------------------------------------------------------- the embedded broker (tansu)
def test_on_the_embedded_broker_lag_and_replay_count_whole_batches(embedded: str) -> None:
    """tansu's ListOffsets answers the last batch's base offset + 1; the commands do not."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    stream = new_stream(embedded)
    asyncio.run(fill(stream, {0: 12, 1: 7}))  # batches of 5: bases 0, 5, 10 and 0, 5
    asyncio.run(dead_letter(stream, ["not UTF-8 text"] * 4 + [DB_REFUSED] * 2))

    async def listed_ends() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=embedded)
        await consumer.start()
        try:
            partitions = [TopicPartition(stream.topic, p) for p in (0, 1)]
            return {tp.partition: o for tp, o in (await consumer.end_offsets(partitions)).items()}
        finally:
            await consumer.stop()

    assert asyncio.run(listed_ends()) == {0: 11, 1: 6}  # the quirk this test is about
    asyncio.run(commit(stream, {0: 9}))
    status = stream.report("stream", "status")
    assert by_partition(status) == {0: (9, 12, 3), 1: (None, 7, 7)}
    assert status["exact"] and status["dlq"]["messages"] == 6
    assert status["dlq"]["reasons"] == {"not UTF-8 text": 4, DB_REFUSED: 2}
    replay = stream.report("stream", "dlq", "replay")
    assert (replay["read"], replay["sent"]) == (6, 6)
    assert stream.report("stream", "dlq", "replay")["sent"] == 0
    assert stream.report("stream", "status")["end_total"] == 19 + 6


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(raw events with bad lines, the clean JSON Lines, artifacts with a classifier)."""
    root = tmp_path_factory.mktemp("admin")
    raw = generate_events(root / "raw.jsonl", 300, seed=5, dirt=Dirt(bad_lines=8)).output
    paths = layout_under(root)
    run_etl(raw, paths)
    run_train("classification", paths.table, root / "artifacts", seed=11)
    return (
        raw,
        export_dataset(paths.table, paths.export("jsonl"), "jsonl").output,
        root / "artifacts",
    )


def assigned_consumer(
    stream: Stream, url: str, artifacts: Path, idle_timeout: float = 2.0
) -> StreamConsumer:
    """A consumer of `stream` on the embedded broker that stores into `url`, its partitions
    assigned (no group wait)."""
    return StreamConsumer(
        KafkaEndpoint(stream.bootstrap, embedded=True),
        stream.topic,
        stream.group,
        partial(DatabaseSink, url, artifacts),
        options=ConsumerOptions(idle_timeout=idle_timeout, assign=True),
    )


def test_replaying_a_fixed_dead_letter_twice_stores_its_event_once(
    embedded: str, trained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """The real consumer writes the DLQ; a letter whose cause was fixed is replayed twice."""
    raw, clean, artifacts = trained
    stream = new_stream(embedded)
    url = f"sqlite:///{tmp_path}/replay.db"
    endpoint = KafkaEndpoint(embedded, embedded=True)

    def consume() -> Any:
        return asyncio.run(assigned_consumer(stream, url, artifacts).run())

    def events() -> list[tuple[Any, ...]]:
        engine = make_engine(url)
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT e.event_id, p.return_proba FROM table_events e "
                    "JOIN table_predictions p ON p.event_id = e.event_id ORDER BY e.event_id"
                )
            ).all()
        engine.dispose()
        return [tuple(row) for row in rows]

    sent = asyncio.run(
        produce(endpoint, stream.topic, raw, kind="raw", options=ProducerOptions(partitions=2))
    )
    first = consume()
    assert first.dead_lettered > 0  # type: ignore[attr-defined]
    status = stream.report("stream", "status")
    assert status["lag_total"] == 0 and status["end_total"] == sent.sent
    dlq = status["dlq"]
    assert dlq["messages"] == first.dead_lettered  # type: ignore[attr-defined]
    assert sum(dlq["reasons"].values()) + dlq["other_reasons"] == dlq["messages"]

    # a clean event the database once refused, for a cause fixed since
    record = json.loads(clean.read_text().splitlines()[0])
    record["event_id"] = "evt-replayed-0001"
    letter = (b"ORD-replayed", json.dumps(record).encode())
    headers = dead_letter_headers(DeadLetter(Origin(stream.topic, 0, 0), DB_REFUSED))
    asyncio.run(send_batches(embedded, stream.dlq, 0, [(*letter, headers)]))
    stored = events()

    replay = stream.report("stream", "dlq", "replay", "--reason", "database refused")
    assert (replay["sent"], replay["passed_over"]) == (1, dlq["messages"])
    consume()
    once = events()
    assert len(once) == len(stored) + 1 and "evt-replayed-0001" in {row[0] for row in once}

    again = stream.report(
        "stream", "dlq", "replay", "--from-beginning", "--reason", "database refused"
    )
    assert again["sent"] == 1
    consume()
    assert events() == once  # the upsert by event_id: the same rows, the same predictions
    assert stream.report("stream", "dlq", "replay")["read"] == 0


@pytest.mark.kafka
def test_the_report_counts_the_dead_letters_by_reason(on_kafka: Stream, workdir: Path) -> None:
    asyncio.run(dead_letter(on_kafka, ["not UTF-8 text"] * 3 + [DB_REFUSED] * 2))
    report = on_kafka.report("report")
    assert f"dead letters: 5 in {on_kafka.dlq}" in report["notes"]["stream"]
    html = (workdir / "reports" / "report.html").read_text(encoding="utf-8")
    assert f"{on_kafka.dlq}: 5 letters" in html
    assert '<td class="text">not UTF-8 text</td><td>3</td>' in html


def test_the_report_says_when_the_broker_does_not_answer(workdir: Path) -> None:
    stream = Stream(f"127.0.0.1:{free_port()}", "nowhere", "g")
    report = stream.report("report")
    [note] = [n for n in report["notes"]["stream"] if n.startswith("dead letters")]
    assert "did not answer" in note


@pytest.mark.kafka
def test_topic_create_makes_the_topic_and_its_dlq_once(on_kafka: Stream) -> None:
    first = on_kafka.report("stream", "topic", "create", "--partitions", "4")
    assert first["created"] == [on_kafka.topic, on_kafka.dlq]
    assert first["partitions"] == {on_kafka.topic: 4, on_kafka.dlq: 4}
    again = on_kafka.report("stream", "topic", "create", "--partitions", "4")
    assert again["created"] == [] and again["partitions"] == first["partitions"]
    status = on_kafka.report("stream", "status")  # a consumer group can start on it now
    assert status["topic_exists"] and len(status["partitions"]) == 4


@pytest.mark.kafka
def test_topic_create_says_when_the_broker_refuses(on_kafka: Stream) -> None:
    # one broker cannot hold three copies: Kafka answers with an error for each topic
    refused = on_kafka.run("stream", "topic", "create", "--replication-factor", "3")
    assert refused.exit_code == 1
    [line] = refused.stderr.strip().splitlines()[-1:]
    assert "refused to create the topic" in line and "Traceback" not in refused.stderr


def test_on_a_backlog_the_consumer_reports_its_own_latency_beside_the_backlog_age(
    embedded: str, trained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Produce, wait, then consume: produce -> stored is the backlog's age; fetch -> stored
    and the rate count only the consumer's work, not its start-up or its idle wait."""
    import time

    _, clean, artifacts = trained
    stream = new_stream(embedded)
    endpoint = KafkaEndpoint(embedded, embedded=True)
    sent = asyncio.run(produce(endpoint, stream.topic, clean, options=ProducerOptions()))
    time.sleep(3.0)
    consumer = assigned_consumer(stream, f"sqlite:///{tmp_path}/backlog.db", artifacts)
    result = asyncio.run(consumer.run())
    assert result.consumed == sent.sent > 0
    assert result.produce_to_stored_ms["p50"] >= 3000  # the backlog waited 3 s
    # Each event's produce -> stored is its fetch -> stored plus the >= 3 s it waited before the
    # consumer began: so is each percentile (within the histogram's 0.5 %), whatever the speed.
    own, age = result.fetch_to_stored_ms, result.produce_to_stored_ms
    assert age["p50"] >= 0.99 * (own["p50"] + 3000), (own, age)
    assert age["max"] >= own["max"] + 3000, (own, age)
    assert 0 < result.busy_seconds <= result.seconds - 2.0  # not the 2 s idle wait


def stored_events(url: str) -> int:
    """Events in the tables (0 before the consumer created them)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT COUNT(*) FROM table_events")).scalar() or 0)
    except Exception:  # no table yet
        return 0
    finally:
        engine.dispose()


def test_the_consumer_rate_leaves_out_a_quiet_spell_between_two_bursts(
    embedded: str, trained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, clean, artifacts = trained
    lines = clean.read_text().splitlines(keepends=True)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("".join(lines[: len(lines) // 2]))
    second.write_text("".join(lines[len(lines) // 2 :]))
    stream = new_stream(embedded)
    endpoint = KafkaEndpoint(embedded, embedded=True)

    url = f"sqlite:///{tmp_path}/bursts.db"

    async def bursts() -> Any:
        sent = await produce(endpoint, stream.topic, first, options=ProducerOptions())
        consumer = assigned_consumer(stream, url, artifacts, 4.0)
        running = asyncio.create_task(consumer.run())
        while stored_events(url) < sent.sent:  # the first burst stored (observed, not assumed)
            assert not running.done(), running
            await asyncio.sleep(0.05)
        await asyncio.sleep(3.0)  # the quiet spell under test: nothing comes for 3 s
        await produce(endpoint, stream.topic, second, options=ProducerOptions())
        return await running

    result = asyncio.run(bursts())
    assert result.consumed == len(lines)
    # the 3 s quiet spell (begun once the first burst was stored) and the 4 s idle wait at the
    # end are not work, however long the two bursts took
    assert 0 < result.busy_seconds <= result.seconds - 7.0
