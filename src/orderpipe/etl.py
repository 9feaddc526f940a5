"""ETL: raw JSON Lines -> typed, deduplicated clean records (polars), quarantine and quality report.

`parse_lines` and `clean_events` are shared with the stream consumer, so a Kafka message and a
file line are validated and cleaned by the same code.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from orderpipe import schema
from orderpipe.errors import OrderpipeError
from orderpipe.fileio import write_atomic, write_text_atomic

FLAT_RAW_COLUMNS = (*schema.TOP_FIELDS, *schema.CUSTOMER_FIELDS, *schema.ORDER_FIELDS)
FLAT_RAW_STRUCT = pl.Struct({name: pl.String() for name in FLAT_RAW_COLUMNS})
REJECTED_SCHEMA = {"line_number": pl.Int64(), "reason": pl.String(), "raw": pl.String()}
DECODE_CHUNK = 16_384
PROCESSED_STEM = "orders_events_cleaned"


@dataclass(frozen=True)
class EtlResult:
    """What one `etl` run read, kept, dropped as duplicate, quarantined and wrote."""

    input: Path
    lines: int
    clean: int
    duplicates: int
    rejected: int
    rejected_by_reason: dict[str, int]
    imputed: dict[str, int]
    normalised: dict[str, int]
    dataset_rows: int
    new_events: int
    changed_events: int
    outputs: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class CleanBatch:
    """Clean rows, quarantined rows and what was imputed or normalised on the way."""

    clean: pl.DataFrame
    rejected: pl.DataFrame
    imputed: dict[str, int]
    normalised: dict[str, int]


# ---------------------------------------------------------------- reading and parsing
def read_raw_lines(path: Path) -> pl.DataFrame:
    """The file's lines with 1-based `line_number`; non-UTF-8 lines are kept as `None` text."""
    if not path.is_file():
        raise OrderpipeError(f"input file not found: {path} (run `orderpipe generate` first)")
    try:
        return pl.read_lines(path, name="line", row_index_name="line_number", row_index_offset=1)
    except pl.exceptions.ComputeError as exc:
        if "utf8" not in str(exc).lower():
            raise
    # Slow path, only for a file with invalid UTF-8: decode line by line.
    texts: list[str | None] = []
    for raw in path.read_bytes().removesuffix(b"\n").split(b"\n"):
        try:
            texts.append(raw.removesuffix(b"\r").decode("utf-8"))
        except UnicodeDecodeError:
            texts.append(None)
    return pl.DataFrame({"line": pl.Series(texts, dtype=pl.String)}).with_row_index(
        "line_number", offset=1
    )


def parse_lines(lines: pl.DataFrame, dtype: pl.Struct = schema.RAW_STRUCT) -> CleanBatch:
    """Decode JSON text (`line`, `line_number`) into a struct column `event`; quarantine the rest.

    Returns a CleanBatch whose `clean` holds `line_number`, `line` and `event`.
    """
    lines = lines.with_columns(pl.col("line_number").cast(pl.Int64))
    text = pl.col("line").str.strip_chars()
    lines = lines.with_columns(
        pl.when(pl.col("line").is_null())
        .then(pl.lit("not UTF-8 text"))
        .when(text == "")
        .then(pl.lit("empty line"))
        .when(~(text.str.starts_with("{") & text.str.ends_with("}")))
        .then(pl.lit("invalid JSON"))
        .alias("reason")
    )
    candidates = lines.filter(pl.col("reason").is_null()).drop("reason")
    obvious = lines.filter(pl.col("reason").is_not_null())
    decoded, failed = _decode(candidates, dtype)
    rejected = pl.concat(
        [
            obvious.select(
                "line_number",
                # Only rejected lines reach Python, to say precisely what is wrong with them.
                pl.Series(
                    [
                        schema.describe_json_problem(line) if reason == "invalid JSON" else reason
                        for line, reason in obvious.select("line", "reason").iter_rows()
                    ],
                    dtype=pl.String,
                ).alias("reason"),
                pl.col("line").alias("raw"),
            ),
            failed,
        ]
    ).cast(REJECTED_SCHEMA)
    return CleanBatch(clean=decoded, rejected=rejected, imputed={}, normalised={})


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
                bad.append(
                    {
                        "line_number": part["line_number"][0],
                        "reason": schema.describe_json_problem(line),
                        "raw": line,
                    }
                )
            else:
                half = part.height // 2
                pending += [part.slice(half), part.slice(0, half)]
    decoded = pl.concat(good) if good else _decode_all(frame.clear(), dtype)
    return decoded.sort("line_number"), pl.DataFrame(bad, schema=REJECTED_SCHEMA)


def _decode_all(frame: pl.DataFrame, dtype: pl.Struct) -> pl.DataFrame:
    return frame.with_columns(pl.col("line").str.json_decode(dtype).alias("event"))


def flatten_raw(decoded: pl.DataFrame) -> pl.DataFrame:
    """Nested raw events (struct column `event`) -> one text column per raw field."""
    event = pl.col("event")
    customer = event.struct.field("customer")
    order = event.struct.field("order")
    return decoded.select(
        "line_number",
        pl.col("line").alias("raw"),
        *[event.struct.field(name).alias(name) for name in schema.TOP_FIELDS],
        *[customer.struct.field(name).alias(name) for name in schema.CUSTOMER_FIELDS],
        *[order.struct.field(name).alias(name) for name in schema.ORDER_FIELDS],
        order.is_null().alias("_order_missing"),
    )


# ---------------------------------------------------------------- cleaning
def _number(name: str) -> pl.Expr:
    return pl.col(name).str.strip_chars().cast(pl.Float64, strict=False)


def _bad_number(name: str) -> pl.Expr:
    """Present in the input but not a finite number (uses the typed `_name` column)."""
    value = pl.col(f"_{name}")
    return pl.col(name).is_not_null() & (value.is_null() | ~value.is_finite())


def _text(name: str) -> pl.Expr:
    value = pl.col(name).str.strip_chars().str.replace_all(r"\s+", " ").str.to_lowercase()
    return pl.when(value == "").then(None).otherwise(value)


def _event_time() -> pl.Expr:
    text = pl.col("event_time").str.strip_chars()
    text = text.str.replace(" ", "T", literal=True).str.replace(r"(?i)z$", "+00:00")
    text = (
        pl.when(text.str.contains(r"[+-]\d{2}:?\d{2}$"))
        .then(text)
        .otherwise(pl.concat_str(text, pl.lit("+00:00")))
    )
    return text.str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.f%:z", strict=False, time_unit="us", time_zone="UTC"
    )


def clean_events(flat: pl.DataFrame) -> CleanBatch:
    """Validate, type, normalise and impute flat raw events; rejected rows get their first reason.

    `flat` holds one text column per raw field (see FLAT_RAW_COLUMNS), `line_number`, `raw`
    and optionally `_order_missing`. Duplicates are kept: see `dedupe_latest`.
    """
    if "_order_missing" not in flat.columns:
        flat = flat.with_columns(pl.lit(False).alias("_order_missing"))
    ids = {name: pl.col(name).str.strip_chars() for name in ("event_id", "order_id", "customer_id")}
    n_items = _number("n_items")
    returned = pl.col("is_returned").str.strip_chars().str.to_lowercase()
    amounts = ("basket_value", "shipping_fee", "discount", "order_total")
    texts = ("device", "channel", "main_category")
    typed = flat.with_columns(
        *[pl.when(expr == "").then(None).otherwise(expr).alias(name) for name, expr in ids.items()],
        _event_time().alias("_time"),
        pl.col("event_time").str.strip_chars().alias("_time_text"),
        pl.col("country").str.strip_chars().str.to_uppercase().alias("_country"),
        *[_text(name).alias(f"_{name}") for name in texts],
        *[_number(name).alias(f"_{name}") for name in amounts],
        n_items.alias("_n_items"),
        returned.replace_strict(
            {"0": 0, "1": 1, "false": 0, "true": 1, "0.0": 0, "1.0": 1},
            default=None,
            return_dtype=pl.Int8,
        ).alias("_returned"),
    )
    time_text = pl.col("_time_text")
    discount = pl.col("_discount").fill_null(0.0)
    basket = pl.coalesce(
        "_basket_value",
        (pl.col("_order_total") - pl.col("_shipping_fee").fill_null(0.0) + discount).round(2),
    )
    shipping = pl.coalesce(
        "_shipping_fee",
        pl.when(pl.col("_order_total").is_not_null() & pl.col("_basket_value").is_not_null())
        .then((pl.col("_order_total") - pl.col("_basket_value") + discount).round(2))
        .otherwise(0.0),
    )
    typed = typed.with_columns(
        discount.alias("_discount_f"), basket.alias("_basket_f"), shipping.alias("_shipping_f")
    ).with_columns(
        pl.coalesce(
            "_order_total",
            (pl.col("_basket_f") + pl.col("_shipping_f") - pl.col("_discount_f")).round(2),
        ).alias("_total_f")
    )
    negative = pl.any_horizontal(
        pl.col(c) < 0 for c in ("_basket_f", "_shipping_f", "_discount_f", "_total_f")
    )
    year = pl.col("_time").dt.year()
    reason = (
        pl.when(pl.col("event_id").is_null())
        .then(pl.lit("missing event_id"))
        .when(pl.col("event_time").is_null() | (time_text == ""))
        .then(pl.lit("missing event_time"))
        .when(time_text.str.contains(r"^-?\d+(\.\d+)?$"))
        .then(pl.lit("event_time is an epoch number, not an ISO-8601 timestamp"))
        .when(pl.col("_time").is_null())
        .then(pl.lit("event_time is not an ISO-8601 timestamp"))
        .when((year < 2000) | (year > 2100))
        .then(pl.lit("event_time is out of range (2000-2100)"))
        .when(pl.col("order_id").is_null())
        .then(pl.lit("missing order_id"))
        .when(pl.col("customer_id").is_null())
        .then(pl.lit("missing customer_id"))
        .when(pl.max_horizontal(pl.col(c).str.len_chars() for c in ids) > schema.MAX_ID_LENGTH)
        .then(pl.lit(f"an id is longer than {schema.MAX_ID_LENGTH} characters"))
        .when(pl.col("_order_missing"))
        .then(pl.lit("missing order object"))
        .when(pl.col("n_items").is_null())
        .then(pl.lit("missing n_items"))
        .when(pl.col("_n_items").is_null() | (pl.col("_n_items") != pl.col("_n_items").floor()))
        .then(pl.lit("n_items is not an integer"))
        .when(pl.col("_n_items") < 1)
        .then(pl.lit("n_items must be at least 1"))
        .when(pl.col("_n_items") > 100_000)
        .then(pl.lit("n_items is out of range (1-100000)"))
        .when(pl.col("is_returned").is_null())
        .then(pl.lit("missing is_returned"))
        .when(pl.col("_returned").is_null())
        .then(pl.lit("is_returned must be 0 or 1"))
        .when(_bad_number("basket_value"))
        .then(pl.lit("basket_value is not a number"))
        .when(_bad_number("shipping_fee"))
        .then(pl.lit("shipping_fee is not a number"))
        .when(_bad_number("discount"))
        .then(pl.lit("discount is not a number"))
        .when(_bad_number("order_total"))
        .then(pl.lit("order_total is not a number"))
        .when(pl.col("_basket_f").is_null())
        .then(pl.lit("missing basket_value and order_total"))
        .when(negative)
        .then(pl.lit("amounts must not be negative"))
    )
    typed = typed.with_columns(reason.alias("reason"))
    rejected = (
        typed.filter(pl.col("reason").is_not_null())
        .select("line_number", "reason", "raw")
        .cast(REJECTED_SCHEMA)
    )
    valid = typed.filter(pl.col("reason").is_null())

    country = pl.col("_country")
    imputed = valid.select(
        (~country.str.contains(r"^[A-Z]{2}$").fill_null(False)).sum().alias("country"),
        *[pl.col(f"_{name}").is_null().sum().alias(name) for name in texts],
        pl.col("_discount").is_null().sum().alias("discount"),
        pl.col("_shipping_fee").is_null().sum().alias("shipping_fee"),
        pl.col("_basket_value").is_null().sum().alias("basket_value"),
        pl.col("_order_total").is_null().sum().alias("order_total"),
    ).row(0, named=True)
    normalised = valid.select(
        *[
            (pl.col(name).is_not_null() & (pl.col(name) != pl.col(f"_{name}"))).sum().alias(name)
            for name in texts
        ],
        (pl.col("country").is_not_null() & (pl.col("country") != country)).sum().alias("country"),
    ).row(0, named=True)

    clean = (
        valid.select(
            "line_number",
            "event_id",
            pl.col("_time").alias("event_time"),
            "order_id",
            "customer_id",
            pl.when(country.str.contains(r"^[A-Z]{2}$"))
            .then(country)
            .otherwise(pl.lit(schema.UNKNOWN_COUNTRY))
            .alias("country"),
            *[pl.col(f"_{name}").fill_null(schema.UNKNOWN_TEXT).alias(name) for name in texts],
            pl.col("_n_items").cast(pl.Int32).alias("n_items"),
            pl.col("_basket_f").alias("basket_value"),
            pl.col("_shipping_f").alias("shipping_fee"),
            pl.col("_discount_f").alias("discount"),
            pl.col("_total_f").alias("order_total"),
            pl.col("_returned").alias("is_returned"),
        )
        .with_columns(
            pl.col("event_time").dt.year().cast(pl.Int32).alias("event_year"),
            pl.col("event_time").dt.month().cast(pl.Int8).alias("event_month"),
            pl.col("event_time").dt.day().cast(pl.Int8).alias("event_day"),
            pl.col("event_time").dt.hour().cast(pl.Int8).alias("event_hour"),
            (pl.col("basket_value") / pl.col("n_items")).round(4).alias("price_average_per_item"),
        )
        .cast({name: dtype for name, dtype in schema.CLEAN_SCHEMA.items()})
    )
    return CleanBatch(clean=clean, rejected=rejected, imputed=imputed, normalised=normalised)


def dedupe_latest(clean: pl.DataFrame) -> pl.DataFrame:
    """One row per event_id: the latest event_time wins; on a tie, the later line wins."""
    return clean.sort(["event_time", "line_number"], maintain_order=True).unique(
        subset="event_id", keep="last", maintain_order=True
    )


def clean_lines(lines: pl.DataFrame) -> CleanBatch:
    """Raw JSON text lines -> clean rows (duplicates kept) and every rejected line with a reason."""
    parsed = parse_lines(lines)
    cleaned = clean_events(flatten_raw(parsed.clean))
    return CleanBatch(
        clean=cleaned.clean,
        rejected=pl.concat([parsed.rejected, cleaned.rejected]).sort("line_number"),
        imputed=cleaned.imputed,
        normalised=cleaned.normalised,
    )


def clean_record_lines(lines: pl.DataFrame) -> CleanBatch:
    """Clean-record JSON text (flat: the CSV/JSONL/Kafka form) -> clean rows, same rules.

    Extra fields (event_year...) are recomputed from event_time, never trusted.
    """
    parsed = parse_lines(lines, FLAT_RAW_STRUCT)
    flat = parsed.clean.select(
        "line_number", pl.col("line").alias("raw"), pl.col("event").struct.unnest()
    )
    cleaned = clean_events(flat)
    return CleanBatch(
        clean=cleaned.clean,
        rejected=pl.concat([parsed.rejected, cleaned.rejected]).sort("line_number"),
        imputed=cleaned.imputed,
        normalised=cleaned.normalised,
    )


# ---------------------------------------------------------------- the service
@dataclass(frozen=True)
class EtlPaths:
    """Where etl writes; derived from the data and reports folders."""

    processed_dir: Path
    rejected_dir: Path
    quality_report: Path

    @classmethod
    def under(cls, data_dir: Path, reports_dir: Path) -> EtlPaths:
        return cls(data_dir / "processed", data_dir / "rejected", reports_dir / "etl_quality.json")

    @property
    def parquet(self) -> Path:
        return self.processed_dir / f"{PROCESSED_STEM}.parquet"

    @property
    def csv(self) -> Path:
        return self.processed_dir / f"{PROCESSED_STEM}.csv"

    @property
    def jsonl(self) -> Path:
        return self.processed_dir / f"{PROCESSED_STEM}.jsonl"

    def rejected_for(self, source: Path) -> Path:
        return self.rejected_dir / f"{source.stem}.rejected.jsonl"


def run_etl(source: Path, paths: EtlPaths, *, merge: bool = True) -> EtlResult:
    """Clean `source` into the processed dataset (merged with what is there unless merge=False)."""
    began = time.perf_counter()
    lines = read_raw_lines(source)
    batch = clean_lines(lines)
    latest = dedupe_latest(batch.clean)
    duplicates = batch.clean.height - latest.height
    latest = latest.drop("line_number")

    previous = _read_previous(paths.parquet) if merge else None
    dataset, new_events, changed = _merge(previous, latest)
    dataset = dataset.sort(["event_time", "event_id"])

    _write_dataset(dataset, paths)
    rejected_path = paths.rejected_for(source)
    write_atomic(rejected_path, lambda tmp: batch.rejected.write_ndjson(tmp))

    # Counts per rule: the detail in brackets (column of a JSON error...) stays in the file.
    rules = batch.rejected.select(pl.col("reason").str.replace(r" \(.*\)$", "").alias("rule"))
    by_reason = dict(
        sorted(rules.group_by("rule").len().iter_rows(), key=lambda kv: (-kv[1], kv[0]))
    )
    result = EtlResult(
        input=source,
        lines=lines.height,
        clean=latest.height,
        duplicates=duplicates,
        rejected=batch.rejected.height,
        rejected_by_reason=by_reason,
        imputed=batch.imputed,
        normalised=batch.normalised,
        dataset_rows=dataset.height,
        new_events=new_events,
        changed_events=changed,
        outputs={
            "parquet": paths.parquet,
            "csv": paths.csv,
            "jsonl": paths.jsonl,
            "rejected": rejected_path,
            "quality": paths.quality_report,
        },
        seconds=time.perf_counter() - began,
    )
    if result.lines != result.clean + result.duplicates + result.rejected:
        raise OrderpipeError(  # an internal invariant: never lose a line silently
            f"etl accounting mismatch: {result.lines} lines != {result.clean} clean + "
            f"{result.duplicates} duplicates + {result.rejected} rejected"
        )
    write_text_atomic(paths.quality_report, json.dumps(quality_report(result, dataset), indent=2))
    return result


def _read_previous(path: Path) -> pl.DataFrame | None:
    if not path.is_file():
        return None
    try:
        previous = pl.read_parquet(path)
    except Exception as exc:  # a corrupt or foreign file must not be silently replaced
        raise OrderpipeError(
            f"cannot read the existing dataset {path}: {exc}; "
            "move it away or run etl with --replace"
        ) from None
    if list(previous.columns) != list(schema.CLEAN_COLUMNS):
        raise OrderpipeError(
            f"{path} does not have the clean record columns; move it away or run etl with --replace"
        )
    return previous.cast({name: dtype for name, dtype in schema.CLEAN_SCHEMA.items()})


def _merge(previous: pl.DataFrame | None, latest: pl.DataFrame) -> tuple[pl.DataFrame, int, int]:
    """Union with the existing dataset: latest event_time wins, the new run wins a tie."""
    if previous is None or previous.height == 0:
        return latest, latest.height, 0
    new_ids = latest.join(previous.select("event_id"), on="event_id", how="anti").height
    merged = (
        pl.concat(
            [
                previous.with_columns(pl.lit(0).alias("_run")),
                latest.with_columns(pl.lit(1).alias("_run")),
            ]
        )
        .sort(["event_time", "_run"], maintain_order=True)
        .unique(subset="event_id", keep="last", maintain_order=True)
    )
    winners = merged.filter(pl.col("_run") == 1).drop("_run")
    changed = (
        winners.join(previous, on="event_id", how="semi")
        .join(previous, on=list(schema.CLEAN_COLUMNS), how="anti", nulls_equal=True)
        .height
    )
    return merged.drop("_run"), new_ids, changed


def as_text_records(dataset: pl.DataFrame) -> pl.DataFrame:
    """The clean record with event_time as contract text: the CSV, JSON Lines and Kafka form."""
    return dataset.with_columns(pl.col("event_time").dt.strftime(schema.EVENT_TIME_FORMAT))


def _write_dataset(dataset: pl.DataFrame, paths: EtlPaths) -> None:
    text = as_text_records(dataset)
    write_atomic(paths.parquet, lambda tmp: dataset.write_parquet(tmp, statistics=True))
    write_atomic(paths.csv, lambda tmp: text.write_csv(tmp))
    write_atomic(paths.jsonl, lambda tmp: text.write_ndjson(tmp))


def quality_report(result: EtlResult, dataset: pl.DataFrame) -> dict[str, object]:
    """The counts per rule that etl writes to reports/etl_quality.json."""
    vocab = {
        "device": schema.DEVICES,
        "channel": schema.CHANNELS,
        "main_category": schema.CATEGORIES,
    }
    unknown_values = {
        name: dataset.filter(~pl.col(name).is_in([*values, schema.UNKNOWN_TEXT])).height
        for name, values in vocab.items()
    }
    shared_orders = (
        dataset.group_by("order_id")
        .agg(pl.col("customer_id").n_unique().alias("n"))
        .filter(pl.col("n") > 1)
        .height
    )
    return {
        "input": str(result.input),
        "lines": result.lines,
        "clean": result.clean,
        "duplicates": result.duplicates,
        "rejected": result.rejected,
        "rejected_by_reason": result.rejected_by_reason,
        "imputed": result.imputed,
        "imputation_rules": schema.IMPUTATION_RULES,
        "normalised_text": result.normalised,
        "dataset": {
            "rows": result.dataset_rows,
            "new_events": result.new_events,
            "changed_events": result.changed_events,
            "country_unknown": dataset.filter(pl.col("country") == schema.UNKNOWN_COUNTRY).height,
            "values_outside_vocabulary": unknown_values,
            "order_ids_shared_by_several_customers": shared_orders,
        },
        "outputs": {name: str(path) for name, path in result.outputs.items()},
        "seconds": round(result.seconds, 3),
    }
