"""One CodeCarbon tracker per process, one measured task per phase; off at zero cost.

`with tracker.phase("etl") as phase: ...; phase.events = n` wraps a service call from outside
the service (`phases.run_phase`, for run-all and bench). Phase figures (with event counts, which
CodeCarbon does not know) are appended to `orderpipe_phases.csv` beside CodeCarbon's own files.
"""

from __future__ import annotations

import csv
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orderpipe.core.settings import Settings

log = logging.getLogger("orderpipe.eco")
PHASES_FILE = "orderpipe_phases.csv"
PHASE_COLUMNS = (
    "run_id",
    "phase",
    "events",
    "duration_s",
    "energy_kwh",
    "emissions_kg",
    "tracking_mode",
    "country_iso_code",
)


@dataclass
class PhaseRecord:
    """What one phase measured (energy and emissions are None when eco is off)."""

    phase: str
    events: int | None = None
    duration_s: float = 0.0
    energy_kwh: float | None = None
    emissions_kg: float | None = None


class EcoTracker:
    """Measures phases in sequence; never two trackers at once, never one phase inside another."""

    def __init__(
        self, *, enabled: bool, output_dir: Path, country_iso_code: str, project: str = "orderpipe"
    ) -> None:
        self.enabled = enabled
        self.output_dir = output_dir
        self.country_iso_code = country_iso_code
        self.project = project
        self.run_id = str(uuid.uuid4())
        self._tracker: Any = None
        self._active: str | None = None
        self.records: list[PhaseRecord] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> EcoTracker:
        """The tracker the eco settings describe (off when ORDERPIPE_ECO_ENABLED is false)."""
        return cls(
            enabled=settings.eco_enabled,
            output_dir=settings.eco_output_dir,
            country_iso_code=settings.eco_country_iso_code,
        )

    def start(self) -> Any:
        """Start the process's tracker once (about 1-2 s); later calls return it."""
        if self._tracker is None:
            from codecarbon import OfflineEmissionsTracker

            self.output_dir.mkdir(parents=True, exist_ok=True)
            logging.getLogger("codecarbon").setLevel(logging.ERROR)
            self._tracker = OfflineEmissionsTracker(
                country_iso_code=self.country_iso_code,
                output_dir=str(self.output_dir),
                project_name=self.project,
                experiment_id=self.run_id,
                log_level="error",
                allow_multiple_runs=True,
                measure_power_secs=5,
            )
            self._tracker.start()
        return self._tracker

    @contextmanager
    def phase(self, name: str, events: int | None = None) -> Iterator[PhaseRecord]:
        """Measure the block as the task `name`; set `record.events` inside when known."""
        if self._active is not None:
            raise RuntimeError(f"eco phase {name!r} started inside {self._active!r}")
        record = PhaseRecord(phase=name, events=events)
        tracker = self.start() if self.enabled else None
        self._active = name
        began = time.perf_counter()
        if tracker is not None:
            tracker.start_task(name)
        try:
            yield record
        finally:
            record.duration_s = time.perf_counter() - began
            self._active = None
            if tracker is not None:
                data = tracker.stop_task(name)
                record.energy_kwh = float(data.energy_consumed)
                record.emissions_kg = float(data.emissions)
                # CodeCarbon's own run id keys its task rows: use it for ours too
                self.run_id = str(getattr(data, "run_id", "") or self.run_id)
                self._append(record, str(getattr(data, "tracking_mode", "")))
            self.records.append(record)

    def _append(self, record: PhaseRecord, mode: str) -> None:
        path = self.output_dir / PHASES_FILE
        new = not path.exists()
        with path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(PHASE_COLUMNS)
            writer.writerow(
                [
                    self.run_id,
                    record.phase,
                    record.events if record.events is not None else "",
                    f"{record.duration_s:.6f}",
                    record.energy_kwh,
                    record.emissions_kg,
                    mode,
                    self.country_iso_code,
                ]
            )

    def close(self) -> None:
        """Stop the tracker (writes CodeCarbon's run summary)."""
        if self._tracker is not None:
            try:
                self._tracker.stop()
            except Exception as exc:  # measuring must never fail the work it measured
                log.warning("CodeCarbon could not stop cleanly: %s", exc)
            self._tracker = None
