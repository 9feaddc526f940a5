import json
import os
import re
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from orderpipe.core import schema
from orderpipe.core.errors import OrderpipeError
from orderpipe.core.layout import Layout
from orderpipe.etl.run import run_etl
from orderpipe.generate.dirt import BAD_LINE_KINDS, Dirt
from orderpipe.generate.writer import generate_events
from orderpipe.table.export import export_dataset
from orderpipe.table.read import read_clean_dataset
from tests.factories import layout_under, raw_event, write_lines


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return layout_under(tmp_path)


def _rejected(layout: Layout, source: Path) -> list[dict]:
    return [json.loads(line) for line in layout.rejected_for(source).read_text().splitlines()]


def test_every_line_is_clean_duplicate_or_quarantined(tmp_path: Path, layout: Layout) -> None:
    raw = generate_events(
        tmp_path / "raw.jsonl", 3000, dirt=Dirt(duplicates=90, bad_lines=40, missing_rate=0.2)
    ).output
    result = run_etl(raw, layout)
    assert result.lines == 3000 + 90 + 40
    assert result.clean == 3000
    assert result.duplicates == 90
    assert result.rejected == 40
    assert result.lines == result.clean + result.duplicates + result.rejected
    assert len(_rejected(layout, raw)) == 40
    report = json.loads(layout.quality_report.read_text())
    assert report["lines"] == result.lines
    assert sum(report["rejected_by_reason"].values()) == 40


def test_generator_bad_lines_get_the_right_reason(tmp_path: Path, layout: Layout) -> None:
    raw = generate_events(
        tmp_path / "raw.jsonl", 300, dirt=Dirt(bad_lines=len(BAD_LINE_KINDS))
    ).output
    run_etl(raw, layout)
    reasons = sorted(row["reason"].split(" (")[0] for row in _rejected(layout, raw))
    assert reasons == sorted(
        [
            "invalid JSON",
            "invalid JSON",
            "missing order object",
            "missing is_returned",
            "missing n_items",
            "n_items is not an integer",
            "basket_value is not a number",
            "missing event_id",
            "event_time is an epoch number, not an ISO-8601 timestamp",
            "customer must be an object",
        ]
    )


def test_latest_event_time_wins_a_duplicate(tmp_path: Path, layout: Layout) -> None:
    raw = write_lines(
        tmp_path / "raw.jsonl",
        [
            raw_event(event_time="2026-11-20T10:00:05Z", order__n_items=5),
            raw_event(event_time="2026-11-20T10:00:01Z", order__n_items=1),
            raw_event(event_time="2026-11-20T10:00:03Z", order__n_items=3),
        ],
    )
    result = run_etl(raw, layout)
    clean = read_clean_dataset(layout.table)
    assert (result.clean, result.duplicates) == (1, 2)
    assert clean["n_items"].to_list() == [5]


def test_exact_tie_keeps_the_later_line(tmp_path: Path, layout: Layout) -> None:
    raw = write_lines(
        tmp_path / "raw.jsonl",
        [
            raw_event(order__n_items=1),
            raw_event(order__n_items=2),
        ],
    )
    run_etl(raw, layout)
    assert read_clean_dataset(layout.table)["n_items"].to_list() == [2]


def test_running_etl_twice_changes_nothing(tmp_path: Path, layout: Layout) -> None:
    raw = generate_events(
        tmp_path / "raw.jsonl", 2000, dirt=Dirt(duplicates=50, bad_lines=5)
    ).output
    first = run_etl(raw, layout)
    before = read_clean_dataset(layout.table)
    again = run_etl(raw, layout)
    assert read_clean_dataset(layout.table).equals(before)
    assert (again.new_events, again.changed_events, again.dataset_rows) == (0, 0, 2000)
    assert (again.committed, again.table_version) == (False, first.table_version)
    assert DeltaTable(str(layout.table)).version() == first.table_version  # no new version


def test_merge_adds_new_events_and_updates_newer_ones(tmp_path: Path, layout: Layout) -> None:
    first = write_lines(
        tmp_path / "a.jsonl",
        [
            raw_event(event_id="e1", event_time="2026-11-20T10:00:00Z"),
            raw_event(event_id="e2", event_time="2026-11-20T10:00:00Z", order__n_items=2),
        ],
    )
    second = write_lines(
        tmp_path / "b.jsonl",
        [
            raw_event(event_id="e2", event_time="2026-11-20T11:00:00Z", order__n_items=9),
            raw_event(event_id="e3", event_time="2026-11-20T09:00:00Z"),
            raw_event(event_id="e1", event_time="2026-11-20T08:00:00Z", order__n_items=7),
        ],
    )
    run_etl(first, layout)
    result = run_etl(second, layout)
    clean = read_clean_dataset(layout.table).sort("event_id")
    assert clean["event_id"].to_list() == ["e1", "e2", "e3"]
    assert clean["n_items"].to_list() == [3, 9, 3]  # e1's older copy did not win
    assert (result.new_events, result.changed_events) == (1, 1)


def test_replace_rebuilds_the_dataset(tmp_path: Path, layout: Layout) -> None:
    run_etl(write_lines(tmp_path / "a.jsonl", [raw_event(event_id="e1")]), layout)
    run_etl(write_lines(tmp_path / "b.jsonl", [raw_event(event_id="e2")]), layout, merge=False)
    assert read_clean_dataset(layout.table)["event_id"].to_list() == ["e2"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (raw_event(order__is_returned=...), "missing is_returned"),
        (raw_event(order__n_items=...), "missing n_items"),
        (raw_event(order__n_items=None), "missing n_items"),
        (raw_event(event_id=None), "missing event_id"),
        (raw_event(event_id="  "), "missing event_id"),
        (raw_event(event_time=1763634662123), "event_time is an epoch number"),
        (raw_event(event_time="20/11/2026 10:31"), "event_time is not an ISO-8601 timestamp"),
        (raw_event(event_time="1970-01-01T00:00:01Z"), "event_time is out of range"),
        (raw_event(event_time=...), "missing event_time"),
        (raw_event(order_id=None), "missing order_id"),
        (raw_event(customer__customer_id=...), "missing customer_id"),
        (raw_event(order_id="O" * 65), "an id is longer than 64 characters"),
        (raw_event(order=...), "missing order object"),
        (raw_event(order__n_items=2.5), "n_items is not an integer"),
        (raw_event(order__n_items=0), "n_items must be at least 1"),
        (raw_event(order__is_returned=2), "is_returned must be 0 or 1"),
        (raw_event(order__basket_value="12,5"), "basket_value is not a number"),
        (raw_event(order__discount="NaN"), "discount is not a number"),
        (
            raw_event(order__basket_value=None, order__order_total=None),
            "missing basket_value and order_total",
        ),
        (raw_event(order__shipping_fee=-1), "amounts must not be negative"),
        (raw_event(order={"n_items": [1]}), "order.n_items must be a scalar"),
        ("[1, 2]", "not a JSON object"),
        ('{"event_id": "x", "event_time": ', "invalid JSON"),
        ("", "empty line"),
    ],
)
def test_bad_records_are_quarantined_with_a_reason(
    tmp_path: Path, layout: Layout, line: object, reason: str
) -> None:
    raw = write_lines(tmp_path / "raw.jsonl", [raw_event(event_id="good"), line])
    result = run_etl(raw, layout)
    assert (result.clean, result.rejected) == (1, 1)
    [rejected] = _rejected(layout, raw)
    assert rejected["reason"].startswith(reason)
    assert rejected["line_number"] == 2
    assert rejected["raw"] == (line if isinstance(line, str) else json.dumps(line))


def test_non_utf8_line_is_quarantined_not_fatal(tmp_path: Path, layout: Layout) -> None:
    raw = tmp_path / "raw.jsonl"
    raw.write_bytes(json.dumps(raw_event()).encode() + b"\n" + b'{"event_id": "\xff\xfe"}\n')
    result = run_etl(raw, layout)
    assert (result.clean, result.rejected) == (1, 1)
    assert _rejected(layout, raw)[0]["reason"] == "not UTF-8 text"


def test_every_reason_is_documented(tmp_path: Path, layout: Layout) -> None:
    raw = generate_events(tmp_path / "raw.jsonl", 500, dirt=Dirt(bad_lines=30)).output
    run_etl(raw, layout)
    rule_reasons = {rule.reason for rule in schema.RULES}
    for row in _rejected(layout, raw):
        assert row["reason"] in rule_reasons or any(
            part in row["reason"] for part in schema.LINE_REASONS
        )


@pytest.mark.parametrize(
    ("event_time", "expected"),
    [
        ("2026-11-20T10:31:02Z", "2026-11-20T10:31:02.000000Z"),
        ("2026-11-20T10:31:02.5+02:00", "2026-11-20T08:31:02.500000Z"),
        ("2026-11-20 10:31:02.123456", "2026-11-20T10:31:02.123456Z"),
        ("2026-11-20T10:31:02-0530", "2026-11-20T16:01:02.000000Z"),
    ],
)
def test_timestamps_are_converted_to_utc(
    tmp_path: Path, layout: Layout, event_time: str, expected: str
) -> None:
    run_etl(write_lines(tmp_path / "raw.jsonl", [raw_event(event_time=event_time)]), layout)
    export = export_dataset(layout.table, layout.export("jsonl"), "jsonl").output
    record = json.loads(export.read_text().splitlines()[0])
    assert record["event_time"] == expected
    assert record["event_year"] == int(expected[:4])
    assert record["event_hour"] == int(expected[11:13])


def test_text_is_normalised_and_missing_values_imputed(tmp_path: Path, layout: Layout) -> None:
    raw = write_lines(
        tmp_path / "raw.jsonl",
        [
            raw_event(
                customer__country=" fr ",
                order__device="  MOBILE",
                order__channel=None,
                order__main_category="Home  Garden ",
                order__discount=None,
                order__shipping_fee=None,
                order__basket_value=100.0,
                order__order_total=104.99,
            ),
            raw_event(
                event_id="e2",
                customer__country="France",
                order__device="",
                order__basket_value=None,
                order__order_total=55.0,
                order__shipping_fee=5.0,
                order__discount=10.0,
            ),
        ],
    )
    result = run_etl(raw, layout)
    rows = read_clean_dataset(layout.table).sort("event_id").to_dicts()
    first, second = rows[1], rows[0]
    assert (first["country"], first["device"], first["channel"], first["main_category"]) == (
        "FR",
        "mobile",
        "unknown",
        "home garden",
    )
    assert (first["discount"], first["shipping_fee"]) == (0.0, 4.99)  # total - basket + discount
    assert (second["country"], second["device"]) == ("UN", "unknown")
    assert second["basket_value"] == 60.0  # 55 - 5 + 10
    assert second["price_average_per_item"] == 20.0
    assert result.imputed["channel"] == 1
    assert result.normalised["device"] == 1


def test_original_project_file_quirks(tmp_path: Path, layout: Layout) -> None:
    """Order ids reused across customers, nulls and duplicates, as the original generator did."""
    raw = write_lines(
        tmp_path / "raw.jsonl",
        [
            raw_event(event_id="a", order_id="ORD-1", customer__customer_id="C1"),
            raw_event(
                event_id="b",
                order_id="ORD-1",
                customer__customer_id="C2",
                event_time="2026-11-21T00:00:00",
            ),
            raw_event(
                event_id="b",
                order_id="ORD-1",
                customer__customer_id="C2",
                event_time="2026-11-21T00:00:00",
            ),
            raw_event(event_id="c", order__channel=None, order__discount=None),
        ],
    )
    result = run_etl(raw, layout)
    assert (result.clean, result.duplicates, result.rejected) == (3, 1, 0)
    report = json.loads(layout.quality_report.read_text())
    assert report["dataset"]["order_ids_shared_by_several_customers"] == 1


def test_missing_input_is_a_clear_error(tmp_path: Path, layout: Layout) -> None:
    with pytest.raises(OrderpipeError, match="input file not found"):
        run_etl(tmp_path / "nope.jsonl", layout)


def test_outputs_have_the_clean_contract_columns(tmp_path: Path, layout: Layout) -> None:
    run_etl(generate_events(tmp_path / "raw.jsonl", 100).output, layout)
    exports = {
        fmt: export_dataset(layout.table, layout.export(fmt), fmt)
        for fmt in ("csv", "jsonl", "parquet")
    }
    assert all(export.rows == 100 for export in exports.values())
    stored = pl.read_delta(str(layout.table))
    assert stored.columns == [*schema.CLEAN_COLUMNS, "event_date"]
    assert stored.drop("event_date").schema == pl.Schema(schema.CLEAN_SCHEMA)
    assert pl.read_parquet(layout.export("parquet")).schema == pl.Schema(schema.CLEAN_SCHEMA)
    assert pl.read_csv(layout.export("csv")).columns == list(schema.CLEAN_COLUMNS)
    first_record = json.loads(layout.export("jsonl").read_text().splitlines()[0])
    assert list(first_record) == list(schema.CLEAN_COLUMNS)


def test_outputs_are_written_where_the_layout_says(tmp_path: Path, layout: Layout) -> None:
    raw = write_lines(tmp_path / "raw.jsonl", [raw_event(), "not json"])
    result = run_etl(raw, layout)
    assert result.outputs == {
        "table": layout.table,
        "rejected": layout.rejected_for(raw),
        "quality": layout.quality_report,
    }
    assert (layout.table / "_delta_log").is_dir()
    assert result.outputs["rejected"].is_file() and result.outputs["quality"].is_file()


# ---------------------------------------------------------------- runs after runs (the table)
def _day(day: str, n: int, **fields: object) -> list:
    return [
        raw_event(event_id=f"{day}-{i}", event_time=f"{day}T10:00:0{i % 10}Z", **fields)
        for i in range(n)
    ]


def test_a_correction_moves_an_event_to_its_new_day_and_rewrites_only_touched_days(
    tmp_path: Path, layout: Layout
) -> None:
    days = ("2026-11-18", "2026-11-19", "2026-11-20")
    run_etl(write_lines(tmp_path / "d1.jsonl", [e for d in days for e in _day(d, 3)]), layout)
    files_before = _active_files(layout)
    corrected = raw_event(
        event_id="2026-11-18-1", event_time="2026-11-21T09:00:00Z", order__n_items=9
    )
    result = run_etl(
        write_lines(tmp_path / "d2.jsonl", [corrected, *_day("2026-11-21", 2)]), layout
    )
    assert (result.new_events, result.changed_events, result.dataset_rows) == (2, 1, 11)
    table = read_clean_dataset(layout.table)
    moved = table.filter(pl.col("event_id") == "2026-11-18-1")
    assert moved["n_items"].to_list() == [9]  # one row: gone from 18 November, now on the 21st
    stored = pl.read_delta(str(layout.table))
    assert stored.filter(pl.col("event_id") == "2026-11-18-1")["event_date"].to_list() == [
        date(2026, 11, 21)
    ]
    # the 19th and 20th were not touched: their files are the same files; the 18th's was rewritten
    files_after = _active_files(layout)
    assert {f for f in files_before if "2026-11-19" in f or "2026-11-20" in f} <= files_after
    assert not {f for f in files_after if "2026-11-18" in f} & files_before


def _active_files(layout: Layout) -> set[str]:
    return set(DeltaTable(str(layout.table)).file_uris())


def test_an_older_copy_in_a_later_run_changes_nothing(tmp_path: Path, layout: Layout) -> None:
    run_etl(
        write_lines(tmp_path / "d1.jsonl", [raw_event(event_time="2026-11-20T10:00:00Z")]), layout
    )
    stale = raw_event(event_time="2026-11-20T09:00:00Z", order__n_items=7)
    result = run_etl(write_lines(tmp_path / "d2.jsonl", [stale]), layout)
    assert (result.committed, result.new_events, result.changed_events) == (False, 0, 0)
    assert read_clean_dataset(layout.table)["n_items"].to_list() == [3]


def test_a_tie_across_runs_goes_to_the_later_run_when_it_differs(
    tmp_path: Path, layout: Layout
) -> None:
    run_etl(write_lines(tmp_path / "d1.jsonl", [raw_event(order__n_items=1)]), layout)
    result = run_etl(write_lines(tmp_path / "d2.jsonl", [raw_event(order__n_items=4)]), layout)
    assert (result.committed, result.changed_events) == (True, 1)
    assert read_clean_dataset(layout.table)["n_items"].to_list() == [4]


def test_large_runs_are_staged_in_chunks_with_the_same_result(tmp_path: Path) -> None:
    """Three runs (the third re-sends corrections of the first) cleaned 500 lines at a time
    give the same table and counts as in one piece; lines = clean + duplicates + rejected."""
    from datetime import UTC, datetime

    raws = [
        generate_events(
            tmp_path / f"d{day}.jsonl",
            2_000,
            start=datetime(2026, 1, day, tzinfo=UTC),
            days=1,
            dirt=Dirt(duplicates=80, bad_lines=7),
        ).output
        for day in (1, 2)
    ]
    corrections = [  # the same events, same time, one item more: the later run wins the tie
        re.sub(r'"n_items":(\d+)', lambda m: f'"n_items":{int(m[1]) + 1}', line)
        for line in raws[0].read_text().splitlines()[:300]
    ]
    raws.append(write_lines(tmp_path / "d3.jsonl", corrections))
    results = {}
    for chunk in (500, 10**6):
        layout = layout_under(tmp_path / f"chunk{chunk}")
        results[chunk] = [
            run_etl(raw, layout, chunk_lines=chunk, in_memory_rows=chunk) for raw in raws
        ]
        for result in results[chunk]:
            assert result.lines == result.clean + result.duplicates + result.rejected
        results[chunk].append(read_clean_dataset(layout.table).sort("event_id"))
    small, whole = results[500], results[10**6]
    assert small[-1].equals(whole[-1])
    for a, b in zip(small[:-1], whole[:-1], strict=True):
        assert (a.clean, a.duplicates, a.rejected, a.new_events, a.changed_events) == (
            b.clean,
            b.duplicates,
            b.rejected,
            b.new_events,
            b.changed_events,
        )
    assert whole[-1].height == 4_000
    assert whole[2].changed_events > 250  # the corrections


def test_etl_removes_what_killed_runs_left_behind_and_only_that(
    tmp_path: Path, layout: Layout
) -> None:
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no process has any more
    layout.processed_dir.mkdir(parents=True)
    layout.rejected_dir.mkdir(parents=True)
    stage = layout.processed_dir / f".etl-stage-{dead.pid}"
    (stage / "buckets").mkdir(parents=True)
    half_written = layout.rejected_dir / f".day1.rejected.jsonl.tmp-{dead.pid}"
    half_written.write_text("half")
    alive = layout.processed_dir / f".etl-stage-{os.getppid()}"  # a live process's
    alive.mkdir()
    other = layout.processed_dir / "notes.tmp-1"  # not a leftover's name
    other.write_text("mine")
    run_etl(write_lines(tmp_path / "raw.jsonl", [raw_event()]), layout)
    assert not stage.exists() and not half_written.exists()
    assert alive.exists() and other.exists()


def test_a_run_interrupted_after_its_commit_keeps_its_quarantine_for_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (or an error) after the table's commit, before the quarantine's rename: the
    pending quarantine stays, and the next run, started from another folder with another
    absolute path to the same data (relative folders, as the defaults are), moves it into place
    and writes the quality report of the committed version."""
    import orderpipe.etl.run as etl_module
    from orderpipe.etl.recovery import interrupted_run

    raw = write_lines(tmp_path / "raw.jsonl", [raw_event(event_id="a"), raw_event(event_id="b")])
    with raw.open("a") as out:
        out.write("{not json\n")
    (tmp_path / "cron").mkdir()
    relative = Layout(Path("out/data"), Path("out/artifacts"), Path("out/reports"), Path("eco"))
    real_merge = etl_module.merge_into_table

    def merge_then_interrupt(*args: object, **kwargs: object) -> object:
        real_merge(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(etl_module, "merge_into_table", merge_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_etl(raw, relative)
    monkeypatch.setattr(etl_module, "merge_into_table", real_merge)
    assert not relative.rejected_for(raw).exists() and interrupted_run(relative) == 0
    monkeypatch.chdir(tmp_path / "cron")  # the same data, seen through other paths
    again = Layout(Path("../out/data"), Path("../out/artifacts"), Path("../out/reports"), Path("e"))
    day2 = write_lines(tmp_path / "day2.jsonl", [raw_event(event_id="c")])
    run_etl(day2, again)  # finishes version 0 first, then commits version 1
    quarantine = again.rejected_for(raw)
    assert quarantine.read_text().count("\n") == 1  # the first run's, moved into place
    assert sorted(p.name for p in again.rejected_dir.iterdir()) == sorted(
        [quarantine.name, again.rejected_for(day2).name]
    )
    assert interrupted_run(again) is None
    report = json.loads(again.quality_report.read_text())
    assert report["dataset"]["table_version"] == 1 and report["input"].endswith("day2.jsonl")
