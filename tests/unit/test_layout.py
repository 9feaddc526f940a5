"""layout.py: every file orderpipe reads or writes, inside the settings' folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from orderpipe.core.layout import Layout, truth_for
from orderpipe.core.settings import Settings
from tests.factories import layout_under


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return layout_under(tmp_path)


def test_data_files_are_under_the_data_folder(layout: Layout) -> None:
    for path in (
        layout.raw,
        layout.truth,
        layout.processed_dir,
        layout.table,
        layout.export("csv"),
        layout.export("jsonl"),
        layout.rejected_dir,
        layout.rejected_for(Path("elsewhere/day1.jsonl")),
        layout.stream_source("raw"),
        layout.stream_source("clean"),
    ):
        assert path.is_relative_to(layout.data_dir), path


def test_model_files_are_under_the_artifacts_folder(layout: Layout) -> None:
    for name in ("classification", "regression"):
        model, meta = layout.model_files(name)
        assert model.parent == meta.parent == layout.artifacts_dir
        assert (model.name, meta.name) == (f"{name}_model.joblib", f"{name}_model_meta.json")


def test_reports_are_under_the_reports_folder(layout: Layout) -> None:
    for path in (layout.quality_report, layout.runs_history):
        assert path.is_relative_to(layout.reports_dir), path


def test_rejected_file_is_named_after_the_input_in_the_rejected_folder(layout: Layout) -> None:
    assert layout.rejected_for(Path("x/day1.jsonl")) == (
        layout.data_dir / "rejected" / "day1.rejected.jsonl"
    )


def test_truth_sits_beside_the_raw_file() -> None:
    assert truth_for(Path("in/raw/orders.jsonl")) == Path("in/raw/orders.truth.parquet")


def test_layout_truth_is_the_truth_of_its_raw_file(layout: Layout) -> None:
    assert layout.truth == truth_for(layout.raw)
    assert layout.truth.parent == layout.raw.parent


def test_stream_source_raw_is_the_raw_file_and_clean_the_table(layout: Layout) -> None:
    assert layout.stream_source("raw") == layout.raw
    assert layout.stream_source("clean") == layout.table
    assert layout.export("jsonl").suffix == ".jsonl"


def test_outputs_of_runs_are_the_data_folders_and_the_models_only(layout: Layout) -> None:
    layout.artifacts_dir.mkdir(parents=True)
    model, meta = layout.model_files("classification")
    for path in (model, meta, layout.artifacts_dir / "notes.txt"):
        path.write_text("x")
    outputs = layout.outputs_of_runs()
    assert outputs == [layout.raw.parent, layout.processed_dir, layout.rejected_dir, model, meta]


def test_from_settings_uses_the_settings_folders(settings: Settings) -> None:
    layout = Layout.from_settings(settings)
    assert layout.data_dir == settings.data_dir
    assert layout.artifacts_dir == settings.artifacts_dir
    assert layout.reports_dir == settings.reports_dir
    assert layout.eco_output_dir == settings.eco_output_dir
    assert layout.table.is_relative_to(settings.data_dir)
