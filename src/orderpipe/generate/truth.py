"""generate's truth file (event_id, return_proba) beside the events file: written in parts, one
per chunk, gathered before the events file's rename and moved into place after it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import polars as pl

from orderpipe.core.fileio import temporary_path
from orderpipe.core.layout import truth_for


class TruthWriter:
    """The truth of one events file. The events file's rename is the commit: the truth is
    gathered before it and renamed after it (a run killed in between leaves it pending, for
    `core.truth.finish_pending_truth`)."""

    def __init__(self, output: Path) -> None:
        self.path = truth_for(output)
        self.parts = output.with_name(f".{output.name}.truth-parts-{os.getpid()}")
        self.pending = temporary_path(self.path)

    def begin(self) -> None:
        self.parts.mkdir(parents=True, exist_ok=True)

    def add(self, first_unit: int, truth: pl.DataFrame) -> None:
        """The truth of the chunk that starts at unit `first_unit`."""
        truth.write_parquet(self.parts / f"{first_unit:08d}.parquet")

    def gather(self) -> None:
        """Every part, in order, into the pending truth file."""
        pl.scan_parquet(self.parts / "*.parquet").sink_parquet(self.pending)

    def commit(self) -> None:
        """The pending truth into place (once the events file is)."""
        os.replace(self.pending, self.path)

    def clean(self, committed: bool) -> None:
        """Remove the parts, and the pending truth unless the events file is in place."""
        shutil.rmtree(self.parts, ignore_errors=True)
        if not committed:
            self.pending.unlink(missing_ok=True)
