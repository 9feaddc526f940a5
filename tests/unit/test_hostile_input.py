"""Hostile input never stops a phase: properties over any bytes, and the named regression corpus.

CI runs a derandomized profile of a few hundred examples per property; `make fuzz` runs the same
properties for minutes (HYPOTHESIS_PROFILE=fuzz).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orderpipe.core.cleaning import clean_lines, clean_record_lines
from orderpipe.core.rawinput import iter_raw_lines, read_raw_lines
from orderpipe.etl.run import run_etl
from orderpipe.stream.messages import UNDECODABLE, sort_messages
from orderpipe.table.read import read_clean_dataset
from tests.factories import layout_under, raw_event
from tests.hostile import CORPUS, HOSTILE_LINES


@dataclass(frozen=True)
class Record:
    value: bytes | None
    key: bytes | None = None
    topic: str = "orders"
    partition: int = 0
    offset: int = 0
    timestamp: int = 0


def recovered(row: dict) -> bytes:
    """A quarantined line's exact bytes, from `raw` or `raw_base64`."""
    if row.get("raw_base64") is not None:
        return base64.b64decode(row["raw_base64"])
    return row["raw"].encode("utf-8", "surrogatepass")


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


@given(st.binary(max_size=2000))
def test_checking_any_bytes_as_a_message_never_raises(data: bytes) -> None:
    batch = sort_messages([Record(data)])
    assert batch.clean.height + len(batch.dead) == 1
    assert not any(letter.error.startswith(UNDECODABLE) for letter in batch.dead)  # no rescue


@given(st.lists(HOSTILE_LINES, max_size=6))
def test_decoding_any_lines_never_raises_and_accounts_for_each(
    tmp_path_factory: pytest.TempPathFactory, hostile: list[bytes]
) -> None:
    path = write(tmp_path_factory.mktemp("lines") / "in.jsonl", hostile)
    lines = read_raw_lines(path)
    for clean in (clean_lines, clean_record_lines):
        batch = clean(lines)
        assert batch.clean.height + batch.rejected.height == lines.height


@given(st.lists(HOSTILE_LINES, max_size=6), st.integers(1, 4), st.integers(1, 64))
def test_reading_any_lines_in_chunks_never_raises_and_reads_them_whole(
    tmp_path_factory: pytest.TempPathFactory, hostile: list[bytes], chunk: int, block: int
) -> None:
    """The producer's reader (chunks of lines, blocks of bytes) sees the lines etl sees."""
    path = write(tmp_path_factory.mktemp("chunks") / "in.jsonl", hostile)
    frames = list(iter_raw_lines(path, chunk, block_bytes=block))
    assert all(frame.height <= chunk for frame in frames)
    whole = read_raw_lines(path)
    if path.read_bytes().lstrip(b"\xef\xbb\xbf").strip(b"\r\n") == b"":
        return  # a file of only a BOM and line ends: one empty line or none (known, documented)
    chunked = pl.concat(frames, how="diagonal_relaxed") if frames else whole.clear()
    assert chunked.select(whole.columns).equals(whole)


@given(st.lists(HOSTILE_LINES, max_size=5), st.integers(1, 5), st.randoms(use_true_random=False))
def test_etl_keeps_every_valid_event_and_every_bad_lines_bytes(
    tmp_path_factory: pytest.TempPathFactory, hostile: list[bytes], valid: int, rng: object
) -> None:
    root = tmp_path_factory.mktemp("etl")
    good = [json.dumps(raw_event(event_id=f"valid-{i}")).encode() for i in range(valid)]
    lines = good + hostile
    rng.shuffle(lines)  # type: ignore[attr-defined]
    source = write(root / "mixed.jsonl", lines)
    layout = layout_under(root)
    result = run_etl(source, layout)
    assert result.lines == len(lines) == result.clean + result.duplicates + result.rejected
    kept = set(read_clean_dataset(layout.table)["event_id"])
    assert {f"valid-{i}" for i in range(valid)} <= kept
    quarantine = layout.rejected_for(source).read_text(encoding="utf-8").splitlines()
    for row in map(json.loads, quarantine):
        original = lines[row["line_number"] - 1].removesuffix(b"\r")
        if row["line_number"] == 1:  # a byte-order mark opening the file belongs to no line
            original = original.removeprefix(b"\xef\xbb\xbf")
        assert recovered(row) == original, row["reason"]


@pytest.mark.parametrize("name", list(CORPUS))
def test_each_corpus_line_among_good_lines(tmp_path: Path, name: str) -> None:
    good = [json.dumps(raw_event(event_id=f"good-{i}")).encode() for i in range(20)]
    lines = [*good[:10], CORPUS[name], *good[10:]]
    source = write(tmp_path / "day.jsonl", lines)
    layout = layout_under(tmp_path)
    result = run_etl(source, layout)
    assert result.lines == 21 == result.clean + result.duplicates + result.rejected
    assert {f"good-{i}" for i in range(20)} <= set(read_clean_dataset(layout.table)["event_id"])
    dead = sort_messages([Record(CORPUS[name])])
    assert dead.clean.height + len(dead.dead) == 1
    assert not any(letter.error.startswith(UNDECODABLE) for letter in dead.dead)
