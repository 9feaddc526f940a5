import json
from pathlib import Path

import polars as pl
import pytest

from orderpipe import schema
from orderpipe.errors import OrderpipeError
from orderpipe.generate import BAD_LINE_KINDS, Dirt, generate_events
from orderpipe.layout import truth_for


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


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
