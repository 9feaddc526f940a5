"""ETL: raw JSON Lines -> typed, deduplicated clean records (polars), quarantine and quality report.

`clean_lines` and `clean_record_lines` are shared with the stream consumer (`stream.messages`),
so a Kafka message and a file line are validated and cleaned by the same code.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from orderpipe import schema
from orderpipe.dataset import (
    MergeResult,
    Run,
    is_table,
    merge_into_table,
    remove_orphans,
    scan_clean_dataset,
)
from orderpipe.errors import OrderpipeError
from orderpipe.faults import crash_point
from orderpipe.fileio import (
    disk_full_as_error,
    remove_leftovers,
    size_of,
    temporary_path,
    write_text_atomic,
)
from orderpipe.layout import Layout
from orderpipe.lines import REJECTED_SCHEMA, ParsedLines, iter_raw_lines, parse_lines

Progress = Callable[[str, int, "int | None"], None]  # (step, done, total when known)

FLAT_RAW_COLUMNS = (*schema.TOP_FIELDS, *schema.CUSTOMER_FIELDS, *schema.ORDER_FIELDS)
FLAT_RAW_STRUCT = pl.Struct({name: pl.String() for name in FLAT_RAW_COLUMNS})


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
    table_version: int = 0  # the processed table's version after this run
    committed: bool = True  # False: the run changed nothing in the table (no new version)
    outputs: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class CleanBatch:
    """Clean rows, quarantined rows and what was imputed or normalised on the way."""

    clean: pl.DataFrame
    rejected: pl.DataFrame
    imputed: dict[str, int]
    normalised: dict[str, int]


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
TEXT_FIELDS = ("device", "channel", "main_category")
RETURNED_SPELLINGS = {"0": 0, "1": 1, "false": 0, "true": 1, "0.0": 0, "1.0": 1}
COUNTRY_CODE = r"^[A-Z]{2}$"


def _number(name: str) -> pl.Expr:
    return pl.col(name).str.strip_chars().cast(pl.Float64, strict=False)


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


def typed_fields(flat: pl.DataFrame) -> pl.DataFrame:
    """Flat raw text -> the typed helper columns that schema.RULES reads (names: see there).

    Nothing is rejected here: a value that does not parse becomes null beside its text.
    """
    if "_order_missing" not in flat.columns:
        flat = flat.with_columns(pl.lit(False).alias("_order_missing"))
    ids = {name: pl.col(name).str.strip_chars() for name in schema.ID_FIELDS}
    typed = flat.with_columns(
        *[pl.when(expr == "").then(None).otherwise(expr).alias(name) for name, expr in ids.items()],
        _event_time().alias("_time"),
        pl.col("event_time").str.strip_chars().alias("_time_text"),
        pl.col("country").str.strip_chars().str.to_uppercase().alias("_country"),
        *[_text(name).alias(f"_{name}") for name in TEXT_FIELDS],
        *[_number(name).alias(f"_{name}") for name in schema.AMOUNT_FIELDS],
        _number("n_items").alias("_n_items"),
        pl.col("is_returned")
        .str.strip_chars()
        .str.to_lowercase()
        .replace_strict(RETURNED_SPELLINGS, default=None, return_dtype=pl.Int8)
        .alias("_returned"),
    )
    return _complete_amounts(typed)


def _complete_amounts(typed: pl.DataFrame) -> pl.DataFrame:
    """Impute each missing amount from the others (`_basket_f`... `_total_f`).

    Done before validation because the rules judge the completed amounts (negative, missing).
    """
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
    total = pl.coalesce(
        "_order_total",
        (pl.col("_basket_f") + pl.col("_shipping_f") - pl.col("_discount_f")).round(2),
    )
    return typed.with_columns(
        discount.alias("_discount_f"), basket.alias("_basket_f"), shipping.alias("_shipping_f")
    ).with_columns(total.alias("_total_f"))


def first_broken_rule(rules: Sequence[schema.Rule] = schema.RULES) -> pl.Expr:
    """The reason of the first rule a typed row breaks, in the rules' order; null if none."""
    return _first_broken_rule(tuple(rules))


@functools.cache
def _first_broken_rule(rules: tuple[schema.Rule, ...]) -> pl.Expr:
    # built once per rule set: the stream cleans small batches often, and building the chain
    # of ~20 expressions cost as much as evaluating it on a hundred rows
    reason = pl.lit(None, dtype=pl.String)
    for rule in reversed(rules):
        reason = pl.when(rule.broken()).then(pl.lit(rule.reason)).otherwise(reason)
    return reason


def imputation_counts(valid: pl.DataFrame) -> tuple[dict[str, int], dict[str, int]]:
    """Per column, how many valid rows get an imputed value and how many had text normalised."""
    country = pl.col("_country")
    imputed = valid.select(
        (~country.str.contains(COUNTRY_CODE).fill_null(False)).sum().alias("country"),
        *[
            pl.col(f"_{name}").is_null().sum().alias(name)
            for name in (*TEXT_FIELDS, "discount", "shipping_fee", "basket_value", "order_total")
        ],
    ).row(0, named=True)
    normalised = valid.select(
        *[
            (pl.col(name).is_not_null() & (pl.col(name) != pl.col(f"_{name}"))).sum().alias(name)
            for name in TEXT_FIELDS
        ],
        (pl.col("country").is_not_null() & (pl.col("country") != country)).sum().alias("country"),
    ).row(0, named=True)
    return imputed, normalised


def clean_records(valid: pl.DataFrame) -> pl.DataFrame:
    """Valid typed rows -> `line_number` and the clean record columns (schema.CLEAN_SCHEMA).

    Unknown countries and texts get their placeholder; the date parts are derived here.
    """
    country = pl.col("_country")
    texts = [pl.col(f"_{name}").fill_null(schema.UNKNOWN_TEXT).alias(name) for name in TEXT_FIELDS]
    time = pl.col("event_time")
    return (
        valid.select(
            "line_number",
            "event_id",
            pl.col("_time").alias("event_time"),
            "order_id",
            "customer_id",
            pl.when(country.str.contains(COUNTRY_CODE))
            .then(country)
            .otherwise(pl.lit(schema.UNKNOWN_COUNTRY))
            .alias("country"),
            *texts,
            pl.col("_n_items").cast(pl.Int32).alias("n_items"),
            pl.col("_basket_f").alias("basket_value"),
            pl.col("_shipping_f").alias("shipping_fee"),
            pl.col("_discount_f").alias("discount"),
            pl.col("_total_f").alias("order_total"),
            pl.col("_returned").alias("is_returned"),
        )
        .with_columns(
            time.dt.year().cast(pl.Int32).alias("event_year"),
            time.dt.month().cast(pl.Int8).alias("event_month"),
            time.dt.day().cast(pl.Int8).alias("event_day"),
            time.dt.hour().cast(pl.Int8).alias("event_hour"),
            (pl.col("basket_value") / pl.col("n_items")).round(4).alias("price_average_per_item"),
        )
        .cast(dict(schema.CLEAN_SCHEMA))
    )


def clean_events(flat: pl.DataFrame) -> CleanBatch:
    """Validate, type, normalise and impute flat raw events; rejected rows get their first reason.

    `flat` holds one text column per raw field (see FLAT_RAW_COLUMNS), `line_number`, `raw`
    and optionally `_order_missing`. Duplicates are kept: see `dedupe_latest`.
    """
    typed = typed_fields(flat).with_columns(first_broken_rule().alias("reason"))
    rejected = (
        typed.filter(pl.col("reason").is_not_null())
        .select("line_number", "reason", "raw", pl.lit(None).alias("raw_base64"))
        .cast(REJECTED_SCHEMA)
    )
    valid = typed.filter(pl.col("reason").is_null())
    imputed, normalised = imputation_counts(valid)
    return CleanBatch(
        clean=clean_records(valid), rejected=rejected, imputed=imputed, normalised=normalised
    )


def dedupe_latest(clean: pl.DataFrame) -> pl.DataFrame:
    """One row per event_id: the latest event_time wins; on a tie, the later line wins."""
    return clean.sort(["event_time", "line_number"], maintain_order=True).unique(
        subset="event_id", keep="last", maintain_order=True
    )


def clean_lines(lines: pl.DataFrame) -> CleanBatch:
    """Raw JSON text lines -> clean rows (duplicates kept) and every rejected line with a reason."""
    parsed = parse_lines(lines)
    return _with_parse_rejects(parsed, clean_events(flatten_raw(parsed.decoded)))


def clean_record_lines(lines: pl.DataFrame) -> CleanBatch:
    """Clean-record JSON text (flat: the CSV/JSONL/Kafka form) -> clean rows, same rules.

    Extra fields (event_year...) are recomputed from event_time, never trusted.
    """
    parsed = parse_lines(lines, FLAT_RAW_STRUCT)
    flat = parsed.decoded.select(
        "line_number", pl.col("line").alias("raw"), pl.col("event").struct.unnest()
    )
    return _with_parse_rejects(parsed, clean_events(flat))


def _with_parse_rejects(parsed: ParsedLines, cleaned: CleanBatch) -> CleanBatch:
    """`cleaned`, with the lines that did not even parse among its rejected rows."""
    rejected = pl.concat([parsed.rejected, cleaned.rejected]).sort("line_number")
    return CleanBatch(cleaned.clean, rejected, cleaned.imputed, cleaned.normalised)


# ---------------------------------------------------------------- the service
# Lines cleaned at a time: memory follows this, not the size of the input.
CHUNK_LINES = 500_000
# A run of up to this many clean rows stays in memory; a larger one is staged on disk in
# buckets of event_id, each deduplicated alone.
IN_MEMORY_ROWS = 2_000_000
STAGE_BUCKETS = 16
OUTPUT_SHARE = 0.12  # bytes of clean table per byte of JSON Lines input (10.6-11.7 % measured)


def run_etl(
    source: Path,
    layout: Layout,
    *,
    merge: bool = True,
    chunk_lines: int = CHUNK_LINES,
    in_memory_rows: int = IN_MEMORY_ROWS,
    progress: Progress | None = None,
) -> EtlResult:
    """Clean `source` chunk by chunk, quarantine its bad lines, and merge its clean events into
    the processed table (latest event_time wins; `merge=False` rebuilds it from this input)."""
    began = time.perf_counter()
    # First the run a kill cut short after its commit: its quarantine is one of the leftovers.
    finish_interrupted_run(layout)
    for folder in (layout.processed_dir, layout.rejected_dir):
        remove_leftovers(folder)  # of etl runs killed before they could
    remove_leftovers(layout.reports_dir, {layout.quality_report.name})
    remove_orphans(layout.table)  # data files of merges killed before their commit
    rejected_path = layout.rejected_for(source)
    pending = temporary_path(rejected_path)  # the quarantine, until the table commits
    stage = layout.processed_dir / f".etl-stage-{os.getpid()}"
    counts = _Counts()
    held: list[pl.DataFrame] = []  # clean rows kept in memory while the run is small
    staged = 0  # chunks staged on disk
    committed = False  # once the table has committed, the pending quarantine is the run's

    def needed() -> int:
        # the table takes ~11 % of the JSON Lines it comes from, a large run is staged on disk
        # once more, and a merge writes the days it touches again (up to the whole table; the
        # files they replace stay until a vacuum)
        table = size_of(layout.table) if merge and is_table(layout.table) else 0
        return int(size_of(source) * OUTPUT_SHARE * (2 if staged else 1)) + table

    # around the cleanup too: the space is measured once the run's own files are gone
    with disk_full_as_error("etl's clean table and quarantine", layout.processed_dir, needed):
        try:
            pending.parent.mkdir(parents=True, exist_ok=True)
            with pending.open("wb") as out:
                for chunk in iter_raw_lines(source, chunk_lines):
                    batch = clean_lines(chunk)
                    batch.rejected.write_ndjson(out)
                    counts.add(chunk.height, batch)
                    if progress:
                        progress("lines cleaned", counts.lines, None)
                    held.append(batch.clean)
                    if staged or counts.clean > in_memory_rows:
                        for frame in held:
                            _stage_buckets(frame, stage, staged)
                            staged += 1
                        held = []
                    crash_point("etl.chunk-cleaned")
                if staged:
                    run, kept = _dedupe_staged(stage)
                else:
                    clean = pl.concat([pl.DataFrame(schema=_LINE_SCHEMA), *held])
                    latest = dedupe_latest(clean).drop("line_number")
                    run, kept = Run(latest), latest.height
                out.flush()  # the whole quarantine is on disk before the table commits
                os.fsync(out.fileno())
            counted = EtlResult(  # the table's figures come with the merge
                input=source,
                lines=counts.lines,
                clean=kept,
                duplicates=counts.clean - kept,
                rejected=counts.rejected,
                rejected_by_reason=dict(
                    sorted(counts.by_reason.items(), key=lambda kv: (-kv[1], kv[0]))
                ),
                imputed=counts.imputed,
                normalised=counts.normalised,
                dataset_rows=0,
                new_events=0,
                changed_events=0,
                outputs={
                    "table": layout.table,
                    "rejected": rejected_path,
                    "quality": layout.quality_report,
                },
            )
            merged = merge_into_table(
                layout.table,
                run,
                replace=not merge,
                progress=progress,
                commit_info={RUN_INFO: _run_info(counted, pending.name)},
            )
            committed = merged.committed
            crash_point("etl.committed")
            os.replace(pending, rejected_path)  # see finish_interrupted_run
        finally:
            shutil.rmtree(stage, ignore_errors=True)
            if not committed and _unfinished(layout, pending.name) is None:
                pending.unlink(missing_ok=True)  # no commit names it (else the next run needs it)
    result = _with_merge(counted, merged, time.perf_counter() - began)
    if result.lines != result.clean + result.duplicates + result.rejected:
        raise OrderpipeError(  # an internal invariant: never lose a line silently
            f"etl accounting mismatch: {result.lines} lines != {result.clean} clean + "
            f"{result.duplicates} duplicates + {result.rejected} rejected"
        )
    crash_point("etl.quarantine-moved")
    _write_quality_report(layout, result)
    return result


RUN_INFO = "orderpipe.etl"  # commit info: the run's figures and its quarantine, until moved


def _run_info(counted: EtlResult, pending: str) -> str:
    """What a run counted, as its commit keeps it: a run killed after the commit is finished
    by the next one from it (`finish_interrupted_run`)."""
    info: dict[str, Any] = {name: getattr(counted, name) for name in _COUNTED}
    info["input"] = str(counted.input)
    info["outputs"] = {name: str(path) for name, path in counted.outputs.items()}
    return json.dumps({**info, "pending_quarantine": pending})


_COUNTED = (
    "lines",
    "clean",
    "duplicates",
    "rejected",
    "rejected_by_reason",
    "imputed",
    "normalised",
)


def _counted_from(info: dict[str, Any]) -> EtlResult:
    return EtlResult(
        input=Path(info["input"]),
        **{name: info[name] for name in _COUNTED},
        dataset_rows=0,
        new_events=0,
        changed_events=0,
        outputs={name: Path(path) for name, path in info["outputs"].items()},
    )


def _with_merge(counted: EtlResult, merged: MergeResult, seconds: float) -> EtlResult:
    return dataclasses.replace(
        counted,
        dataset_rows=merged.rows,
        new_events=merged.new_events,
        changed_events=merged.changed_events,
        table_version=merged.version,
        committed=merged.committed,
        seconds=seconds,
    )


def _write_quality_report(layout: Layout, result: EtlResult) -> None:
    report = quality_report(result, scan_clean_dataset(layout.table))
    written = f"the clean table (version {result.table_version}) and quarantine were written"
    with disk_full_as_error("etl's quality report", layout.quality_report, outcome=written):
        write_text_atomic(layout.quality_report, json.dumps(report, indent=2))


def interrupted_run(layout: Layout) -> int | None:
    """The table version of an etl run that committed and was killed before its quality report
    (and maybe its quarantine) was written; None when the last run finished."""
    unfinished = unfinished_run(layout)
    return None if unfinished is None else unfinished[0]


def unfinished_run(layout: Layout) -> tuple[int, Path | None] | None:
    """(table version, its pending quarantine if still there) of the etl run `interrupted_run`
    names: the next etl run moves that quarantine into place (it is not a leftover)."""
    unfinished = _unfinished(layout)
    if unfinished is None:
        return None
    version, info = unfinished
    pending = _pending_quarantine(layout, json.loads(info[RUN_INFO]))
    return version, pending if pending.is_file() else None


def _pending_quarantine(layout: Layout, run: dict[str, Any]) -> Path:
    """Where the run's pending quarantine is: in this layout's folder, whatever the folder the
    run was started from."""
    return layout.rejected_dir / str(run["pending_quarantine"])


def _unfinished(layout: Layout, pending: str | None = None) -> tuple[int, dict[str, Any]] | None:
    """(version, commit information) of the last commit when it is an etl run's whose quality
    report is not written (and, given `pending`, whose pending quarantine has that name)."""
    from orderpipe.dataset import last_commit_info

    if not is_table(layout.table):
        return None
    try:
        version, info = last_commit_info(layout.table)
        run = json.loads(info[RUN_INFO]) if RUN_INFO in info else None
    except Exception:  # an unreadable log: nothing to finish, doctor says what is wrong
        return None
    if run is None or (pending is not None and run.get("pending_quarantine") != pending):
        return None
    try:
        report = json.loads(layout.quality_report.read_text(encoding="utf-8"))
        reported = report["dataset"]["table_version"]
    except (OSError, ValueError, KeyError, TypeError):
        reported = None
    return None if reported == version else (version, info)


def finish_interrupted_run(layout: Layout) -> int | None:
    """Finish the etl run that committed version N of the table and was killed before its last
    steps: move its quarantine into place (if it is still pending) and write its quality report,
    both from what its commit recorded. Returns N, or None when there was nothing to finish."""
    from orderpipe.dataset import MERGE_INFO

    unfinished = _unfinished(layout)
    if unfinished is None:
        return None
    version, info = unfinished
    run = json.loads(info[RUN_INFO])
    merge = json.loads(info.get(MERGE_INFO, "{}"))
    target = layout.rejected_dir / Path(run["outputs"]["rejected"]).name
    pending = _pending_quarantine(layout, run)
    if pending.is_file():
        os.replace(pending, target)
    rows = scan_clean_dataset(layout.table).select(pl.len()).collect().item()
    added = rows - merge.get("rows_before", 0)
    merged = MergeResult(version, True, rows, added, merge.get("changed_events", 0), 0)
    result = _with_merge(_counted_from(run), merged, 0.0)
    _write_quality_report(layout, result)
    return version


@dataclass
class _Counts:
    """What the chunks of one run add up to."""

    lines: int = 0
    clean: int = 0  # clean rows, duplicates included
    rejected: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    imputed: dict[str, int] = field(default_factory=dict)
    normalised: dict[str, int] = field(default_factory=dict)

    def add(self, lines: int, batch: CleanBatch) -> None:
        self.lines += lines
        self.clean += batch.clean.height
        self.rejected += batch.rejected.height
        # Counts per rule: the detail in brackets (column of a JSON error...) stays in the file.
        rules = batch.rejected.select(pl.col("reason").str.replace(r" \(.*\)$", "").alias("rule"))
        for total, counts in (
            (self.by_reason, dict(rules.group_by("rule").len().iter_rows())),
            (self.imputed, batch.imputed),
            (self.normalised, batch.normalised),
        ):
            for name, count in counts.items():
                total[name] = total.get(name, 0) + count


_LINE_SCHEMA = {"line_number": pl.Int64(), **schema.CLEAN_SCHEMA}


def _stage_buckets(clean: pl.DataFrame, stage: Path, number: int) -> None:
    """Spread one chunk's clean rows over buckets of event_id (all rows of an event_id, from
    every chunk, land in the same bucket)."""
    bucket = (pl.col("event_id").hash(seed=0) % STAGE_BUCKETS).alias("_bucket")
    for (index,), part in clean.with_columns(bucket).partition_by("_bucket", as_dict=True).items():
        folder = stage / "buckets" / f"{index:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        part.drop("_bucket").write_parquet(folder / f"{number:06d}.parquet")


def _dedupe_staged(stage: Path) -> tuple[Run, int]:
    """Deduplicate each bucket alone (one bucket in memory at a time) into a staged run."""
    run = Run(folder=stage / "run")
    kept = 0
    for folder in sorted((stage / "buckets").iterdir()):
        latest = dedupe_latest(pl.read_parquet(folder / "*.parquet")).drop("line_number")
        run.stage(latest, folder.name)
        kept += latest.height
        shutil.rmtree(folder)
    return run, kept


def quality_report(result: EtlResult, dataset: pl.LazyFrame) -> dict[str, object]:
    """The counts per rule that etl writes to reports/etl_quality.json (the dataset's figures
    over the whole table, streamed)."""
    vocab = {
        "device": schema.DEVICES,
        "channel": schema.CHANNELS,
        "main_category": schema.CATEGORIES,
    }
    figures = dataset.select(
        (pl.col("country") == schema.UNKNOWN_COUNTRY).sum().alias("country_unknown"),
        *[
            (~pl.col(name).is_in([*values, schema.UNKNOWN_TEXT])).sum().alias(name)
            for name, values in vocab.items()
        ],
    ).collect(engine="streaming")
    # 64-bit hashes of the ids (a collision is ~1e-6 likely at 10M orders): a quarter of the
    # memory of grouping the id text (2.5 GB -> 0.8 GB at 10M events)
    shared_orders = (
        dataset.select(
            pl.col("order_id").hash(seed=0).alias("order"),
            pl.col("customer_id").hash(seed=0).alias("customer"),
        )
        .group_by("order")
        .agg((pl.col("customer").min() != pl.col("customer").max()).alias("shared"))
        .select(pl.col("shared").sum())
        .collect(engine="streaming")
        .item()
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
            "table_version": result.table_version,
            "committed": result.committed,
            "new_events": result.new_events,
            "changed_events": result.changed_events,
            "country_unknown": figures["country_unknown"].item(),
            "values_outside_vocabulary": {name: figures[name].item() for name in vocab},
            "order_ids_shared_by_several_customers": shared_orders,
        },
        "outputs": {name: str(path) for name, path in result.outputs.items()},
        "seconds": round(result.seconds, 3),
    }
