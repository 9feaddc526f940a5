"""lines: input as users have it (gzip, stdin, BOM, not UTF-8) and the never-raising line check."""

from __future__ import annotations

import base64
import gzip
import io
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from orderpipe.cli import app
from orderpipe.core.cleaning import clean_lines
from orderpipe.core.errors import OrderpipeError, UsageError
from orderpipe.core.linecheck import describe_json_problem, json_depth
from orderpipe.core.rawinput import READ_BLOCK, iter_raw_lines, read_raw_lines
from orderpipe.etl.run import run_etl
from tests.factories import layout_under, raw_event

EVENT = json.dumps(raw_event(event_id="e-1")).encode()
OTHER = json.dumps(raw_event(event_id="e-2")).encode()


def test_a_byte_order_mark_at_the_start_of_the_file_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "windows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + EVENT + b"\r\n" + OTHER + b"\r\n")
    batch = clean_lines(read_raw_lines(path))
    assert sorted(batch.clean["event_id"]) == ["e-1", "e-2"]


def test_a_byte_order_mark_inside_the_file_makes_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "pasted.jsonl"
    path.write_bytes(EVENT + b"\n\xef\xbb\xbf" + OTHER + b"\n")
    batch = clean_lines(read_raw_lines(path))
    assert batch.clean["event_id"].to_list() == ["e-1"]
    assert batch.rejected["reason"][0].startswith("a byte-order mark inside the file")


def test_bytes_that_are_not_utf8_are_kept_exactly(tmp_path: Path) -> None:
    bad = b'{"event_id": "\xe9t\xe9"}'
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(EVENT + b"\n" + bad + b"\n")
    layout = layout_under(tmp_path)
    run_etl(path, layout)
    entry = json.loads(layout.rejected_for(path).read_text().splitlines()[0])
    assert (entry["reason"], entry["raw"]) == ("not UTF-8 text", None)
    assert base64.b64decode(entry["raw_base64"]) == bad


def test_a_repaired_quarantine_file_brings_its_lines_back(tmp_path: Path) -> None:
    broken = json.dumps(raw_event(event_id="e-3", order__n_items=None)).encode()
    source = tmp_path / "day1.jsonl"
    source.write_bytes(EVENT + b"\n" + broken + b"\n" + b"\xff\n")
    layout = layout_under(tmp_path)
    assert run_etl(source, layout).rejected == 2
    quarantine = layout.rejected_for(source)
    entries = [json.loads(line) for line in quarantine.read_text().splitlines()]
    entries[0]["raw"] = entries[0]["raw"].replace('"n_items": null', '"n_items": 2')  # repaired
    quarantine.write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    replay = run_etl(quarantine, layout)
    assert (replay.lines, replay.clean, replay.rejected) == (2, 1, 1)
    assert layout.rejected_for(quarantine) != quarantine  # the replay never overwrites its input
    again = json.loads(layout.rejected_for(quarantine).read_text())
    assert base64.b64decode(again["raw_base64"]) == b"\xff"


def test_gzip_input_is_read(tmp_path: Path) -> None:
    path = tmp_path / "day.jsonl.gz"
    path.write_bytes(gzip.compress(EVENT + b"\n" + OTHER + b"\n"))
    assert read_raw_lines(path)["line"].to_list() == [EVENT.decode(), OTHER.decode()]


def test_standard_input_is_read_with_dash(workdir: Path) -> None:
    data = gzip.compress(EVENT + b"\n\xff\n")  # zcat is optional: gzip on stdin works too
    result = CliRunner().invoke(app, ["etl", "--input", "-", "--json"], input=data)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["lines"], report["clean"], report["rejected"]) == (2, 1, 1)
    assert report["outputs"]["rejected"].endswith("stdin.rejected.jsonl")


@pytest.mark.parametrize(
    ("target", "message"), [("/dev/null", "is a device"), (".", "is a directory")]
)
def test_what_is_not_a_file_of_lines_is_one_line_and_exit_2(
    workdir: Path, target: str, message: str
) -> None:
    result = CliRunner().invoke(app, ["etl", "--input", target])
    assert result.exit_code == 2
    assert message in result.stderr.strip().splitlines()[-1]
    with pytest.raises(UsageError):
        read_raw_lines(Path(target))


def test_a_missing_file_is_still_a_runtime_failure(tmp_path: Path) -> None:
    with pytest.raises(OrderpipeError, match="input file not found"):
        read_raw_lines(tmp_path / "none.jsonl")


def test_nesting_is_measured_outside_strings_only() -> None:
    assert json_depth('{"a": "[[[[{{{{"}', limit=8) == 1
    assert json_depth('{"a": "\\"[[[["}', limit=8) == 1
    assert json_depth("[" * 100_000, limit=8) == 9  # stops counting past the limit


@pytest.mark.parametrize(
    "line",
    ["[" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000, "{" + "9" * 5000 + "}", "\ud800", ""],
)
def test_describing_a_bad_line_never_raises(line: str) -> None:
    assert describe_json_problem(line)


def test_gzip_magic_bytes_opening_a_text_file_cost_one_line(tmp_path: Path) -> None:
    """Found by `make fuzz`: the whole file used to be refused as broken gzip."""
    path = tmp_path / "day.jsonl"
    path.write_bytes(b"\x1f\x8b\n" + EVENT + b"\n")
    batch = clean_lines(read_raw_lines(path))
    assert batch.clean["event_id"].to_list() == ["e-1"]
    assert batch.rejected.height == 1


def test_a_damaged_gz_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "day.jsonl.gz"
    path.write_bytes(gzip.compress(EVENT + b"\n")[:-8])
    with pytest.raises(OrderpipeError, match="not valid gzip"):
        read_raw_lines(path)


def test_a_fifo_is_read_once_and_nothing_is_lost(tmp_path: Path) -> None:
    """Process substitution (`-i <(zcat day.jsonl.gz)`) is a pipe: it cannot be read twice."""
    import os
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(EVENT + b"\n\xff\n" + OTHER + b"\n"))
    writer.start()
    lines = read_raw_lines(fifo)
    writer.join()
    assert lines.height == 3
    assert clean_lines(lines).clean.height == 2


def test_a_quarantine_file_with_blank_lines_and_a_bad_entry(tmp_path: Path) -> None:
    good = tmp_path / "x.rejected.jsonl"
    good.write_text(json.dumps({"raw": EVENT.decode(), "raw_base64": None}) + "\n\n")
    assert read_raw_lines(good)["line"].to_list() == [EVENT.decode()]
    bad = tmp_path / "y.rejected.jsonl"
    bad.write_text(json.dumps({"raw": None, "raw_base64": None}) + "\n")
    with pytest.raises(OrderpipeError, match=r"line 1 of .* is not a quarantine entry"):
        read_raw_lines(bad)


@pytest.mark.parametrize("spelling", ["1e999", "NaN", "Infinity", "-Infinity"])
def test_a_non_finite_amount_is_named(tmp_path: Path, spelling: str) -> None:
    line = EVENT.replace(b'"basket_value": 120.5', b'"basket_value": ' + spelling.encode())
    path = tmp_path / "day.jsonl"
    path.write_bytes(line + b"\n")
    batch = clean_lines(read_raw_lines(path))
    assert batch.rejected["reason"].to_list() == ["basket_value is not a number"]


def test_trailing_newline_characters_in_a_text_are_normalised_not_rejected(tmp_path: Path) -> None:
    event = raw_event(event_id="nl-1", order__device="mobile\n", customer__country="fr\r\n")
    path = tmp_path / "day.jsonl"
    path.write_text(json.dumps(event) + "\n")
    batch = clean_lines(read_raw_lines(path))
    assert batch.clean.select("device", "country").row(0) == ("mobile", "FR")


# ---------------------------------------------------------------- reading in chunks
SAMPLES = {
    "plain": EVENT + b"\n" + OTHER + b"\n",
    "blank lines and CRLF": b"\n" + EVENT + b"\r\n\r\n \n" + OTHER + b"\r\n\n",
    "no trailing newline": EVENT + b"\n" + OTHER,
    "byte-order marks": b"\xef\xbb\xbf" + EVENT + b"\r\n\xef\xbb\xbf" + OTHER + b"\n",
    "not UTF-8": EVENT + b"\n\xff\xfe\r\n" + "café".encode() + b"\n\xc3\n" + OTHER,
    "gzip magic bytes opening text": b"\x1f\x8b\n" + EVENT + b"\n",
    "empty": b"",
}


RAW_LINES = pl.DataFrame(
    schema={"line_number": pl.Int64, "line": pl.String, "raw_base64": pl.String}
)


def _read_in_chunks(source: Path | str, chunk_lines: int, block_bytes: int) -> pl.DataFrame:
    frames = list(iter_raw_lines(source, chunk_lines, block_bytes=block_bytes))
    assert all(0 < frame.height <= chunk_lines for frame in frames)
    assert all(frame.height == chunk_lines for frame in frames[:-1])
    return pl.concat([RAW_LINES.clear(), *frames])


@pytest.mark.parametrize("gzipped", [False, True], ids=["text", "gzip"])
@pytest.mark.parametrize("data", SAMPLES.values(), ids=SAMPLES.keys())
def test_reading_in_chunks_gives_the_lines_of_one_whole_read(
    tmp_path: Path, data: bytes, gzipped: bool
) -> None:
    path = tmp_path / ("day.jsonl.gz" if gzipped else "day.jsonl")
    path.write_bytes(gzip.compress(data) if gzipped else data)
    whole = read_raw_lines(path)
    # every line count per chunk and every block size a small file can split on
    for chunk_lines in (1, 2, 3, 20_000):
        for block_bytes in (1, 2, 3, 5, READ_BLOCK):
            chunked = _read_in_chunks(path, chunk_lines, block_bytes)
            assert chunked.equals(whole), f"{chunk_lines} lines a chunk, {block_bytes}-byte blocks"


@pytest.mark.parametrize(
    "data",
    [SAMPLES["not UTF-8"], gzip.compress(SAMPLES["byte-order marks"]), b"\x1f\x8b\n" + EVENT],
    ids=["text", "gzip", "gzip magic bytes opening text"],
)
def test_standard_input_is_read_in_chunks_like_one_whole_read(
    monkeypatch: pytest.MonkeyPatch, data: bytes
) -> None:
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(data)))
    whole = read_raw_lines("-")
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(data)))
    assert_frame_equal(_read_in_chunks("-", 2, 3), whole)


def test_a_quarantine_file_is_read_in_chunks_like_one_whole_read(tmp_path: Path) -> None:
    path = tmp_path / "day.rejected.jsonl"
    entries = [
        {"raw": EVENT.decode(), "raw_base64": None},
        {"raw": None, "raw_base64": base64.b64encode(b"\xff\xfe").decode()},
        {"raw": OTHER.decode()},
    ]
    path.write_text("\n".join(json.dumps(entry) for entry in entries) + "\n\r\n")
    assert_frame_equal(_read_in_chunks(path, 2, 7), read_raw_lines(path))


def test_the_first_chunk_comes_before_the_input_is_read_to_its_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = io.BytesIO(b"".join(EVENT + b"\n" for _ in range(1000)))
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=stream))
    frames = iter_raw_lines("-", 10, block_bytes=4096)
    first = next(frames)
    assert first["line_number"].to_list() == list(range(1, 11))
    assert stream.tell() <= 2 * 4096  # a block or two, not the 300 kB
    assert sum(frame.height for frame in frames) == 990


def test_a_damaged_gz_file_read_in_chunks_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "day.jsonl.gz"
    path.write_bytes(gzip.compress(EVENT + b"\n")[:-8])
    with pytest.raises(OrderpipeError, match="not valid gzip"):
        list(iter_raw_lines(path, 2))


def test_a_missing_file_fails_before_the_first_chunk_is_asked_for(tmp_path: Path) -> None:
    with pytest.raises(OrderpipeError, match="input file not found"):
        iter_raw_lines(tmp_path / "none.jsonl", 2)


def test_a_gzip_header_over_damaged_data_is_read_as_text_by_both_readers(tmp_path: Path) -> None:
    """zlib.error (damaged deflate data after a valid header) escaped the whole read."""
    damaged = gzip.compress(b'{"a": 1}\n')[:10] + b'\xff\xfe\x00garbage\n{"a": 2}\n'
    path = tmp_path / "in.jsonl"
    path.write_bytes(damaged)
    whole = read_raw_lines(path)
    assert whole.height == 2
    assert whole["line"][1] == '{"a": 2}'
    chunked = pl.concat(iter_raw_lines(path, 1), how="diagonal_relaxed")
    assert chunked.select(whole.columns).equals(whole)


def test_a_text_line_shorter_than_any_gzip_stream_is_text_for_the_chunked_reader(
    tmp_path: Path,
) -> None:
    """Found by the property test: b"\\x1f\\x8b\\n" raised "not valid gzip" in chunks only."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\x1f\x8b\n")
    whole = read_raw_lines(path)
    chunked = pl.concat(iter_raw_lines(path, 1, block_bytes=1), how="diagonal_relaxed")
    assert chunked.select(whole.columns).equals(whole)
