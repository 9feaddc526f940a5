"""Interrupted etl runs: what a run's commit records, whether the last run committed and was
killed before its last steps, and finishing it (its quarantine, its quality report)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import polars as pl

from orderpipe.core.layout import Layout
from orderpipe.etl.quality import write_quality_report
from orderpipe.etl.result import EtlResult, with_merge
from orderpipe.table.merge import MERGE_INFO, MergeResult
from orderpipe.table.read import is_table, last_commit_info, scan_clean_dataset

RUN_INFO = "orderpipe.etl"  # commit info: the run's figures and its quarantine, until moved


def run_info(counted: EtlResult, pending: str) -> str:
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


def interrupted_run(layout: Layout) -> int | None:
    """The table version of an etl run that committed and was killed before its quality report
    (and maybe its quarantine) was written; None when the last run finished."""
    unfinished = unfinished_run(layout)
    return None if unfinished is None else unfinished[0]


def unfinished_run(layout: Layout) -> tuple[int, Path | None] | None:
    """(table version, its pending quarantine if still there) of the etl run `interrupted_run`
    names: the next etl run moves that quarantine into place (it is not a leftover)."""
    unfinished = unfinished_commit(layout)
    if unfinished is None:
        return None
    version, info = unfinished
    pending = _pending_quarantine(layout, json.loads(info[RUN_INFO]))
    return version, pending if pending.is_file() else None


def _pending_quarantine(layout: Layout, run: dict[str, Any]) -> Path:
    """Where the run's pending quarantine is: in this layout's folder, whatever the folder the
    run was started from."""
    return layout.rejected_dir / str(run["pending_quarantine"])


def unfinished_commit(
    layout: Layout, pending: str | None = None
) -> tuple[int, dict[str, Any]] | None:
    """(version, commit information) of the last commit when it is an etl run's whose quality
    report is not written (and, given `pending`, whose pending quarantine has that name)."""
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
    unfinished = unfinished_commit(layout)
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
    result = with_merge(_counted_from(run), merged, 0.0)
    write_quality_report(layout, result)
    return version
