"""The service `generate_events`: synthetic raw events written as JSON Lines, chunk by chunk,
atomically, with the truth file beside them (`GenerateResult` says what was written)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from orderpipe.core.crashpoints import crash_point
from orderpipe.core.errors import OrderpipeError
from orderpipe.core.fileio import atomic_path, disk_full_as_error, remove_leftovers
from orderpipe.core.layout import truth_for
from orderpipe.core.progress import Progress
from orderpipe.core.truth import finish_pending_truth
from orderpipe.generate.chunk import State, chunk
from orderpipe.generate.dirt import Dirt
from orderpipe.generate.draw import Plan
from orderpipe.generate.truth import TruthWriter

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
# For a full disk's message before a chunk is written: bytes per event of the JSON Lines file
# (~370 at the default dirt), and the truth file's size beside it (~5 %).
BYTES_PER_EVENT, TRUTH_SHARE = 400, 0.06
# Events come from fixed units of UNIT events, each with a random stream of its own (keyed by the
# run's seed, start, days and size, and the unit's index), so the file does not depend on how many
# units are generated and written at a time: memory follows `chunk_size`, not `--events`.
UNIT = 1 << 16
DEFAULT_CHUNK = 1 << 18  # events generated, encoded and written at a time


@dataclass(frozen=True)
class GenerateResult:
    """What `generate` wrote."""

    output: Path
    truth: Path
    events: int
    duplicates: int
    bad_lines: int
    lines: int
    seed: int
    seconds: float
    start: datetime = DEFAULT_START
    days: int = 60


@dataclass
class _Written:
    """What is written so far: events and bytes (what a full disk's message extrapolates), and
    lines."""

    events: int = 0
    bytes: int = 0
    lines: int = 0

    def needed(self, events: int) -> int:
        """Bytes the whole run needs, estimated: the events file and its truth."""
        per_event = self.bytes / self.events if self.events else BYTES_PER_EVENT
        return int(per_event * events * (1 + TRUTH_SHARE))


def generate_events(
    output: Path,
    events: int,
    *,
    seed: int = 42,
    dirt: Dirt | None = None,
    start: datetime = DEFAULT_START,
    days: int = 60,
    chunk_size: int = DEFAULT_CHUNK,
    progress: Progress | None = None,
) -> GenerateResult:
    """Write `events` distinct raw events (plus duplicates and bad lines) as JSON Lines, in time
    order, `chunk_size` events at a time; the truth (event_id, return_proba) goes beside it.

    Runs with successive `start`/`days` simulate successive days: event ids are random, order
    ids carry their day and the run (ORD-YYYYMMDD-<run>-n), customers recur with the same
    country in every run.
    """
    _check_arguments(events, days, seed)
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    dirt = dirt or Dirt()
    began = time.perf_counter()
    finish_pending_truth(truth_for(output))  # of a run killed after its events' rename
    # of generate runs killed before they could (only this output's: the folder is the user's)
    remove_leftovers(output.parent, {output.name, truth_for(output).name})
    plan = Plan.make(events, seed, start, days, dirt, unit=UNIT)
    units_per_chunk = max(1, chunk_size // UNIT)
    truth = TruthWriter(output)
    written = _Written()
    committed = False
    # around the cleanup too: the space is measured once the run's own files are gone
    with disk_full_as_error("the raw events", output, lambda: written.needed(events)):
        try:
            truth.begin()
            with atomic_path(output) as tmp, tmp.open("wb") as sink:
                _write_chunks(plan, dirt, units_per_chunk, sink, truth, written, progress)
                sink.flush()
                truth.gather()
            committed = True  # the events file is in place
            crash_point("generate.events-moved")
            truth.commit()
        finally:
            truth.clean(committed)
    return GenerateResult(
        output=output,
        truth=truth.path,
        events=events,
        duplicates=plan.duplicates,
        bad_lines=dirt.bad_lines,
        lines=written.lines,
        seed=seed,
        seconds=time.perf_counter() - began,
        start=start,
        days=days,
    )


def _check_arguments(events: int, days: int, seed: int) -> None:
    if events < 1:
        raise OrderpipeError("--events must be at least 1")
    if days < 1:
        raise OrderpipeError("--days must be at least 1")
    if seed < 0:
        raise OrderpipeError("--seed must be 0 or more")


def _write_chunks(
    plan: Plan,
    dirt: Dirt,
    units_per_chunk: int,
    sink: BinaryIO,
    truth: TruthWriter,
    written: _Written,
    progress: Progress | None,
) -> None:
    """Every chunk of `units_per_chunk` units in turn: its lines into `sink`, its truth into
    `truth`'s parts; `written` and `progress` follow."""
    state = State()
    for first in range(0, plan.units, units_per_chunk):
        units = range(first, min(first + units_per_chunk, plan.units))
        lines, chunk_truth = chunk(plan, units, state, dirt)
        lines.to_frame("line").write_csv(sink, include_header=False, quote_style="never")
        truth.add(first, chunk_truth)
        written.lines += lines.len()
        written.events, written.bytes = int(plan.offsets[units[-1] + 1]), sink.tell()
        if progress:
            progress("events", written.events, plan.events)
        crash_point("generate.chunk-written")
