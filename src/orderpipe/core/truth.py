"""The generator's truth file as its readers find it (generate writes it, train reads it): a
truth that a generate run killed between its renames left pending is moved into place first."""

from __future__ import annotations

import glob
import itertools
import os
import re
from pathlib import Path

import polars as pl

from orderpipe.core.fileio import leftovers
from orderpipe.core.layout import truth_for

_EVENT_ID = re.compile(rb'"event_id"\s*:\s*"([^"]{1,64})"')


def finish_pending_truth(truth: Path) -> bool:
    """Move into place the truth file that a generate run killed after its events file's rename
    left pending: a leftover that holds event ids of the first lines of the events file it sits
    beside (ids are random per run). True when it did (train calls this before it reads it)."""
    pending = leftovers(truth.parent, {truth.name})
    if not pending:
        return False
    stem = truth.name.removesuffix(".truth.parquet")
    raws = [
        path
        for path in truth.parent.glob(f"{glob.escape(stem)}.*")
        if path.is_file() and path != truth and truth_for(path) == truth
    ]
    if not raws:
        return False
    with raws[0].open("rb") as lines:
        ids = {
            match[1].decode("utf-8", "replace")
            for line in itertools.islice(lines, 5_000)
            if (match := _EVENT_ID.search(line))
        }
    for candidate in pending:
        try:
            met = (
                pl.scan_parquet(candidate)
                .filter(pl.col("event_id").is_in(sorted(ids)))
                .select(pl.len())
                .collect()
                .item()
            )
        except (pl.exceptions.PolarsError, OSError):
            continue
        if ids and met:
            os.replace(candidate, truth)
            return True
    return False
