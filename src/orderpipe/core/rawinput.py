"""Input lines as users have them (a file, gzip, standard input, a FIFO, a quarantine file, a BOM,
bytes that are not UTF-8) -> frames of `line_number`, `line` and `raw_base64`."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import stat
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import polars as pl

from orderpipe.core.errors import OrderpipeError, UsageError

READ_BLOCK = 1 << 20  # bytes read at a time by iter_raw_lines
PARSE_BYTES = 8 << 20  # bytes of complete lines split and checked at a time
GZIP_HEAD = 4_096  # bytes enough to tell a gzip header from text that starts like one
GZIP_MAGIC = b"\x1f\x8b"
GZIP_SMALLEST = 20  # bytes of the shortest gzip stream (header, empty deflate block, trailer)
BOM = b"\xef\xbb\xbf"
STDIN = "-"
QUARANTINE_SUFFIX = ".rejected.jsonl"


def read_raw_lines(source: Path | str) -> pl.DataFrame:
    """`line_number` (from 1), `line` (None when not UTF-8) and `raw_base64` (its bytes then).

    `source` is a file (gzip is recognised), or `-` for standard input. A UTF-8 byte-order
    mark at the very start is dropped; anywhere else it makes its line a bad line. A quarantine
    file (`*.rejected.jsonl`, repaired or not) gives back the lines it holds, byte for byte.
    """
    if str(source) == STDIN:
        return lines_from_bytes(sys.stdin.buffer.read())
    path = Path(source)
    _check_readable(path)
    if path.name.endswith(QUARANTINE_SUFFIX):
        return lines_from_bytes(quarantined_bytes(path), gzipped=False)
    if not path.is_file():  # a FIFO, <(process substitution): it can be read only once
        return lines_from_bytes(_read_bytes(path))
    try:
        lines = pl.read_lines(path, name="line", row_index_name="line_number", row_index_offset=1)
    except (pl.exceptions.PolarsError, OSError):
        # Not UTF-8 somewhere, or gzip's magic bytes at the start of a file that is not gzip:
        # the careful path, line by line (a `.gz` file that does not decompress is an error).
        return lines_from_bytes(_read_bytes(path), gzipped=True if path.suffix == ".gz" else None)
    lines = lines.with_columns(pl.col("line_number").cast(pl.Int64))
    if lines.height and (lines["line"][0] or "").startswith("\ufeff"):
        lines = lines.with_columns(
            pl.when(pl.col("line_number") == 1)
            .then(pl.col("line").str.strip_prefix("\ufeff"))
            .otherwise(pl.col("line"))
        )
    return lines.with_columns(pl.lit(None, dtype=pl.String).alias("raw_base64"))


def iter_raw_lines(
    source: Path | str, chunk_lines: int, *, block_bytes: int = READ_BLOCK
) -> Iterator[pl.DataFrame]:
    """`read_raw_lines` in frames of at most `chunk_lines` lines, `line_number` counted across
    them; the input is read `block_bytes` at a time and never held whole.

    The same inputs (a file, gzip, `-`, a FIFO, a quarantine file) and the same lines. A path
    that cannot be read raises here; damaged gzip raises where reading reaches the damage.
    """
    if chunk_lines < 1:
        raise ValueError(f"chunk_lines must be at least 1, got {chunk_lines}")
    if str(source) == STDIN:
        blocks = _read_blocks(lambda: sys.stdin.buffer, block_bytes, "standard input", close=False)
        return _line_frames(_gunzipped(blocks, None, block_bytes), chunk_lines)
    path = Path(source)
    _check_readable(path)
    if path.name.endswith(QUARANTINE_SUFFIX):
        return _line_frames((line + b"\n" for line in _quarantined_lines(path)), chunk_lines)
    blocks = _read_blocks(lambda: path.open("rb"), block_bytes, str(path))
    gzipped = True if path.suffix == ".gz" else None
    return _line_frames(_gunzipped(blocks, gzipped, block_bytes), chunk_lines)


def lines_from_bytes(data: bytes, *, gzipped: bool | None = None) -> pl.DataFrame:
    """The lines of `data`, each decoded alone: a bad line never hides good ones.

    `gzipped` None: gzip when it starts with gzip's magic bytes and decompresses (a text file
    whose first line happens to start with them stays a text file).
    """
    if gzipped or (gzipped is None and data[:2] == GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            if gzipped:
                raise OrderpipeError(f"the input is not valid gzip: {exc}") from None
    frames = list(_line_frames([data], sys.maxsize))
    return frames[0] if frames else _lines_frame([], 1)


def _line_frames(blocks: Iterable[bytes], chunk_lines: int) -> Iterator[pl.DataFrame]:
    """Frames of `chunk_lines` lines cut from `blocks`: a line ends at a newline (a carriage
    return before it is dropped), the final newline ends the last line rather than starting an
    empty one, a BOM opening the data is dropped.

    Complete lines go to polars' line reader PARSE_BYTES at a time, or as soon as they complete
    a frame (the UTF-8 check and the split in Rust); a piece that is not UTF-8 is split and
    checked line by line."""
    number = 1
    parsed: list[pl.DataFrame] = []  # lines not yet in a frame
    held = 0
    pending: list[bytes] = []  # bytes not parsed yet; the last line may be incomplete
    pending_bytes = 0
    at_start = True

    def frames(final: bool) -> Iterator[pl.DataFrame]:
        nonlocal number, parsed, held
        while held >= chunk_lines or (final and held):
            lines = pl.concat(parsed, rechunk=False) if len(parsed) > 1 else parsed[0]
            take = min(chunk_lines, lines.height)
            yield lines.slice(0, take).select(
                (pl.int_range(take, dtype=pl.Int64) + number).alias("line_number"),
                "line",
                "raw_base64",
            )
            number, held = number + take, held - take
            parsed = [lines.slice(take)] if take < lines.height else []

    pending_lines = 0  # newlines in `pending`
    for block in blocks:
        pending.append(block)
        pending_bytes += len(block)
        pending_lines += block.count(b"\n")
        if pending_bytes < PARSE_BYTES and held + pending_lines < chunk_lines:
            continue  # a frame is not complete yet: parse more at once
        data = b"".join(pending)
        if at_start:
            data, at_start = data.removeprefix(BOM), False
        cut = data.rfind(b"\n") + 1
        if cut:
            lines = _parse_lines(data[:cut])
            parsed.append(lines)
            held += lines.height
        pending = [data[cut:]]
        pending_bytes, pending_lines = len(pending[0]), 0
        yield from frames(final=False)
    data = b"".join(pending)
    if at_start:
        data = data.removeprefix(BOM)
    if data:
        lines = _parse_lines(data if data.endswith(b"\n") else data + b"\n")
        parsed.append(lines)
        held += lines.height
    yield from frames(final=True)


def _parse_lines(data: bytes) -> pl.DataFrame:
    """`line` and `raw_base64` of the lines of `data` (which ends with a newline)."""
    try:
        # Led by an empty line, dropped after: data opening with gzip's, zlib's or zstd's magic
        # bytes is never taken for a compressed stream.
        line = pl.read_lines(io.BytesIO(b"\n" + data), name="line").to_series().slice(1)
    except pl.exceptions.PolarsError:  # not UTF-8 somewhere: each line alone
        return _lines_frame(data.split(b"\n")[:-1], 1).drop("line_number")
    return pl.DataFrame(
        {"line": line, "raw_base64": pl.Series([None] * line.len(), dtype=pl.String)}
    )


def _lines_frame(lines: list[bytes], first_number: int) -> pl.DataFrame:
    """`line_number`, `line` and `raw_base64` for these lines (without their newlines)."""
    texts: list[str | None] = []
    raw_bytes: list[str | None] = [None] * len(lines)
    try:  # usually all UTF-8: one decode for the whole chunk, carriage returns dropped by polars
        if lines:
            texts = list(b"\n".join(lines).decode("utf-8").split("\n"))
        line = pl.Series("line", texts, dtype=pl.String).str.strip_suffix("\r")
    except UnicodeDecodeError:
        for index, raw in enumerate(lines):
            raw = raw.removesuffix(b"\r")
            try:
                texts.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                texts.append(None)
                raw_bytes[index] = base64.b64encode(raw).decode("ascii")
        line = pl.Series("line", texts, dtype=pl.String)
    numbers = range(first_number, first_number + len(lines))
    return pl.DataFrame(
        {
            "line_number": pl.Series(numbers, dtype=pl.Int64),
            "line": line,
            "raw_base64": pl.Series(raw_bytes, dtype=pl.String),
        }
    )


def _read_blocks(
    open_stream: Callable[[], BinaryIO], block_bytes: int, name: str, *, close: bool = True
) -> Iterator[bytes]:
    """The stream's bytes, `block_bytes` at a time; opened at the first read, then closed."""
    try:
        stream = open_stream()
        try:
            while block := stream.read(block_bytes):
                yield block
        finally:
            if close:
                stream.close()
    except OSError as exc:
        raise OrderpipeError(f"cannot read {name}: {exc.strerror or exc}") from None


def _gunzipped(blocks: Iterator[bytes], gzipped: bool | None, block_bytes: int) -> Iterator[bytes]:
    """`blocks` decompressed when they are gzip, as they are otherwise.

    `gzipped` None: gzip when they start with a gzip header (text that happens to start with
    gzip's magic bytes stays text); True: they must be gzip.
    """
    head = b""
    for block in blocks:
        head += block
        if len(head) >= GZIP_HEAD:
            break
    guess_text = gzipped is None and (len(head) < GZIP_SMALLEST or not _gzip_header_ok(head))
    if head[:2] != GZIP_MAGIC or guess_text:
        if head:
            yield head
        yield from blocks
        return
    try:
        with gzip.GzipFile(fileobj=_BlockReader(head, blocks), mode="rb") as text:
            while block := text.read(block_bytes):
                yield block
    except (OSError, EOFError, zlib.error) as exc:
        raise OrderpipeError(f"the input is not valid gzip: {exc}") from None


def _gzip_header_ok(head: bytes) -> bool:
    try:
        zlib.decompressobj(wbits=31).decompress(head, 1)  # the header is checked before output
    except zlib.error:
        return False
    return True


class _BlockReader:
    """A read-once binary stream over `head` then `blocks`, for gzip.GzipFile (a pipe cannot
    be rewound after its first bytes were looked at)."""

    def __init__(self, head: bytes, blocks: Iterator[bytes]) -> None:
        self._block, self._offset, self._blocks = head, 0, blocks

    def read(self, size: int = -1) -> bytes:
        while self._offset >= len(self._block):
            block = next(self._blocks, None)
            if block is None:
                return b""
            self._block, self._offset = block, 0
        end = len(self._block) if size < 0 else self._offset + size
        chunk = self._block[self._offset : end]
        self._offset += len(chunk)
        return chunk


def quarantined_bytes(path: Path) -> bytes:
    """The lines a quarantine file holds (`raw`, or `raw_base64` when not UTF-8), one per line."""
    return b"".join(line + b"\n" for line in _quarantined_lines(path))


def _quarantined_lines(path: Path) -> Iterator[bytes]:
    """The lines a quarantine file holds, read entry by entry."""
    try:
        with path.open("rb") as file:
            number = 0
            for text_line in file:
                for entry in text_line.splitlines():
                    number += 1
                    if entry.strip():  # else a blank line left by an editor
                        yield _quarantined_line(entry, number, path)
    except OSError as exc:
        raise OrderpipeError(f"cannot read {path}: {exc.strerror or exc}") from None


def _quarantined_line(entry: bytes, number: int, path: Path) -> bytes:
    try:
        record = json.loads(entry)
        if record.get("raw_base64") is not None:
            return base64.b64decode(record["raw_base64"], validate=True)
        if isinstance(record["raw"], str):
            return record["raw"].encode("utf-8", "surrogatepass")
        raise TypeError("no raw text")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise OrderpipeError(
            f"line {number} of {path} is not a quarantine entry (raw or raw_base64)"
        ) from None


def _check_readable(path: Path) -> None:
    """A precise one-line error (exit 2) for what is not a readable file of lines."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:  # usually an earlier phase not run yet: a runtime failure, exit 1
        raise OrderpipeError(
            f"input file not found: {path} (run `orderpipe generate` first)"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot open {path}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise UsageError(f"{path} is a directory: give a file of JSON Lines (or - for stdin)")
    if not stat.S_ISREG(mode) and not stat.S_ISFIFO(mode):
        raise UsageError(f"{path} is a device, not a file of JSON Lines")
    if not os.access(path, os.R_OK):
        raise UsageError(f"cannot read {path}: permission denied")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise OrderpipeError(f"cannot read {path}: {exc.strerror or exc}") from None
