"""The line check: one line of JSON text -> the raw struct, or a one-line reason. Never raises on
content; it depends only on the line's bytes, so etl and the stream consumer share it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import polars as pl

from orderpipe.core import schema
from orderpipe.core.errors import first_line

REJECTED_SCHEMA = {
    "line_number": pl.Int64(),
    "reason": pl.String(),
    "raw": pl.String(),  # the line as it was, when it is UTF-8 text
    "raw_base64": pl.String(),  # its exact bytes otherwise
}
DECODE_CHUNK = 16_384


@dataclass(frozen=True)
class ParsedLines:
    """Decoded lines (`line_number`, `line`, struct column `event`) and the rejected ones."""

    decoded: pl.DataFrame
    rejected: pl.DataFrame


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
        return f"invalid JSON ({first_line(exc)[:80]})"
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
