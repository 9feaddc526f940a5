"""phases.py: the pipeline's phases in order, each run as one measured task."""

from __future__ import annotations

from pathlib import Path

import pytest

from orderpipe.core.settings import Settings
from orderpipe.eco.tracking import EcoTracker
from orderpipe.runs.phases import PHASES, PHASES_BY_NAME, Phase, PhaseOptions, run_phase


def test_phases_run_in_pipeline_order() -> None:
    assert [phase.name for phase in PHASES] == [
        "generate",
        "etl",
        "ingest",
        "train",
        "predict",
        "stream",
    ]


def test_phases_by_name_holds_every_phase() -> None:
    assert list(PHASES_BY_NAME) == [phase.name for phase in PHASES]
    assert all(PHASES_BY_NAME[phase.name] is phase for phase in PHASES)


def test_run_phase_returns_the_result_and_a_record_of_its_event_count(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from orderpipe.eco import tracking

    now = [100.0]  # the tracker's clock, which the phase moves on by 2.5 s
    monkeypatch.setattr(tracking, "time", SimpleNamespace(perf_counter=lambda: now[0]))

    def run(_settings: Settings, _options: PhaseOptions) -> int:
        now[0] += 2.5
        return 7

    tracker = EcoTracker(enabled=False, output_dir=tmp_path / "eco", country_iso_code="FRA")
    phase = Phase("x", run=run, count=lambda result: result)
    result, record = run_phase(phase, settings, PhaseOptions(), tracker)
    assert result == 7
    assert (record.phase, record.events) == ("x", 7)
    assert record.duration_s == 2.5  # the phase's own span, as the tracker's clock saw it
    assert record.energy_kwh is None  # eco off: nothing measured
    assert tracker.records == [record]
    assert not (tmp_path / "eco").exists()


def test_run_phase_passes_the_settings_and_options_to_the_phase(
    settings: Settings, tmp_path: Path
) -> None:
    seen: list[object] = []
    phase = Phase("x", run=lambda s, o: seen.extend([s, o]) or 0, count=lambda _result: 0)
    options = PhaseOptions(events=12, seed=3)
    run_phase(
        phase,
        settings,
        options,
        EcoTracker(enabled=False, output_dir=tmp_path, country_iso_code="FRA"),
    )
    assert seen == [settings, options]


def test_run_all_stopped_by_sigterm_keeps_its_exit_code(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A phase stopped by SIGTERM (stream run) stops run-all as Terminated (exit 143), not as
    a failure (exit 1)."""
    from orderpipe.core.errors import Terminated
    from orderpipe.runs import phases
    from orderpipe.runs.run_all import run_all

    def terminated(*_args: object, **_kwargs: object) -> None:
        raise Terminated("stream run: stopped by SIGTERM")

    monkeypatch.setattr(phases, "run_phase", terminated)
    with pytest.raises(Terminated, match="run-all stopped in phase generate: stream run"):
        run_all(settings, 10)
