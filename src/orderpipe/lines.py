"""Input lines as users have them (a file, gzip, standard input, a BOM, bytes that are not UTF-8)
and the line check: JSON text -> the raw struct, or a one-line reason. Never raises on content.

Checking a line depends only on its bytes, so `etl` and the stream consumer share it; the limits
it applies (nesting depth, text lengths...) are in `schema`.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def lines_from_bytes(data: bytes, *, gzipped: bool | None = None) -> pl.DataFrame:
    """The lines of `data`, each decoded alone: a bad line never hides good ones.

    `gzipped` None: gzip when it starts with gzip's magic bytes and decompresses (a text file
    whose first line happens to start with them stays a text file).
    """
    if gzipped or (gzipped is None and data[:2] == b"\x1f\x8b"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, ValueError) as exc:
            if gzipped:
                raise OrderpipeError(f"the input is not valid gzip: {exc}") from None
    data = data.removeprefix(BOM)
    chunks = data.split(b"\n")
    if chunks and chunks[-1] == b"":
        chunks.pop()  # the file's final newline ends the last line, it does not start a new one
    texts: list[str | None] = []
    raw_bytes: list[str | None] = []
    for chunk in chunks:
        chunk = chunk.removesuffix(b"\r")
        try:
            texts.append(chunk.decode("utf-8"))
            raw_bytes.append(None)
        except UnicodeDecodeError:
            texts.append(None)
            raw_bytes.append(base64.b64encode(chunk).decode("ascii"))
    return pl.DataFrame(
        {
            "line_number": pl.Series(range(1, len(texts) + 1), dtype=pl.Int64),
            "line": pl.Series(texts, dtype=pl.String),
            "raw_base64": pl.Series(raw_bytes, dtype=pl.String),
        }
    )


def quarantined_bytes(path: Path) -> bytes:
    """The lines a quarantine file holds (`raw`, or `raw_base64` when not UTF-8), one per line."""
    lines: list[bytes] = []
    for number, entry in enumerate(_read_bytes(path).splitlines(), start=1):
        if not entry.strip():
            continue  # a blank line left by an editor
        try:
            record = json.loads(entry)
            if record.get("raw_base64") is not None:
                lines.append(base64.b64decode(record["raw_base64"], validate=True))
            elif isinstance(record["raw"], str):
                lines.append(record["raw"].encode("utf-8", "surrogatepass"))
            else:
                raise TypeError("no raw text")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise OrderpipeError(
                f"line {number} of {path} is not a quarantine entry (raw or raw_base64)"
            ) from None
    return b"\n".join(lines) + (b"\n" if lines else b"")


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
    return frame.with_columns(pl.col("line").str.json_decode(dtype).alias("event"))


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
