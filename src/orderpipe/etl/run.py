"""The etl service: `run_etl` cleans an input chunk by chunk, quarantines its bad lines, stages a
large run on disk and merges its clean events into the processed table."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from orderpipe.core import schema
from orderpipe.core.cleaning import CleanBatch, clean_lines, dedupe_latest
from orderpipe.core.crashpoints import crash_point
from orderpipe.core.errors import OrderpipeError
from orderpipe.core.fileio import disk_full_as_error, remove_leftovers, size_of, temporary_path
from orderpipe.core.layout import Layout
from orderpipe.core.progress import Progress
from orderpipe.core.rawinput import iter_raw_lines
from orderpipe.etl.quality import write_quality_report
from orderpipe.etl.recovery import RUN_INFO, finish_interrupted_run, run_info, unfinished_commit
from orderpipe.etl.result import EtlResult, with_merge
from orderpipe.table.maintenance import remove_orphans
from orderpipe.table.merge import Run, merge_into_table
from orderpipe.table.read import is_table

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
    _clean_up_before_run(layout)
    rejected_path = layout.rejected_for(source)
    pending = temporary_path(rejected_path)  # the quarantine, until the table commits
    chunks = _Chunks(layout.processed_dir / f".etl-stage-{os.getpid()}", in_memory_rows)
    committed = False  # once the table has committed, the pending quarantine is the run's

    def needed() -> int:
        # the table takes ~11 % of the JSON Lines it comes from, a large run is staged on disk
        # once more, and a merge writes the days it touches again (up to the whole table; the
        # files they replace stay until a vacuum)
        table = size_of(layout.table) if merge and is_table(layout.table) else 0
        return int(size_of(source) * OUTPUT_SHARE * (2 if chunks.staged else 1)) + table

    # around the cleanup too: the space is measured once the run's own files are gone
    with disk_full_as_error("etl's clean table and quarantine", layout.processed_dir, needed):
        try:
            run, kept = _clean_into(pending, source, chunks, chunk_lines, progress)
            counted = _counted(source, layout, rejected_path, chunks.counts, kept)
            merged = merge_into_table(
                layout.table,
                run,
                replace=not merge,
                progress=progress,
                commit_info={RUN_INFO: run_info(counted, pending.name)},
            )
            committed = merged.committed
            crash_point("etl.committed")
            os.replace(pending, rejected_path)  # see finish_interrupted_run
        finally:
            shutil.rmtree(chunks.stage, ignore_errors=True)
            if not committed and unfinished_commit(layout, pending.name) is None:
                pending.unlink(missing_ok=True)  # no commit names it (else the next run needs it)
    result = with_merge(counted, merged, time.perf_counter() - began)
    _check_accounting(result)
    crash_point("etl.quarantine-moved")
    write_quality_report(layout, result)
    return result


def _clean_up_before_run(layout: Layout) -> None:
    """Finish the run a kill cut short after its commit (its quarantine is one of the
    leftovers), then remove what runs killed earlier left."""
    finish_interrupted_run(layout)
    for folder in (layout.processed_dir, layout.rejected_dir):
        remove_leftovers(folder)  # of etl runs killed before they could
    remove_leftovers(layout.reports_dir, {layout.quality_report.name})
    remove_orphans(layout.table)  # data files of merges killed before their commit


def _clean_into(
    pending: Path, source: Path, chunks: _Chunks, chunk_lines: int, progress: Progress | None
) -> tuple[Run, int]:
    """Clean `source` chunk by chunk, its bad lines written to `pending` (on disk before this
    returns): the deduplicated run and how many rows it keeps."""
    pending.parent.mkdir(parents=True, exist_ok=True)
    with pending.open("wb") as out:
        for chunk in iter_raw_lines(source, chunk_lines):
            batch = clean_lines(chunk)
            batch.rejected.write_ndjson(out)
            chunks.counts.add(chunk.height, batch)
            if progress:
                progress("lines cleaned", chunks.counts.lines, None)
            chunks.hold(batch.clean)
            crash_point("etl.chunk-cleaned")
        run, kept = chunks.deduplicated()
        out.flush()  # the whole quarantine is on disk before the table commits
        os.fsync(out.fileno())
    return run, kept


def _counted(
    source: Path, layout: Layout, rejected_path: Path, counts: _Counts, kept: int
) -> EtlResult:
    """What the chunks counted; the table's figures come with the merge."""
    return EtlResult(
        input=source,
        lines=counts.lines,
        clean=kept,
        duplicates=counts.clean - kept,
        rejected=counts.rejected,
        rejected_by_reason=dict(sorted(counts.by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
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


def _check_accounting(result: EtlResult) -> None:
    if result.lines != result.clean + result.duplicates + result.rejected:
        raise OrderpipeError(  # an internal invariant: never lose a line silently
            f"etl accounting mismatch: {result.lines} lines != {result.clean} clean + "
            f"{result.duplicates} duplicates + {result.rejected} rejected"
        )


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


@dataclass
class _Chunks:
    """The clean rows of one run's chunks: held in memory while the run is small, staged on
    disk in buckets of event_id (under `stage`) once it is not."""

    stage: Path
    in_memory_rows: int
    counts: _Counts = field(default_factory=_Counts)
    held: list[pl.DataFrame] = field(default_factory=list)
    staged: int = 0  # chunks staged on disk

    def hold(self, clean: pl.DataFrame) -> None:
        """Keep one chunk's clean rows (after `counts.add`): the held chunks go to disk once the
        run's clean rows outgrow memory, and every later chunk too."""
        self.held.append(clean)
        if self.staged or self.counts.clean > self.in_memory_rows:
            for frame in self.held:
                _stage_buckets(frame, self.stage, self.staged)
                self.staged += 1
            self.held = []

    def deduplicated(self) -> tuple[Run, int]:
        """The run, one row per event_id, and how many rows it keeps."""
        if self.staged:
            return _dedupe_staged(self.stage)
        clean = pl.concat([pl.DataFrame(schema=_LINE_SCHEMA), *self.held])
        latest = dedupe_latest(clean).drop("line_number")
        return Run(latest), latest.height


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
