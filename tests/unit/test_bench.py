"""bench: the plan covers every phase of the pipeline; a dead child is an error, not a hang."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from orderpipe.core.errors import OrderpipeError
from orderpipe.core.settings import Settings
from orderpipe.runs.bench import _measure, bench_plan
from orderpipe.runs.phases import PHASES, PhaseOptions


def test_a_child_that_dies_without_reporting_is_an_error_not_a_hang() -> None:
    began = time.monotonic()
    with pytest.raises(OrderpipeError, match="ended with code 3 before reporting"):
        _measure("dies", os._exit, 3)  # what the OOM killer leaves: no result, a dead process
    assert time.monotonic() - began < 30


def test_a_child_that_fails_says_why() -> None:
    with pytest.raises(OrderpipeError, match=r"bench phase boom failed: .*No such file"):
        _measure("boom", os.stat, "/nonexistent/orderpipe")


def test_the_plan_measures_every_phase_of_run_all(settings: Settings, tmp_path: Path) -> None:
    plan = bench_plan(settings, tmp_path, PhaseOptions(events=10))
    assert {step.phase for step in plan} == {phase.name for phase in PHASES}


def test_the_plan_keeps_the_users_eco_country_and_uses_its_own_folders(
    settings: Settings, tmp_path: Path
) -> None:
    mine = settings.model_copy(update={"eco_country_iso_code": "DEU"})
    plan = bench_plan(mine, tmp_path / "bench", PhaseOptions(events=10), "mysql+pymysql://u:p@h/d")
    for step in plan:
        assert step.settings.eco_country_iso_code == "DEU"
        assert step.settings.data_dir == tmp_path / "bench" / "data"
    on_server = [step for step in plan if step.settings.db_url.get_backend_name() == "mysql"]
    assert [step.label for step in on_server] == ["ingest-mysql", "predict-mysql"]
    assert on_server[0].drop_tables


def test_phases_bring_what_they_need_and_unknown_ones_are_refused() -> None:
    from orderpipe.runs.bench import NEEDS, with_prerequisites

    assert set(NEEDS) == {phase.name for phase in PHASES}
    assert with_prerequisites(["predict"]) == {"generate", "etl", "ingest", "train", "predict"}
    assert with_prerequisites(["etl"]) == {"generate", "etl"}
    assert with_prerequisites(["stream"]) == {"generate", "etl", "train", "stream"}
    with pytest.raises(OrderpipeError, match="unknown phase ingst: choose among generate"):
        with_prerequisites(["ingst"])
