"""Every path orderpipe reads or writes, derived once from the settings' folders.

Commands, `run-all` and `bench` all ask a `Layout`; no other module spells a file name out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

RAW_NAME = "orders_events.jsonl"
PROCESSED_STEM = "orders_events_cleaned"


class StreamSource(StrEnum):
    """What `stream produce` sends: etl's clean table or the generator's raw file."""

    clean = "clean"
    raw = "raw"


def truth_for(raw: Path) -> Path:
    """Where the generator keeps each event's true return probability, beside the raw file."""
    return raw.with_name(raw.stem + ".truth.parquet")


def default_database(data_dir: Path) -> Path:
    """The embedded default: a SQLite file in the data folder."""
    return data_dir / "orderpipe.db"


def model_files(artifacts_dir: Path, name: str) -> tuple[Path, Path]:
    """(Pipeline joblib, metadata JSON) of the model called `name`."""
    return artifacts_dir / f"{name}_model.joblib", artifacts_dir / f"{name}_model_meta.json"


def evaluation_file(artifacts_dir: Path, name: str) -> Path:
    """A sample of the test rows of the model called `name`, with its predictions (the report's
    curves and permutation importance), named by the model's sha256 in a column."""
    return artifacts_dir / f"{name}_model_eval.parquet"


class Folders(Protocol):
    """What a layout is derived from: the settings' four folders (`Settings` has them; the
    settings sit above the layout, which they ask for the default database's path)."""

    data_dir: Path
    artifacts_dir: Path
    reports_dir: Path
    eco_output_dir: Path


@dataclass(frozen=True)
class Layout:
    """The folders from the settings and every file name inside them."""

    data_dir: Path
    artifacts_dir: Path
    reports_dir: Path
    eco_output_dir: Path

    @classmethod
    def from_settings(cls, settings: Folders) -> Layout:
        return cls(
            data_dir=settings.data_dir,
            artifacts_dir=settings.artifacts_dir,
            reports_dir=settings.reports_dir,
            eco_output_dir=settings.eco_output_dir,
        )

    # -- generate
    @property
    def raw(self) -> Path:
        """The generator's output and etl's default input."""
        return self.data_dir / "raw" / RAW_NAME

    @property
    def truth(self) -> Path:
        return truth_for(self.raw)

    # -- etl
    @property
    def processed_dir(self) -> Path:
        return self.data_dir / "processed"

    @property
    def table(self) -> Path:
        """The clean dataset: a Delta Lake table partitioned by event date, which etl merges
        into and ingest, train, predict and `stream produce` read."""
        return self.processed_dir / PROCESSED_STEM

    def export(self, fmt: str) -> Path:
        """Where `orderpipe export` writes the table as one file (csv, jsonl or parquet)."""
        return self.processed_dir / f"{PROCESSED_STEM}.{fmt}"

    @property
    def rejected_dir(self) -> Path:
        return self.data_dir / "rejected"

    def rejected_for(self, source: Path) -> Path:
        """The quarantine file of one etl input: `day1.jsonl(.gz)` -> `day1.rejected.jsonl`,
        `-` (standard input) -> `stdin...`; replaying a quarantine file never overwrites it."""
        stem = "stdin" if str(source) == "-" else Path(source.name.removesuffix(".gz")).stem
        if stem.endswith(".rejected"):
            stem = stem.removesuffix(".rejected") + ".replay"
        return self.rejected_dir / f"{stem}.rejected.jsonl"

    @property
    def quality_report(self) -> Path:
        return self.reports_dir / "etl_quality.json"

    # -- models
    def model_files(self, name: str) -> tuple[Path, Path]:
        return model_files(self.artifacts_dir, name)

    # -- stream
    def stream_source(self, kind: str) -> Path:
        """What `stream produce` sends by default: etl's clean table or the raw file."""
        return self.raw if kind == "raw" else self.table

    # -- eco
    @property
    def eco_report_files(self) -> tuple[Path, Path, Path]:
        """(Markdown, CSV, SVG chart) of the eco report; CodeCarbon writes to eco_output_dir."""
        return (
            self.reports_dir / "eco_report.md",
            self.reports_dir / "eco_report.csv",
            self.reports_dir / "eco_energy_by_phase.svg",
        )

    # -- run-all
    @property
    def runs_history(self) -> Path:
        return self.reports_dir / "runs.jsonl"

    @property
    def html_report(self) -> Path:
        """`orderpipe report`: one self-contained page (data, models, drift, stream, energy)."""
        return self.reports_dir / "report.html"

    def work_dirs(self) -> list[Path]:
        """The folders where runs write (and where a killed run may leave temporary files)."""
        return [
            self.raw.parent,
            self.processed_dir,
            self.rejected_dir,
            self.artifacts_dir,
            self.reports_dir,
        ]

    def outputs_of_runs(self) -> list[Path]:
        """What `run-all --fresh` removes: the data folders and the models (never anything else)."""
        folders = [self.raw.parent, self.processed_dir, self.rejected_dir]
        models = [
            path
            for pattern in ("*_model.joblib", "*_model_meta.json", "*_model_eval.parquet")
            for path in sorted(self.artifacts_dir.glob(pattern))
        ]
        return [*folders, *models]
