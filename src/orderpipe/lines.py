"""Input lines as users have them (a file, gzip, standard input, a BOM, bytes that are not UTF-8)
and the line check: JSON text -> the raw struct, or a one-line reason. Never raises on content.

Checking a line depends only on its bytes, so `etl` and the stream consumer share it; the limits
it applies (nesting depth, text lengths...) are in `schema`.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import math
import os
import stat
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import polars as pl

from orderpipe import schema
from orderpipe.errors import OrderpipeError, UsageError

REJECTED_SCHEMA = {
    "line_number": pl.Int64(),
    "reason": pl.String(),
    "raw": pl.String(),  # the line as it was, when it is UTF-8 text
    "raw_base64": pl.String(),  # its exact bytes otherwise
}
DECODE_CHUNK = 16_384
READ_BLOCK = 1 << 20  # bytes read at a time by iter_raw_lines
PARSE_BYTES = 8 << 20  # bytes of complete lines split and checked at a time
GZIP_HEAD = 4_096  # bytes enough to tell a gzip header from text that starts like one
GZIP_MAGIC = b"\x1f\x8b"
GZIP_SMALLEST = 20  # bytes of the shortest gzip stream (header, empty deflate block, trailer)
BOM = b"\xef\xbb\xbf"
STDIN = "-"
QUARANTINE_SUFFIX = ".rejected.jsonl"


@dataclass(frozen=True)
class ParsedLines:
    """Decoded lines (`line_number`, `line`, struct column `event`) and the rejected ones."""

    decoded: pl.DataFrame
    rejected: pl.DataFrame


# ---------------------------------------------------------------- reading
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


# ---------------------------------------------------------------- the line check
def parse_lines(lines: pl.DataFrame, dtype: pl.Struct = schema.RAW_STRUCT) -> ParsedLines:
    """Decode JSON text (`line`, `line_number`) into a struct column `event`; reject the rest.

    Only rejected lines reach Python, to say precisely what is wrong with them.
    """
    lines = lines.with_columns(pl.col("line_number").cast(pl.Int64))
    if "raw_base64" not in lines.columns:
        lines = lines.with_columns(pl.lit(None, dtype=pl.String).alias("raw_base64"))
    text = pl.col("line").str.strip_chars()
    brackets = pl.col("line").str.count_matches(r"[\[{]", literal=False)
    lines = lines.with_columns(
        pl.when(pl.col("line").is_null())
        .then(pl.lit("not UTF-8 text"))
        .when(text == "")
        .then(pl.lit("empty line"))
        .when(pl.col("line").str.starts_with("\ufeff"))
        .then(pl.lit("a byte-order mark inside the file (only the first line may start with one)"))
        .when(~(text.str.starts_with("{") & text.str.ends_with("}")))
        .then(pl.lit("invalid JSON"))
        .when(brackets > schema.MAX_NESTING)  # maybe deep: Python decides (strings may hold {)
        .then(pl.lit("check nesting"))
        .alias("reason")
    )
    slow = lines.filter(pl.col("reason").is_in(["invalid JSON", "check nesting"]))
    if slow.height:
        described = slow.select(
            "line_number",
            pl.Series(
                [
                    describe_json_problem(line, deep_only=reason == "check nesting") or None
                    for line, reason in slow.select("line", "reason").iter_rows()
                ],
                dtype=pl.String,
            ).alias("described"),
        )
        lines = (
            lines.join(described, on="line_number", how="left", maintain_order="left")
            .with_columns(
                pl.when(pl.col("reason").is_in(["invalid JSON", "check nesting"]))
                .then(pl.col("described"))
                .otherwise(pl.col("reason"))
                .alias("reason")
            )
            .drop("described")
        )
    candidates = lines.filter(pl.col("reason").is_null()).drop("reason", "raw_base64")
    obvious = lines.filter(pl.col("reason").is_not_null()).select(
        "line_number", "reason", pl.col("line").alias("raw"), "raw_base64"
    )
    decoded, failed = _decode(candidates, dtype)
    rejected = pl.concat([obvious.cast(REJECTED_SCHEMA), failed]).sort("line_number")
    return ParsedLines(decoded=decoded, rejected=rejected)


def _decode(frame: pl.DataFrame, dtype: pl.Struct) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Decode chunk by chunk; a chunk that fails is bisected down to the lines that do not fit.

    (One failing decode of a whole large column costs seconds, so chunks come first.)
    """
    good: list[pl.DataFrame] = []
    bad: list[dict[str, object]] = []
    pending = [frame.slice(i, DECODE_CHUNK) for i in range(0, frame.height, DECODE_CHUNK)]
    if len(pending) > 1:
        try:  # usually every line fits: all chunks at once, on every core
            good = pl.collect_all([_decode_lazy(part, dtype) for part in pending])
            pending = []
        except pl.exceptions.PolarsError:
            good = []
    while pending:
        part = pending.pop()
        try:
            good.append(_decode_all(part, dtype))
        except pl.exceptions.PolarsError:
            if part.height == 1:
                line = part["line"][0]
                reason = describe_json_problem(line, dtype)
                number = part["line_number"][0]
                bad.append(
                    {"line_number": number, "reason": reason, "raw": line, "raw_base64": None}
                )
            else:
                half = part.height // 2
                pending += [part.slice(half), part.slice(0, half)]
    decoded = pl.concat(good) if good else _decode_all(frame.clear(), dtype)
    rejected = pl.DataFrame(
        bad, schema={k: REJECTED_SCHEMA[k] for k in ("line_number", "reason", "raw")}
    )
    return decoded.sort("line_number"), rejected.with_columns(
        pl.lit(None, dtype=pl.String).alias("raw_base64")
    )


def _decode_all(frame: pl.DataFrame, dtype: pl.Struct) -> pl.DataFrame:
    return _decode_lazy(frame, dtype).collect()


def _decode_lazy(frame: pl.DataFrame, dtype: pl.Struct) -> pl.LazyFrame:
    return frame.lazy().with_columns(pl.col("line").str.json_decode(dtype).alias("event"))


def json_depth(text: str, limit: int) -> int:
    """How deep arrays and objects nest in `text` (counting stops past `limit`); strings skipped."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif char in "]}":
            depth -= 1
    return deepest


def describe_json_problem(
    line: str, dtype: pl.Struct = schema.RAW_STRUCT, *, deep_only: bool = False
) -> str:
    """Why one line does not fit `dtype` (invalid JSON, nested too deeply, a leaf of the wrong
    shape). Never raises. With `deep_only`, "" when the line is not nested too deeply."""
    if json_depth(line, schema.MAX_NESTING) > schema.MAX_NESTING:
        return f"nested too deeply (more than {schema.MAX_NESTING} levels of arrays and objects)"
    if deep_only:
        return ""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        return f"invalid JSON ({exc.msg} at column {exc.colno})"
    except (ValueError, RecursionError) as exc:  # e.g. an integer with too many digits
        return f"invalid JSON ({str(exc).splitlines()[0][:80]})"
    if not isinstance(value, dict):
        return f"not a JSON object (got {_json_kind(value)})"
    for field in dtype.fields:
        problem = _leaf_problem(field.name, value.get(field.name), field.dtype)
        if problem:
            return problem
    return "does not fit the raw event schema"


def _leaf_problem(path: str, value: Any, dtype: pl.DataType) -> str | None:
    if value is None:
        return None
    if isinstance(dtype, pl.Struct):
        if not isinstance(value, dict):
            return f"{path} must be an object (got {_json_kind(value)})"
        for field in dtype.fields:
            problem = _leaf_problem(f"{path}.{field.name}", value.get(field.name), field.dtype)
            if problem:
                return problem
        return None
    if isinstance(value, dict | list):
        return f"{path} must be a scalar (got {_json_kind(value)})"
    if isinstance(value, float) and not math.isfinite(value):  # 1e999, NaN, Infinity
        return f"{path.rpartition('.')[2]} is not a number"
    return None


def _json_kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "number" if isinstance(value, int | float) else "null"
    )
