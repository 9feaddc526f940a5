"""What one etl run read, kept, dropped, quarantined and wrote (`EtlResult`), and how the merge's
figures complete it; shared by the run, its recovery and the quality report."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from orderpipe.table.merge import MergeResult


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


def with_merge(counted: EtlResult, merged: MergeResult, seconds: float) -> EtlResult:
    """`counted` completed with the table's figures from the merge and the run's duration."""
    return dataclasses.replace(
        counted,
        dataset_rows=merged.rows,
        new_events=merged.new_events,
        changed_events=merged.changed_events,
        table_version=merged.version,
        committed=merged.committed,
        seconds=seconds,
    )
