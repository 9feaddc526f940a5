"""The crash harness: each batch phase killed with SIGKILL at its crash points
(`ORDERPIPE_CRASH_AT`, see `orderpipe.core.crashpoints`) and at timed moments, then run again.

After each kill, every output a reader can open is as the last completed run left it, or, for
a kill after a phase's commit, as the killed run made it; the next run finishes or redoes the
work, and the end state is what an uninterrupted run gives (same rows, same counts, same model).
No temporary file survives the re-run. `CRASH_ROUNDS` timed kills per phase (CI: 2;
`make chaos`: more). The full disk is in test_disk_full.py, the stream's kills and outages in
test_chaos.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from sqlalchemy import inspect, text

from orderpipe.core.fileio import leftovers
from orderpipe.core.layout import Layout
from orderpipe.db.engine import make_engine
from orderpipe.table.maintenance import orphan_files
from orderpipe.table.read import is_table, read_clean_dataset, table_version
from tests.factories import HEADER, phases_file, task_row, write_csv
from tests.integration.helpers import PrivateService, counts, database_outage, dump, new_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CRASH_ROUNDS = int(os.environ.get("ORDERPIPE_CRASH_ROUNDS", "2"))
# Timed kills draw their delays from a generator seeded per test with this seed and the test's
# id, so a failing round replays with ORDERPIPE_CRASH_SEED=<the seed its failure printed>.
CRASH_SEED = int(os.environ.get("ORDERPIPE_CRASH_SEED") or random.SystemRandom().randrange(2**32))
_delays = random.Random()
KILLED = -signal.SIGKILL
# Runs the CLI with small units, so a few thousand events make several of them.
SMALL_UNIT = 4_000
SMALL = (
    "import sys, orderpipe.ingest as i, orderpipe.ml.predict as p, orderpipe.generate.writer as g; "
    f"i.READ_ROWS = p.READ_ROWS = {SMALL_UNIT}; "
    "g.generate_events.__kwdefaults__['chunk_size'] = g.UNIT; "
    "from orderpipe.cli import app; app(prog_name='orderpipe')"
)


@dataclass
class Work:
    """A working folder of its own, and the CLI run in it as a separate process."""

    root: Path

    @property
    def layout(self) -> Layout:
        return Layout(
            self.root / "data", self.root / "artifacts", self.root / "reports", self.root / "eco"
        )

    def env(self, crash: str | None = None) -> dict[str, str]:
        env = {
            **os.environ,
            "ORDERPIPE_DATA_DIR": str(self.root / "data"),
            "ORDERPIPE_ARTIFACTS_DIR": str(self.root / "artifacts"),
            "ORDERPIPE_REPORTS_DIR": str(self.root / "reports"),
            "ORDERPIPE_ECO_ENABLED": "false",
            "ORDERPIPE_ECO_OUTPUT_DIR": str(self.root / "eco"),
        }
        env.pop("ORDERPIPE_CRASH_AT", None)
        if crash:
            env["ORDERPIPE_CRASH_AT"] = crash
        return env

    def start(
        self, *args: str, crash: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        self.root.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen(
            [sys.executable, "-c", SMALL, *args],
            env={**self.env(crash), **(env or {})},
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def run(self, *args: str, crash: str | None = None) -> subprocess.CompletedProcess[bytes]:
        process = self.start(*args, crash=crash)
        out, err = process.communicate(timeout=300)
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    def ok(self, *args: str) -> None:
        done = self.run(*args)
        assert done.returncode == 0, done.stderr.decode()[-2000:]

    def killed_at(self, point: str, *args: str) -> None:
        done = self.run(*args, crash=point)
        assert done.returncode == KILLED, (point, done.returncode, done.stderr.decode()[-2000:])

    def killed_after(self, low: float, high: float, *args: str) -> bool:
        """Start the command and kill -9 it after a seeded delay in [low, high) seconds: True
        when the kill landed, False when the command had already finished with exit 0. Any
        other end (it failed before the kill) fails the test with the seed that replays it."""
        seconds = _delays.uniform(low, high)
        print(f"timed kill of {args[0]} after {seconds:.3f} s (ORDERPIPE_CRASH_SEED={CRASH_SEED})")
        process = self.start(*args)
        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
        _, err = process.communicate(timeout=60)
        assert process.returncode in (KILLED, 0), (
            f"{args[0]} exited {process.returncode} before its kill at {seconds:.3f} s "
            f"(replay: ORDERPIPE_CRASH_SEED={CRASH_SEED}): {err.decode()[-2000:]}"
        )
        return process.returncode == KILLED


@pytest.fixture(autouse=True)
def seeded_delays(request: pytest.FixtureRequest) -> None:
    """Each test's timed kills from its own seeded generator (replayable alone)."""
    _delays.seed(f"{CRASH_SEED}:{request.node.nodeid}")


@pytest.fixture
def work(tmp_path: Path) -> Work:
    return Work(tmp_path)


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def no_leftovers(layout: Layout) -> None:
    found = [p for folder in layout.work_dirs() for p in leftovers(folder)]
    found += orphan_files(layout.table)
    assert found == [], found


# ---------------------------------------------------------------- generate
def test_generate_killed_leaves_the_previous_file_and_a_rerun_gives_the_same_bytes(
    work: Work,
) -> None:
    layout = work.layout
    work.ok("generate", "--events", "3000", "--seed", "1")
    before = digest(layout.raw), digest(layout.truth)
    reference = Work(work.root / "reference")
    reference.ok("generate", "--events", "200000", "--seed", "2")
    after = digest(reference.layout.raw), digest(reference.layout.truth)

    args = ("generate", "--events", "200000", "--seed", "2")
    work.killed_at("generate.chunk-written:2", *args)
    assert (digest(layout.raw), digest(layout.truth)) == before
    work.killed_at("generate.events-moved", *args)  # after the commit, before the truth's rename
    assert (digest(layout.raw), digest(layout.truth)) == (after[0], before[1])
    from orderpipe.core.truth import finish_pending_truth

    assert finish_pending_truth(layout.truth)  # what train (the truth's reader) does first
    assert (digest(layout.raw), digest(layout.truth)) == after
    work.ok("generate", "--events", "3000", "--seed", "1")  # back to the first file
    for _ in range(CRASH_ROUNDS):
        work.killed_after(0.5, 2.5, *args)
        finish_pending_truth(layout.truth)
        assert (digest(layout.raw), digest(layout.truth)) in (before, after)
    work.ok(*args)
    assert (digest(layout.raw), digest(layout.truth)) == after
    no_leftovers(layout)


# ---------------------------------------------------------------- etl
@dataclass(frozen=True)
class EtlState:
    version: int | None
    rows: int
    rows_hash: int
    quarantine: dict[str, str | None]
    report: dict[str, Any] | None


def etl_state(layout: Layout) -> EtlState:
    table = layout.table
    if is_table(table):
        clean = read_clean_dataset(table).sort("event_id")
        version, rows = table_version(table), clean.height
        rows_hash = int(clean.hash_rows(seed=0).sum()) if rows else 0
    else:
        version, rows, rows_hash = None, 0, 0
    quarantine = {p.name: digest(p) for p in sorted(layout.rejected_dir.glob("*.rejected.jsonl"))}
    report = None
    if layout.quality_report.is_file():
        report = json.loads(layout.quality_report.read_text())
        report.pop("seconds")
        report.pop("outputs")  # paths of this working folder
        for name in ("committed", "new_events", "changed_events"):  # this run's, not the data's
            report["dataset"].pop(name)
    return EtlState(version, rows, rows_hash, quarantine, report)


def test_etl_merge_killed_anywhere_is_before_or_after_and_a_rerun_finishes_it(
    work: Work,
) -> None:
    """Day 2 merged into day 1: killed while cleaning, while writing days, after the commit,
    after the quarantine; the table is day 1's or day 1 + 2's, never a mix; the data files a
    killed merge wrote are orphans no reader sees, removed by the next run; a run killed after
    its commit is finished by the next (its quarantine and quality report)."""
    layout = work.layout
    days = work.root / "days"
    day1, day2 = days / "day1.jsonl", days / "day2.jsonl"
    work.ok("generate", "--events", "20000", "--seed", "1", "--output", str(day1))
    day2_args = ("--seed", "2", "--start", "2025-02-15", "--bad-lines", "40")
    work.ok("generate", "--events", "20000", *day2_args, "--output", str(day2))
    work.ok("etl", "--input", str(day1))
    before = etl_state(layout)

    reference = Work(work.root / "reference")
    reference.ok("etl", "--input", str(day1))
    reference.ok("etl", "--input", str(day2))
    reference.ok("etl", "--input", str(day2))  # a re-run of a finished run changes nothing
    after = etl_state(reference.layout)
    assert after.rows > before.rows

    def check(point: str) -> None:
        now = etl_state(layout)
        assert (now.version, now.rows, now.rows_hash) in (
            (before.version, before.rows, before.rows_hash),
            (after.version, after.rows, after.rows_hash),
        ), point
        if now.version == before.version:  # not committed: nothing else changed either
            assert now.report == before.report and now.quarantine == before.quarantine, point

    for point in ["etl.chunk-cleaned", "etl.day-written:3"]:
        work.killed_at(point, "etl", "--input", str(day2))
        check(point)
        assert orphan_files(layout.table) or point == "etl.chunk-cleaned"
        assert etl_state(layout).version == before.version
    for _ in range(CRASH_ROUNDS):
        work.killed_after(0.3, 2.0, "etl", "--input", str(day2))
        check("timed")
    for point in ["etl.committed", "etl.quarantine-moved"]:
        killed = Work(work.root / point)
        killed.ok("etl", "--input", str(day1))
        killed.killed_at(point, "etl", "--input", str(day2))
        now = etl_state(killed.layout)
        assert (now.version, now.rows, now.rows_hash) == (
            after.version,
            after.rows,
            after.rows_hash,
        )
        doctor = killed.run("doctor", "--json")
        leftover = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "leftovers")
        assert leftover["facts"]["etl_unfinished_version"] == after.version, leftover
        assert leftover["facts"]["leftovers"] == [], leftover  # a pending quarantine is not one
        killed.ok("etl", "--input", str(day2))  # finishes the killed run, then changes nothing
        assert etl_state(killed.layout) == after, point
        no_leftovers(killed.layout)
    work.ok("etl", "--input", str(day2))
    final = etl_state(layout)
    assert (final.rows, final.rows_hash, final.quarantine) == (
        after.rows,
        after.rows_hash,
        after.quarantine,
    )
    assert final.report is not None and after.report is not None
    figures = ("lines", "clean", "duplicates", "rejected", "rejected_by_reason")
    assert {k: final.report[k] for k in figures} == {k: after.report[k] for k in figures}
    no_leftovers(layout)


# ---------------------------------------------------------------- ingest
@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("mysql", marks=pytest.mark.mysql),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def ingest_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/crash.db"
    else:
        yield request.getfixturevalue(f"{request.param}_url")


def stored_events(url: str) -> int:
    """Events in the tables of `url` (0 before they exist)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if "table_events" not in inspect(conn).get_table_names():
                return 0
            return int(conn.execute(text("SELECT COUNT(*) FROM table_events")).scalar() or 0)
    finally:
        engine.dispose()


def whole_units(url: str) -> tuple[int, dict[str, str]]:
    """(events stored, watermark rows); asserts no order without events, no event without
    its order. A kill that landed before the tables were created left nothing: (0, {})."""
    engine = make_engine(url)
    with engine.connect() as conn:
        present = set(inspect(conn).get_table_names())
        if not {"table_orders", "table_events", "orderpipe_ingest_watermark"} <= present:
            engine.dispose()
            return 0, {}
        lonely_orders = conn.execute(
            text(
                "SELECT COUNT(*) FROM table_orders o WHERE NOT EXISTS "
                "(SELECT 1 FROM table_events e WHERE e.order_id = o.order_id)"
            )
        ).scalar()
        orphan_events = conn.execute(
            text(
                "SELECT COUNT(*) FROM table_events e WHERE NOT EXISTS "
                "(SELECT 1 FROM table_orders o WHERE o.order_id = e.order_id)"
            )
        ).scalar()
        events = conn.execute(text("SELECT COUNT(*) FROM table_events")).scalar()
        marks = {
            row.source_id: row.source_path
            for row in conn.execute(
                text("SELECT source_id, source_path FROM orderpipe_ingest_watermark")
            )
        }
    engine.dispose()
    assert (lonely_orders, orphan_events) == (0, 0)
    return int(events or 0), marks


def test_ingest_killed_leaves_whole_days_and_a_rerun_gives_the_uninterrupted_tables(
    work: Work, ingest_url: str
) -> None:
    """Killed after its second unit: whole days only, the watermark not moved. etl then
    commits a second day; the next ingest writes only the first version's remaining days, then
    the second day's, and the tables equal an uninterrupted ingest of both. Then timed kills."""
    from orderpipe.db.engine import drop_tables

    layout = work.layout
    day2 = work.root / "day2.jsonl"
    work.ok("generate", "--events", "30000", "--seed", "3")
    work.ok("generate", "--events", "6000", "--seed", "13", "--start", "2025-03-20",
            "--output", str(day2))  # fmt: skip
    work.ok("etl")
    first = read_clean_dataset(layout.table).height

    work.killed_at("ingest.unit-committed:2", "ingest", "--database-url", ingest_url)
    stored, marks = whole_units(ingest_url)
    assert 0 < stored < first
    assert all(path != str(layout.table.resolve()) for path in marks.values())  # not moved
    work.ok("etl", "--input", str(day2))
    both = read_clean_dataset(layout.table).height
    resumed = work.run("ingest", "--database-url", ingest_url, "--json")
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    # Nothing missed, and nothing written twice but, at most, the one unit that committed on
    # the second connection while the unit before it (which marks through both) was committing
    # (a window of microseconds): it carried no mark, so it is redone.
    redone = json.loads(resumed.stdout)["events"] - (both - stored)
    days = read_clean_dataset(layout.table).group_by(pl.col("event_time").dt.date()).len()
    assert 0 <= redone <= max(SMALL_UNIT, int(days["len"].max()))
    reference = f"sqlite:///{work.root}/reference.db"
    work.ok("ingest", "--database-url", reference)
    expected = dump(reference)
    assert whole_units(ingest_url)[0] == both and dump(ingest_url) == expected

    engine = make_engine(ingest_url)
    drop_tables(engine)
    engine.dispose()
    # Killed at start-up, before its tables exist (the race CI met with timed kills).
    assert work.killed_after(0.0, 0.05, "ingest", "--database-url", ingest_url)
    assert whole_units(ingest_url) == (0, {})
    for _ in range(CRASH_ROUNDS):
        work.killed_after(1.0, 3.0, "ingest", "--database-url", ingest_url)
        whole_units(ingest_url)
    work.ok("ingest", "--database-url", ingest_url)
    assert whole_units(ingest_url)[0] == both and dump(ingest_url) == expected


# The private server (tests/integration/conftest.py) a restart test stops, by URL fixture prefix.
PRIVATE_SERVERS = {"mysql": "private_mariadb", "postgres": "private_postgres"}


@pytest.mark.parametrize(
    "server",
    [
        pytest.param("mysql", marks=pytest.mark.mysql, id="mariadb"),
        pytest.param("postgres", marks=pytest.mark.postgres, id="postgres"),
    ],
)
def test_ingest_rides_out_a_database_server_restart(
    work: Work, request: pytest.FixtureRequest, server: str
) -> None:
    """The server stopped and started again mid-ingest: the writes wait and retry (transient
    faults), the run ends with exit 0 and every event stored once (on PostgreSQL, with the
    keys its load into empty tables builds at the end). The server is the session's private
    one, the database the test's own on it."""
    from sqlalchemy import inspect

    private = request.getfixturevalue(PRIVATE_SERVERS[server])
    url = request.getfixturevalue(f"private_{server}_url")  # the test's database on it
    layout = work.layout
    work.ok("generate", "--events", "150000", "--seed", "4")
    work.ok("etl")
    clean = read_clean_dataset(layout.table).height
    process = work.start("ingest", "--database-url", url)
    engine = make_engine(url)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:  # until the first unit is in
        with engine.connect() as conn:
            if (
                inspect(conn).has_table("table_events")
                and conn.execute(text("SELECT COUNT(*) FROM table_events")).scalar()
            ):
                break
        time.sleep(0.2)
    engine.dispose()
    assert process.poll() is None, "the ingest ended before the outage"
    log: list[tuple[str, float]] = []
    database_outage(private, 4.0, log)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, (log, err.decode()[-2000:])
    assert log[1][0] == "down", log
    events, _ = whole_units(url)
    assert events == clean
    assert b"trying again" in err  # it did meet the outage
    engine = make_engine(url)
    try:
        assert {i["name"] for i in inspect(engine).get_indexes("table_events")} >= {
            "ix_table_events_event_time",
            "ix_table_events_order_id",
        }
        assert len(inspect(engine).get_foreign_keys("table_events")) == 2
    finally:
        engine.dispose()


# ---------------------------------------------------------------- train and predict
def test_train_killed_between_its_renames_is_finished_by_the_next_reader(work: Work) -> None:
    layout = work.layout
    work.ok("generate", "--events", "20000", "--seed", "5")
    work.ok("etl")
    work.ok("train", "classification", "--seed", "1")
    meta = layout.model_files("classification")[1]
    old = json.loads(meta.read_text())["model_version"]
    work.killed_at("train.model-moved", "train", "classification", "--seed", "2")
    assert json.loads(meta.read_text())["model_version"] == old  # metadata still the old one
    from orderpipe.ml.model import load_model, read_evaluation

    loaded = load_model(layout.artifacts_dir, "classification")  # finishes the killed training
    assert loaded.version != old
    assert json.loads(meta.read_text())["model_version"] == loaded.version
    # the evaluation sample the report reads moved in too: it names the new model
    assert read_evaluation(layout.artifacts_dir, loaded.meta, "classification") is not None
    work.killed_at("train.meta-moved", "train", "classification", "--seed", "3")
    newest = load_model(layout.artifacts_dir, "classification")  # its sample was left pending
    assert newest.version != loaded.version
    assert read_evaluation(layout.artifacts_dir, newest.meta, "classification") is not None
    first = Work(work.root / "first")  # no model before: no metadata at all
    first.ok("etl", "--input", str(layout.raw))
    first.killed_at("train.model-moved", "train", "classification", "--seed", "2")
    assert not first.layout.model_files("classification")[1].exists()
    assert load_model(first.layout.artifacts_dir, "classification").version == loaded.version
    reference = Work(work.root / "reference")
    reference.ok("etl", "--input", str(layout.raw))
    reference.ok("train", "classification", "--seed", "2")
    reference_meta = reference.layout.model_files("classification")[1]
    assert json.loads(reference_meta.read_text())["model_version"] == loaded.version
    no_leftovers(layout)


def test_predict_killed_keeps_what_it_stored_and_a_rerun_scores_the_rest(work: Work) -> None:
    layout = work.layout
    url = f"sqlite:///{work.root}/p.db"
    work.ok("generate", "--events", "20000", "--seed", "6")
    work.ok("etl")
    work.ok("ingest", "--database-url", url)
    work.ok("train", "classification")
    work.killed_at("predict.part-stored:2", "predict", "--database-url", url)
    engine = make_engine(url)
    with engine.connect() as conn:
        kept = conn.execute(text("SELECT COUNT(*) FROM table_predictions")).scalar()
    engine.dispose()
    again = work.run("predict", "--database-url", url, "--json")
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    assert kept > 0 and json.loads(again.stdout)["scored"] == 20_000 - kept  # only the rest
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT event_id, return_proba FROM table_predictions")).all()
    engine.dispose()
    clean = read_clean_dataset(layout.table)
    assert sorted(r.event_id for r in rows) == sorted(clean["event_id"].to_list())
    reference = f"sqlite:///{work.root}/reference.db"
    work.ok("ingest", "--database-url", reference)
    work.ok("predict", "--database-url", reference)
    engine = make_engine(reference)
    with engine.connect() as conn:
        expected = conn.execute(text("SELECT event_id, return_proba FROM table_predictions")).all()
    engine.dispose()
    frame = pl.DataFrame([tuple(r) for r in rows], schema=["event_id", "p"], orient="row")
    other = pl.DataFrame([tuple(r) for r in expected], schema=["event_id", "p"], orient="row")
    assert frame.sort("event_id").equals(other.sort("event_id"))


# ---------------------------------------------------------------- eco report
@pytest.mark.parametrize(
    ("point", "renamed"),
    [("eco.chart-moved", {"chart"}), ("eco.csv-moved", {"chart", "csv"}),
     ("eco.md-moved", {"chart", "csv", "md"})],
)  # fmt: skip
def test_eco_report_killed_between_its_renames_is_written_whole_by_the_next(
    work: Work, point: str, renamed: set[str]
) -> None:
    """The three files are written first, then renamed back to back (chart, CSV, Markdown): a
    kill after any rename leaves the files not yet renamed as they were; the next report writes
    all three."""

    def measured(folder: Path, runs: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for run in range(1, runs + 1):
            row = task_row("etl", f"r{run}", f"t{run}", run, 0.5 / run)
            write_csv(folder / f"emissions_base_r{run}.csv", HEADER, [row])
        phases_file(folder, [(f"r{run}", "etl", 500 * run) for run in range(1, runs + 1)])

    def report(layout: Layout) -> dict[str, str | None]:
        md, csv, chart = layout.eco_report_files
        return {"md": digest(md), "csv": digest(csv), "chart": digest(chart)}

    reference = Work(work.root / "reference")
    measured(reference.layout.eco_output_dir, 2)
    reference.ok("eco", "report")
    after = report(reference.layout)
    measured(work.layout.eco_output_dir, 1)
    work.ok("eco", "report")
    before = report(work.layout)
    assert all(before[name] != after[name] for name in before)  # each file changes
    measured(work.layout.eco_output_dir, 2)
    work.killed_at(point, "eco", "report")
    killed = report(work.layout)
    assert killed == {name: after[name] if name in renamed else before[name] for name in killed}
    work.ok("eco", "report")
    assert report(work.layout) == after
    no_leftovers(work.layout)


# ---------------------------------------------------------------- a Kafka restart
@pytest.mark.kafka
def test_stream_run_rides_out_an_apache_kafka_restart(
    work: Work, private_kafka: PrivateService
) -> None:
    """Apache Kafka stopped and started again mid-stream: the producer and the consumer carry
    on, and every event is stored once, with one prediction. The broker is the session's
    private one: the restart stops no broker another test uses."""
    kafka_bootstrap = private_kafka.bootstrap
    layout = work.layout
    url = f"sqlite:///{work.root}/stream.db"
    work.ok("generate", "--events", "40000", "--seed", "8")
    work.ok("etl")
    work.ok("train", "classification")
    clean = read_clean_dataset(layout.table).height
    stream_env = {
        "ORDERPIPE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "ORDERPIPE_KAFKA_TOPIC": new_topic(),
        "ORDERPIPE_KAFKA_GROUP_ID": f"crash-{uuid.uuid4().hex[:8]}",
    }
    os.environ.update(stream_env)  # read by Work.env for the process below
    try:
        process = work.start("stream", "run", "--rate", "2000", "--database-url", url, "--json")
    finally:
        for name in stream_env:
            os.environ.pop(name)

    # The restart lands on observed state: once events are stored, while the run goes on
    # (2,000 events/s: ~20 s of work) and work remains; both are checked when Kafka is down.
    deadline = time.monotonic() + 120  # a bound on a hang, not on speed
    while stored_events(url) < 2000 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        private_kafka.down()
        down = stored_events(url), process.poll()
        assert down[1] is None and 2000 <= down[0] < clean, (down, clean)
        time.sleep(5)  # the outage itself
    finally:
        private_kafka.up()
    _, err = process.communicate(timeout=400)
    assert process.returncode == 0, err.decode()[-3000:]
    stored = counts(url)
    assert (stored["table_events"], stored["table_predictions"]) == (clean, clean), stored
