import json
import re
from pathlib import Path

import polars as pl
import pytest

from orderpipe.core import schema
from orderpipe.core.errors import OrderpipeError
from orderpipe.core.layout import truth_for
from orderpipe.generate import world
from orderpipe.generate.dirt import BAD_LINE_KINDS, Dirt
from orderpipe.generate.writer import generate_events


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_worlds_shares_and_effects_are_keyed_by_the_contracts_vocabularies() -> None:
    """The generator draws exactly the devices, channels and categories the contract knows, in
    its order (the order fixes the draws, so the bytes)."""
    for vocabulary, tables in (
        (schema.DEVICES, (world.DEVICE_SHARE, world.RETURN_DEVICE)),
        (schema.CHANNELS, (world.CHANNEL_SHARE, world.RETURN_CHANNEL)),
        (
            schema.CATEGORIES,
            (
                world.CATEGORY_SHARE,
                world.CATEGORY_PRICE,
                world.CATEGORY_ITEMS,
                world.RETURN_CATEGORY,
            ),
        ),
    ):
        for table in tables:
            assert tuple(table) == vocabulary
    with pytest.raises(ValueError, match="vocabulary"):
        world.keyed(schema.DEVICES, mobile=0.5, desktop=0.5)
    assert all(len(country) == 2 and country.isupper() for country in world.COUNTRY_SHARE)


def test_same_seed_gives_the_same_bytes(tmp_path: Path) -> None:
    dirt = Dirt(duplicates=40, bad_lines=12)
    a = generate_events(tmp_path / "a.jsonl", 2000, seed=7, dirt=dirt)
    b = generate_events(tmp_path / "b.jsonl", 2000, seed=7, dirt=dirt)
    c = generate_events(tmp_path / "c.jsonl", 2000, seed=8, dirt=dirt)
    assert a.output.read_bytes() == b.output.read_bytes()
    assert a.output.read_bytes() != c.output.read_bytes()


def test_lines_are_events_plus_duplicates_plus_bad_lines(tmp_path: Path) -> None:
    result = generate_events(tmp_path / "raw.jsonl", 1000, dirt=Dirt(duplicates=30, bad_lines=10))
    lines = (tmp_path / "raw.jsonl").read_text().splitlines()
    assert result.lines == len(lines) == 1000 + 30 + 10
    assert result.bad_lines == 10


def test_events_have_the_raw_contract_shape(tmp_path: Path) -> None:
    generate_events(tmp_path / "raw.jsonl", 500, dirt=Dirt(duplicates=0))
    for event in _events(tmp_path / "raw.jsonl"):
        assert list(event) == ["event_id", "event_time", "order_id", "customer", "order"]
        assert list(event["customer"]) == list(schema.CUSTOMER_FIELDS)
        assert list(event["order"]) == list(schema.ORDER_FIELDS)
        assert event["event_time"].endswith("Z")
        assert isinstance(event["order"]["n_items"], int)
        assert event["order"]["is_returned"] in (0, 1)


def test_world_is_realistic(tmp_path: Path) -> None:
    generate_events(
        tmp_path / "raw.jsonl", 20_000, dirt=Dirt(duplicates=0, missing_rate=0, untidy_rate=0)
    )
    frame = pl.DataFrame(
        [
            {**e["customer"], **e["order"], "order_id": e["order_id"]}
            for e in _events(tmp_path / "raw.jsonl")
        ]
    )
    # recurring customers, and each order belongs to one customer
    assert frame["customer_id"].n_unique() < frame.height / 3
    assert frame.group_by("order_id").agg(pl.col("customer_id").n_unique()).max()[0, 1] == 1
    # basket value grows with items, and electronics cost more per item than books
    per_items = frame.group_by("n_items").agg(pl.col("basket_value").mean()).sort("n_items")
    assert per_items["basket_value"][0] < per_items["basket_value"][2]
    per_item = frame.with_columns((pl.col("basket_value") / pl.col("n_items")).alias("unit"))
    means = dict(per_item.group_by("main_category").agg(pl.col("unit").mean()).iter_rows())
    assert means["electronics"] > 3 * means["books"]
    # returns follow the rules: fashion returns more than grocery
    rates = dict(frame.group_by("main_category").agg(pl.col("is_returned").mean()).iter_rows())
    assert rates["fashion"] > 2 * rates["grocery"]


def test_truth_file_holds_every_events_probability(tmp_path: Path) -> None:
    result = generate_events(tmp_path / "raw.jsonl", 300)
    truth = pl.read_parquet(truth_for(result.output))
    assert truth.height == 300
    assert truth["return_proba"].is_between(0, 1).all()


def test_dirt_adds_missing_values_untidy_text_and_duplicates(tmp_path: Path) -> None:
    generate_events(
        tmp_path / "raw.jsonl", 3000, dirt=Dirt(duplicates=100, missing_rate=0.1, untidy_rate=0.3)
    )
    events = _events(tmp_path / "raw.jsonl")
    channels = [e["order"]["channel"] for e in events]
    assert channels.count(None) > 100
    assert any(c and c != c.strip().lower() for c in channels)
    ids = [e["event_id"] for e in events]
    assert len(ids) - len(set(ids)) == 100
    assert any(e["order"]["discount"] is None for e in events)


def test_bad_lines_cover_every_kind(tmp_path: Path) -> None:
    generate_events(tmp_path / "raw.jsonl", 200, dirt=Dirt(bad_lines=len(BAD_LINE_KINDS)))
    lines = (tmp_path / "raw.jsonl").read_text().splitlines()
    bad = [
        line
        for line in lines
        if '"bad-' in line or '"event_id":null' in line or not line.startswith("{")
    ]
    assert len(bad) == len(BAD_LINE_KINDS)


@pytest.mark.parametrize("kwargs", [{"events": 0}, {"events": 10, "days": 0}])
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(OrderpipeError):
        generate_events(tmp_path / "raw.jsonl", **kwargs)


@pytest.fixture
def small_units(monkeypatch: pytest.MonkeyPatch) -> int:
    """Units of 500 events, so a few thousand events span many units and chunks."""
    import orderpipe.generate.writer

    monkeypatch.setattr(orderpipe.generate.writer, "UNIT", 500)
    return 500


def test_the_same_bytes_whatever_the_chunk_size(tmp_path: Path, small_units: int) -> None:
    dirt = Dirt(duplicates=300, bad_lines=25)
    files = []
    for chunk in (small_units, 3 * small_units, 10**9):
        path = tmp_path / f"chunk{chunk}.jsonl"
        result = generate_events(path, 6_000, seed=11, dirt=dirt, chunk_size=chunk)
        assert result.lines == 6_000 + 300 + 25
        files.append((path.read_bytes(), pl.read_parquet(truth_for(path))))
    for data, truth in files[1:]:
        assert data == files[0][0]
        assert truth.equals(files[0][1])
    assert files[0][1]["event_id"].n_unique() == 6_000


def test_lines_come_in_time_order_with_copies_after_their_event(
    tmp_path: Path, small_units: int
) -> None:
    path = tmp_path / "raw.jsonl"
    generate_events(path, 5_000, seed=2, dirt=Dirt(duplicates=400), chunk_size=small_units)
    seen: dict[str, str] = {}
    originals = []
    for event in _events(path):
        if event["event_id"] in seen:  # a re-sent copy, or a later correction
            assert event["event_time"] >= seen[event["event_id"]]
            continue
        seen[event["event_id"]] = event["event_time"]
        originals.append(event["event_time"])
    assert len(originals) == 5_000
    assert originals == sorted(originals)


def test_successive_days_never_reuse_an_id_and_customers_keep_their_country(
    tmp_path: Path,
) -> None:
    from datetime import UTC, datetime

    tidy = Dirt(duplicates=0, missing_rate=0, untidy_rate=0)
    day1 = generate_events(
        tmp_path / "d1.jsonl", 6_000, start=datetime(2026, 1, 1), days=2, dirt=tidy
    )
    day2 = generate_events(
        tmp_path / "d2.jsonl", 3_000, start=datetime(2026, 1, 3, tzinfo=UTC), days=1, dirt=tidy
    )
    first, second = _events(day1.output), _events(day2.output)
    assert {e["event_time"][:10] for e in second} == {"2026-01-03"}
    for key in ("event_id", "order_id"):
        assert not {e[key] for e in first} & {e[key] for e in second}
    assert re.fullmatch(r"ORD-20260103-[0-9a-f]{6}-0000001", second[0]["order_id"])
    countries = {e["customer"]["customer_id"]: e["customer"]["country"] for e in first}
    recurring = [e for e in second if e["customer"]["customer_id"] in countries]
    assert len(recurring) > 1_000
    assert all(
        countries[e["customer"]["customer_id"]] == e["customer"]["country"] for e in recurring
    )


def test_order_numbers_count_per_day(tmp_path: Path, small_units: int) -> None:
    path = tmp_path / "raw.jsonl"
    generate_events(path, 4_000, days=3, dirt=Dirt(duplicates=0), chunk_size=small_units)
    orders = pl.DataFrame(
        [{"order_id": e["order_id"], "day": e["event_time"][:10]} for e in _events(path)]
    )
    for (day,), group in orders.group_by("day"):
        assert group["order_id"].str.starts_with(f"ORD-{day.replace('-', '')}-").all()
        assert group["order_id"].str.slice(4 + 8 + 1, 6).n_unique() == 1  # the run's tag
        numbers = group["order_id"].str.slice(-7).cast(pl.Int64).sort()
        assert numbers.to_list() == list(range(1, group.height + 1))


def test_the_same_day_generated_twice_with_other_seeds_shares_no_order_id(tmp_path: Path) -> None:
    a = generate_events(tmp_path / "a.jsonl", 2_000, seed=1, days=1, dirt=Dirt(duplicates=0))
    b = generate_events(tmp_path / "b.jsonl", 2_000, seed=2, days=1, dirt=Dirt(duplicates=0))
    again = generate_events(tmp_path / "c.jsonl", 2_000, seed=1, days=1, dirt=Dirt(duplicates=0))
    orders = [{e["order_id"] for e in _events(r.output)} for r in (a, b, again)]
    assert not orders[0] & orders[1]
    assert orders[0] == orders[2]


def test_a_negative_seed_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OrderpipeError, match="--seed"):
        generate_events(tmp_path / "raw.jsonl", 10, seed=-1)


def test_generate_removes_its_own_leftovers_of_killed_runs_only(tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = tmp_path / f".raw.jsonl.tmp-{dead.pid}"
    mine.write_text("half a file")
    parts = tmp_path / f".raw.jsonl.truth-parts-{dead.pid}"
    parts.mkdir()
    someone_elses = tmp_path / f".notes.txt.tmp-{dead.pid}"  # the folder is the user's
    someone_elses.write_text("keep")
    generate_events(tmp_path / "raw.jsonl", 50)
    assert not mine.exists() and not parts.exists()
    assert someone_elses.exists()


def test_a_pending_truth_is_moved_only_beside_its_own_events(tmp_path: Path) -> None:
    """A truth file that a kill left pending goes into place only when it holds ids of the
    events file beside it; another run's pending truth stays a leftover."""
    import shutil
    import subprocess
    import sys

    from orderpipe.core.layout import truth_for
    from orderpipe.core.truth import finish_pending_truth

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    raw = generate_events(tmp_path / "raw.jsonl", 500, seed=1).output
    truth = truth_for(raw)
    other = generate_events(tmp_path / "other.jsonl", 500, seed=2).truth
    pending = tmp_path / f".{truth.name}.tmp-{dead.pid}"
    shutil.copy(other, pending)  # another run's truth
    kept = truth.read_bytes()
    assert not finish_pending_truth(truth) and truth.read_bytes() == kept and pending.exists()
    shutil.copy(truth, pending)  # this events file's truth, left pending
    truth.unlink()
    assert finish_pending_truth(truth) and truth.read_bytes() == kept and not pending.exists()
