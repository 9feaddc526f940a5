"""Chaos against the real Apache Kafka + MariaDB: consumers killed, the database stopped, a
privilege revoked mid-stream. Valid events are stored once with one prediction, nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import polars as pl
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from orderpipe.db.engine import create_tables, make_engine
from orderpipe.etl.run import run_etl
from orderpipe.stream.kafka import KafkaEndpoint
from orderpipe.stream.topics import ensure_topic
from orderpipe.table.read import read_clean_dataset
from tests.factories import layout_under
from tests.hostile import CORPUS
from tests.integration.helpers import (
    Backend,
    StreamData,
    consume_process,
    counts,
    database_outage,
    new_topic,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.kafka, pytest.mark.mysql]

# Hostile lines added to the generator's own bad lines: each must reach the DLQ. Left out: the
# 3 MB line and the lone carriage return, which the producer skips (too large, empty).
HOSTILE = [name for name in CORPUS if name not in ("3 MB category", "carriage return only")]
CONSUMERS = 3
PARTITIONS = 6
PRODUCE_SECONDS = 30  # the paced producer's run; kills and the outage happen meanwhile
KILL_EVERY = 4.0
OUTAGE_AFTER, OUTAGE_SECONDS = 10.0, 7.0
CHAOS_SEED = 9


# ---------------------------------------------------------------- processes
class Drained:
    """A subprocess whose stdout and stderr are read by threads: a full pipe cannot block it."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.started = time.monotonic()
        self._out: list[bytes] = []
        self._err: list[bytes] = []
        self._readers = [
            threading.Thread(target=self._drain, args=(pipe, into), daemon=True)
            for pipe, into in ((process.stdout, self._out), (process.stderr, self._err))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _drain(pipe: IO[bytes] | None, into: list[bytes]) -> None:
        if pipe is not None:  # chunk by chunk: what a running process wrote so far is readable
            for chunk in iter(lambda: pipe.read1(65_536), b""):  # type: ignore[attr-defined]
                into.append(chunk)

    def wait(self, timeout: float) -> int:
        """The exit code; raises subprocess.TimeoutExpired when the process is still running."""
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)

    @property
    def stdout(self) -> str:
        return b"".join(self._out).decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        return b"".join(self._err).decode("utf-8", "replace")


def _producer_process(bootstrap: str, topic: str, source: Path, rate: float) -> Drained:
    env = {
        **os.environ,
        "ORDERPIPE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ORDERPIPE_KAFKA_TOPIC": topic,
    }
    return Drained(
        subprocess.Popen(
            [
                *(sys.executable, "-m", "orderpipe", "stream", "produce"),
                *("--input", str(source), "--source", "raw", "--rate", f"{rate:.1f}"),
                *("--partitions", str(PARTITIONS), "--json"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    )


# ---------------------------------------------------------------- Kafka views
async def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Per partition of `topic`, the offset after its last message ({} when it does not exist)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [
        TopicPartition(topic, p["partition"])
        for t in described
        if t["topic"] == topic and not t["error_code"]
        for p in t["partitions"]
    ]
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def _committed(bootstrap: str, topic: str, group: str) -> dict[int, int]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: max(meta.offset, 0) for tp, meta in offsets.items() if tp.topic == topic}


def uncommitted(bootstrap: str, topic: str, group: str) -> int:
    """Messages of `topic` beyond the group's committed offsets (stored or dead-lettered)."""

    async def both() -> int:
        ends = await _end_offsets(bootstrap, topic)
        assert ends, f"topic {topic} has no partitions"
        committed = await _committed(bootstrap, topic, group)
        return sum(end - committed.get(partition, 0) for partition, end in ends.items())

    return asyncio.run(both())


def committed_total(bootstrap: str, topic: str, group: str) -> int:
    return sum(asyncio.run(_committed(bootstrap, topic, group)).values())


async def _read_to_end(bootstrap: str, topic: str) -> list[Any]:
    """Every record of `topic`, up to the end offsets it has now."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    ends = await _end_offsets(bootstrap, topic)
    # A group of its own that commits nothing: aiokafka's group-less consumer raises
    # CancelledError from stop() once partitions were assigned to it.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"read-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        partitions = [TopicPartition(topic, p) for p in ends]
        if not partitions:
            return records
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            positions = {tp.partition: await consumer.position(tp) for tp in partitions}
            if all(positions[p] >= end for p, end in ends.items()):
                break
            batch = await consumer.getmany(timeout_ms=500)
            records.extend(r for part in batch.values() for r in part)
        else:
            raise AssertionError(f"{topic} not read to its end {ends} within 30 s")
    finally:
        await consumer.stop()
    return records


@dataclass(frozen=True)
class DeadLetters:
    """A DLQ read to its end: one letter per source message (the DLQ is at-least-once)."""

    by_source: dict[tuple[int, int], Any]
    copies: int
    source_topics: set[str]

    @property
    def reasons(self) -> Counter[str]:
        return Counter(dict(r.headers)["error"].decode() for r in self.by_source.values())


def read_dead_letters(bootstrap: str, topic: str) -> DeadLetters:
    letters = asyncio.run(_read_to_end(bootstrap, f"{topic}.dlq"))
    by_source: dict[tuple[int, int], Any] = {}
    topics: set[str] = set()
    for letter in letters:
        headers = dict(letter.headers)
        topics.add(headers["source-topic"].decode())
        source = (int(headers["source-partition"]), int(headers["source-offset"]))
        by_source.setdefault(source, letter)
    return DeadLetters(by_source, len(letters), topics)


# ---------------------------------------------------------------- the database
def stored_events(url: str) -> tuple[list[str], dict[str, int]]:
    """Every stored event_id, and the events whose prediction count is not exactly one."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ids = list(conn.execute(text("SELECT event_id FROM table_events")).scalars())
            not_one = dict(
                conn.execute(
                    text(
                        "SELECT e.event_id, COUNT(p.event_id) FROM table_events e "
                        "LEFT JOIN table_predictions p ON p.event_id = e.event_id "
                        "GROUP BY e.event_id HAVING COUNT(p.event_id) <> 1"
                    )
                ).all()
            )
    finally:
        engine.dispose()
    return ids, not_one


# ---------------------------------------------------------------- chaos
@dataclass(frozen=True)
class ChaosInput:
    raw: Path
    lines: int
    valid_ids: frozenset[str]
    malformed: list[bytes]  # what etl quarantines, byte for byte: the DLQ must hold exactly these


def chaos_input(stream: StreamData, root: Path) -> ChaosInput:
    """The generator's raw file (its own bad lines and duplicates) with hostile lines spread in;
    the expected outcome is what the batch etl makes of the same file."""
    lines = stream.raw.read_bytes().splitlines()
    step = len(lines) // (len(HOSTILE) + 1)
    for i, name in enumerate(HOSTILE, start=1):
        lines.insert(i * step + i, CORPUS[name])  # never first: a leading BOM would be dropped
    raw = root / "chaos.jsonl"
    raw.write_bytes(b"\n".join(lines) + b"\n")
    result = run_etl(raw, layout_under(root / "etl"))
    clean = read_clean_dataset(result.outputs["table"])
    rejected = pl.read_ndjson(result.outputs["rejected"])
    malformed = [
        line.encode() if line is not None else base64.b64decode(encoded)
        for line, encoded in rejected.select("raw", "raw_base64").iter_rows()
    ]
    assert result.lines == len(lines) and result.rejected == len(malformed)
    return ChaosInput(raw, len(lines), frozenset(clean["event_id"]), malformed)


@dataclass
class Incarnation:
    """One process in a consumer slot, and how it ended."""

    slot: int
    process: Drained
    ended: str = ""  # "killed" (by us), "exit N" (on its own), "terminated N" (our SIGTERM)
    ended_at: float = 0.0

    def end(self, how: str) -> None:
        self.ended, self.ended_at = how, time.monotonic()

    @property
    def result(self) -> dict[str, Any]:
        """The --json report of a consumer that ended cleanly, {} otherwise."""
        try:
            return json.loads(self.process.stdout)
        except ValueError:
            return {}


@dataclass
class Group:
    """`stream consume` processes of one group, one per slot; a killed one is started again."""

    launch: Callable[[], Drained]
    members: list[Incarnation] = field(default_factory=list)
    history: list[Incarnation] = field(default_factory=list)

    def start(self) -> None:
        for slot in range(CONSUMERS):
            self._launch(slot)

    def _launch(self, slot: int) -> None:
        member = Incarnation(slot, self.launch())
        if slot < len(self.members):
            self.members[slot] = member
        else:
            self.members.append(member)
        self.history.append(member)

    def kill_and_restart(self, slot: int) -> None:
        victim = self.members[slot]
        if victim.process.process.poll() is None:
            victim.process.kill()
            victim.process.wait(timeout=10)
            victim.end("killed")
        else:  # it ended on its own just before
            victim.end(f"exit {victim.process.wait(timeout=5)}")
        self._launch(slot)

    def restart_the_fallen(self) -> None:
        """A member that exited on its own is recorded and started again (as a supervisor would)."""
        for slot, member in enumerate(self.members):
            if member.process.process.poll() is not None:
                member.end(f"exit {member.process.wait(timeout=5)}")
                self._launch(slot)

    def terminate(self, timeout: float) -> None:
        """SIGTERM to every member; each must exit within `timeout` ("hung" otherwise)."""
        for member in self.members:
            if member.process.process.poll() is not None:
                member.end(f"exit {member.process.wait(timeout=5)}")
            else:
                member.process.process.send_signal(signal.SIGTERM)
        for member in self.members:
            if member.ended:
                continue
            try:
                member.end(f"terminated {member.process.wait(timeout=timeout)}")
            except subprocess.TimeoutExpired:
                member.end("hung")
                member.process.kill()

    def kill_all(self) -> None:
        for member in self.members:
            member.process.kill()
        for member in self.members:
            member.process.wait(timeout=10)

    def report(self, began: float, logs: Path) -> str:
        """One line per process (start, end, retries, its --json counts); stderr kept in `logs`."""
        logs.mkdir(exist_ok=True)
        rows = []
        for number, member in enumerate(self.history):
            err = member.process.stderr
            (logs / f"consumer-{number:02d}-slot{member.slot}.err").write_text(err)
            counted = {k: member.result.get(k) for k in ("consumed", "stored", "dead_lettered")}
            errors = [line.strip() for line in err.splitlines() if line.startswith("error:")]
            rows.append(
                f"  #{number} slot {member.slot} +{member.process.started - began:.0f}s"
                f"..+{member.ended_at - began:.0f}s: {member.ended or '?'}, "
                f"{err.count('database unavailable')} database retries"
                + (f", {counted}" if member.result else "")
                + (f", {errors[-1][:200]!r}" if errors else "")
            )
        return "\n".join(rows)


def test_chaos_kills_and_outage_store_each_valid_event_once(
    private_kafka_backend: Backend,
    data: StreamData,
    tmp_path: Path,
) -> None:
    """Three consumers of one group, one of them killed (SIGKILL) every 4 s and started again,
    MariaDB stopped for 7 s mid-way, a paced producer sending a dirty raw file meanwhile. The
    MariaDB server is the session's private one: the outage stops no server another test uses."""
    kafka_backend = private_kafka_backend
    server = kafka_backend.server
    assert server is not None
    began = time.monotonic()
    expected = chaos_input(data, tmp_path)
    bootstrap, url = kafka_backend.bootstrap, kafka_backend.database_url
    topic, group = new_topic(), f"chaos-{uuid.uuid4().hex[:6]}"
    asyncio.run(ensure_topic(KafkaEndpoint(bootstrap), topic, PARTITIONS))
    rng = random.Random(CHAOS_SEED)
    consumers = Group(
        lambda: Drained(consume_process(kafka_backend, topic, group, data.artifacts, "--json"))
    )
    outage_log: list[tuple[str, float]] = []
    outage = threading.Thread(target=database_outage, args=(server, OUTAGE_SECONDS, outage_log))
    producer: Drained | None = None
    try:
        consumers.start()
        producer = _producer_process(
            bootstrap, topic, expected.raw, expected.lines / PRODUCE_SECONDS
        )
        producing = time.monotonic()
        next_kill = producing + KILL_EVERY
        while producer.process.poll() is None:
            if (
                not outage.is_alive()
                and not outage_log
                and time.monotonic() >= producing + OUTAGE_AFTER
            ):
                outage.start()
            if time.monotonic() >= next_kill:
                consumers.kill_and_restart(rng.randrange(CONSUMERS))
                next_kill += KILL_EVERY
            consumers.restart_the_fallen()
            time.sleep(0.2)
        assert producer.wait(timeout=10) == 0, producer.stderr
        sent = json.loads(producer.stdout)
        outage.join(timeout=120)
        assert [step for step, _ in outage_log] == ["stopping", "down", "up"], outage_log
        # Done when the group has committed every message: each one stored or dead-lettered.
        # A bound on a hang, generous for a loaded machine (a stuck group fails `left == 0`).
        deadline = time.monotonic() + 300
        while (left := uncommitted(bootstrap, topic, group)) and time.monotonic() < deadline:
            consumers.restart_the_fallen()
            time.sleep(1)
        consumers.terminate(timeout=20)
    finally:
        if outage.is_alive():
            outage.join(timeout=120)
        server.up()  # whatever happened above (a no-op when MariaDB answers)
        consumers.kill_all()
        if producer is not None:
            producer.kill()
            producer.wait(timeout=10)
    seconds = time.monotonic() - began

    ids, not_one = stored_events(url)
    letters = read_dead_letters(bootstrap, topic)
    evidence = (
        f"\nchaos run: {seconds:.0f} s, {len(consumers.history)} consumer processes, "
        f"{left} messages uncommitted at the end, {len(ids)} events stored "
        f"({len(expected.valid_ids)} expected), {len(letters.by_source)} dead letters "
        f"({len(expected.malformed)} expected, {letters.copies} copies), "
        f"DLQ reasons {dict(letters.reasons)}, topic {topic}, outage "
        f"{[(step, round(at - began)) for step, at in outage_log]}\n"
        f"{consumers.report(began, tmp_path / 'logs')}"
    )
    print(evidence)
    assert (sent["sent"], sent["skipped"]) == (expected.lines, 0), evidence
    # Only SIGKILL ends a consumer early: one (re)started while MariaDB is down waits for it.
    last = {id(member) for member in consumers.members}
    for member in (m for m in consumers.history if id(m) not in last):
        assert member.ended == "killed", evidence
    assert all(m.ended == "terminated 0" for m in consumers.members), evidence
    assert left == 0, evidence
    assert len(ids) == len(set(ids)), evidence
    assert set(ids) == expected.valid_ids, evidence
    assert not_one == {}, evidence
    assert letters.source_topics == {topic}, evidence
    assert sorted(r.value for r in letters.by_source.values()) == sorted(expected.malformed), (
        evidence
    )
    assert not any(reason.startswith("database refused") for reason in letters.reasons), evidence


# ---------------------------------------------------------------- permission revoked
@dataclass(frozen=True)
class RestrictedDatabase:
    """A database of its own and a user of its own; INSERT and UPDATE are table-level grants,
    so that one table's can be revoked (a database-level grant cannot be revoked per table)."""

    name: str
    admin_url: str  # the test server's user, on this database
    user_url: str
    accounts: tuple[str, ...]
    execute: Callable[[str], None]

    def revoke_predictions(self) -> None:
        for account in self.accounts:
            self.execute(f"REVOKE INSERT, UPDATE ON `{self.name}`.table_predictions FROM {account}")

    def grant_predictions(self) -> None:
        for account in self.accounts:
            self.execute(f"GRANT INSERT, UPDATE ON `{self.name}`.table_predictions TO {account}")


TABLES = ("table_customers", "table_orders", "table_events", "table_predictions")


@pytest.fixture
def restricted_database(mysql_server_url: str) -> Iterator[RestrictedDatabase]:
    from sqlalchemy import create_engine

    suffix = uuid.uuid4().hex[:10]
    name = user = f"orderpipe_perm_{suffix}"
    password = uuid.uuid4().hex
    server_url = make_url(mysql_server_url)
    server = create_engine(server_url, pool_pre_ping=True)
    accounts = tuple(f"'{user}'@'{host}'" for host in ("127.0.0.1", "localhost"))

    def execute(statement: str) -> None:
        with server.begin() as conn:
            conn.exec_driver_sql(statement)

    admin_url = server_url.set(database=name).render_as_string(hide_password=False)
    try:
        execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        engine = make_engine(admin_url)
        try:
            create_tables(engine)
        finally:
            engine.dispose()
        for account in accounts:
            execute(f"CREATE USER {account} IDENTIFIED BY '{password}'")
            execute(
                f"GRANT SELECT, DELETE, CREATE, DROP, ALTER, INDEX, REFERENCES, "
                f"CREATE TEMPORARY TABLES, LOCK TABLES ON `{name}`.* TO {account}"
            )
            for table in TABLES:
                execute(f"GRANT INSERT, UPDATE ON `{name}`.{table} TO {account}")
        user_url = server_url.set(username=user, password=password, database=name)
        yield RestrictedDatabase(
            name,
            admin_url,
            user_url.render_as_string(hide_password=False),
            accounts,
            execute,
        )
    finally:
        for account in accounts:
            execute(f"DROP USER IF EXISTS {account}")
        execute(f"DROP DATABASE IF EXISTS `{name}`")
        server.dispose()


def test_revoked_insert_on_predictions_stops_the_consumer_with_nothing_dead_lettered(
    kafka_bootstrap: str,
    restricted_database: RestrictedDatabase,
    data: StreamData,
    tmp_path: Path,
) -> None:
    """Not the events' fault: the consumer stops (exit 1, one line naming the cause) instead of
    dead-lettering valid events, commits nothing of the failing batch, and resumes once granted."""
    from orderpipe.stream.producer import produce

    db = restricted_database
    lines = data.clean_jsonl.read_bytes().splitlines()
    half = len(lines) // 2
    first, rest = tmp_path / "first.jsonl", tmp_path / "rest.jsonl"
    first.write_bytes(b"\n".join(lines[:half]) + b"\n")
    rest.write_bytes(b"\n".join(lines[half:]) + b"\n")
    endpoint = KafkaEndpoint(kafka_bootstrap)
    backend = Backend(kafka_bootstrap, db.user_url, embedded=False)
    topic, group = new_topic(), f"perm-{uuid.uuid4().hex[:6]}"
    asyncio.run(ensure_topic(endpoint, topic, 3))

    consumer = Drained(consume_process(backend, topic, group, data.artifacts))
    try:
        asyncio.run(produce(endpoint, topic, first))
        deadline = time.monotonic() + 60
        while uncommitted(kafka_bootstrap, topic, group) and time.monotonic() < deadline:
            assert consumer.process.poll() is None, consumer.stderr
            time.sleep(0.5)
        # The first half is stored and committed: the batch that fails is the second half's.
        assert committed_total(kafka_bootstrap, topic, group) == half, consumer.stderr
        db.revoke_predictions()
        asyncio.run(produce(endpoint, topic, rest))
        try:
            code = consumer.wait(timeout=60)
        except subprocess.TimeoutExpired:
            consumer.kill()
            consumer.wait(timeout=10)
            pytest.fail(
                "the consumer still runs 60 s after INSERT on table_predictions was revoked; "
                f"stored {counts(db.admin_url)}, dead letters "
                f"{dict(read_dead_letters(kafka_bootstrap, topic).reasons)}, stderr:\n"
                f"{consumer.stderr[-3000:]}"
            )
    finally:
        consumer.kill()
    stopped = counts(db.admin_url)
    letters = read_dead_letters(kafka_bootstrap, topic)
    committed = committed_total(kafka_bootstrap, topic, group)
    evidence = (
        f"exit {code}, stored {stopped}, committed {committed}, "
        f"dead letters {dict(letters.reasons)}, stderr:\n{consumer.stderr[-3000:]}"
    )
    print(f"\nrevoked: {evidence}")
    assert code == 1, evidence
    assert "Traceback" not in consumer.stderr, evidence
    last_line = ([line for line in consumer.stderr.splitlines() if line.strip()] or [""])[-1]
    assert "denied" in last_line.lower() or "permission" in last_line.lower(), evidence
    assert not letters.by_source, evidence
    # The failing batch neither stored (one transaction) nor committed (redelivered later).
    assert committed == stopped["table_events"] == stopped["table_predictions"] == half, evidence

    db.grant_predictions()
    resumed = Drained(
        consume_process(backend, topic, group, data.artifacts, "--idle-timeout", "8", "--json")
    )
    try:
        assert resumed.wait(timeout=120) == 0, resumed.stderr
    finally:
        resumed.kill()
    ids, not_one = stored_events(db.admin_url)
    assert len(ids) == len(lines) and not not_one
    assert set(ids) == {json.loads(line)["event_id"] for line in lines}
    assert json.loads(resumed.stdout)["consumed"] == len(lines) - half
    assert not read_dead_letters(kafka_bootstrap, topic).by_source
