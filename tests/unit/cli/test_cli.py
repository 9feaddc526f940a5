"""The CLI contract: exit codes, one JSON object with --json, one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orderpipe.cli import app

runner = CliRunner(env={"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"})


def invoke(*args: str) -> object:
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_help_lists_the_commands_with_examples() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    commands = ("generate", "etl", "ingest", "train", "predict", "report", "doctor", "bench")
    for command in commands:
        assert command in result.stdout
    for command in commands:
        assert "Example:" in invoke(command, "--help").stdout


def test_help_does_not_import_matplotlib_scikit_learn_or_sqlalchemy() -> None:
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from orderpipe.cli import app\n"
        "for args in (['--help'], ['report', '--help'], ['train', '--help']):\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0\n"
        "print(sorted(m for m in ('matplotlib', 'sklearn', 'sqlalchemy') if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


def test_batch_pipeline_through_the_cli(workdir: Path) -> None:
    generated = invoke("generate", "--events", "500", "--bad-lines", "5", "--json")
    assert generated.exit_code == 0, generated.stderr
    payload = json.loads(generated.stdout)
    assert payload["lines"] == 500 + 10 + 5

    cleaned = invoke("etl", "--json")
    assert cleaned.exit_code == 0, cleaned.stderr
    etl = json.loads(cleaned.stdout)
    assert etl["lines"] == etl["clean"] + etl["duplicates"] + etl["rejected"]
    assert etl["rejected"] == 5

    ingested = invoke("ingest", "--json")
    assert ingested.exit_code == 0, ingested.stderr
    assert json.loads(ingested.stdout)["events"] == 500
    assert (workdir / "data" / "orderpipe.db").is_file()


def test_json_output_is_exactly_one_object(workdir: Path) -> None:
    result = invoke("generate", "--events", "50", "--json")
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["events"] == 50
    assert "generate" in result.stderr  # the human table went to stderr


def test_bad_usage_exits_2_with_a_message_naming_the_mistake(workdir: Path) -> None:
    for args, says in [
        (("generate", "--events", "zero"), "Input should be a valid integer"),
        (("generate", "--events", "0"), "greater than or equal to 1"),
        (("no-such-command",), "No such command 'no-such-command'"),
    ]:
        result = invoke(*args)
        assert (result.exit_code, says in result.stderr) == (2, True), (args, result.stderr)
    assert not (workdir / "data").exists()  # nothing was generated


def test_runtime_failure_is_one_red_line_and_exit_1(workdir: Path) -> None:
    result = invoke("etl", "--input", "missing.jsonl")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: input file not found: missing.jsonl (run `orderpipe generate` first)"
    ]
    assert "Traceback" not in result.stderr


def test_invalid_setting_is_one_line_and_exit_1(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDERPIPE_INGEST_CHUNK_SIZE", "-1")
    result = invoke("generate", "--events", "10")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: invalid setting ORDERPIPE_INGEST_CHUNK_SIZE: Input should be greater than 0"
    )


def test_debug_shows_the_traceback(workdir: Path) -> None:
    result = invoke("--debug", "etl", "--input", "missing.jsonl")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr


def test_doctor_reports_a_database_that_is_down(workdir: Path) -> None:
    result = runner.invoke(
        app,
        ["doctor", "--json"],
        env={"ORDERPIPE_DATABASE_URL": "mysql+pymysql://u:pw@127.0.0.1:1/db"},
    )
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    database = next(c for c in report["checks"] if c["name"] == "database")
    assert database["ok"] is False
    assert "pw" not in result.stdout.replace("pymysql", "")
    assert result.stderr.strip().splitlines()[-1].startswith("error: database:")


def test_doctor_passes_on_the_embedded_defaults(workdir: Path) -> None:
    result = invoke("doctor", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["settings"]["database_url"] == "sqlite:///data/orderpipe.db"


def _dead_pid() -> int:
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no process has any more
    return dead.pid


def _doctor_check(name: str) -> dict[str, object]:
    result = invoke("doctor", "--json")
    assert result.exit_code == 0, result.stderr  # what runs left behind is a note, not a failure
    return next(c for c in json.loads(result.stdout)["checks"] if c["name"] == name)


def test_doctor_lists_what_dead_runs_left_and_the_next_runs_remove_it(workdir: Path) -> None:
    assert _doctor_check("leftovers")["note"] is False
    assert invoke("generate", "--events", "1200").exit_code == 0
    assert invoke("etl").exit_code == 0
    dead = _dead_pid()
    left = {
        workdir / "data" / "raw" / f".orders_events.jsonl.tmp-{dead}": b"x" * 2000,
        workdir / "reports" / f".etl_quality.json.tmp-{dead}": b"{",
        workdir / "artifacts" / f".classification_model.joblib.tmp-{dead}": b"j" * 500,
        workdir / "reports" / f".eco_report.md.tmp-{dead}": b"#",
        workdir / "data" / "processed" / f".orders_events_cleaned.csv.tmp-{dead}": b"a,b",
    }
    for path, content in left.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    alive = workdir / "reports" / f".eco_report.csv.tmp-{os.getppid()}"  # a live process's
    alive.write_text("writing")
    check = _doctor_check("leftovers")
    assert check["note"] is True
    assert sorted(Path(p).resolve() for p in check["facts"]["leftovers"]) == sorted(left)
    assert check["facts"]["bytes"] == sum(len(content) for content in left.values())
    assert "5 temporary file(s) of runs no longer alive" in str(check["detail"])
    for command in (
        ("generate", "--events", "1200"),
        ("etl",),
        ("train", "classification"),
        ("export", "--format", "csv"),
    ):
        assert invoke(*command).exit_code == 0
    # standalone commands do not measure (run-all does): the report says so, the rest cleaned up
    eco = invoke("eco", "report")
    assert (eco.exit_code, "no CodeCarbon measurements" in eco.stderr) == (1, True), eco.stderr
    assert [path for path in left if path.exists()] == []
    assert alive.exists()
    assert _doctor_check("leftovers")["note"] is False


def test_doctor_says_when_the_database_is_behind_the_clean_table(workdir: Path) -> None:
    assert "no clean table yet" in str(_doctor_check("dataset vs database")["detail"])
    assert invoke("generate", "--events", "1200").exit_code == 0
    assert invoke("etl").exit_code == 0
    check = _doctor_check("dataset vs database")
    assert check["note"] is True
    assert "the database holds none of it: run `orderpipe ingest`" in str(check["detail"])
    assert invoke("ingest").exit_code == 0
    assert invoke("train", "classification").exit_code == 0
    check = _doctor_check("dataset vs database")
    assert "run `orderpipe predict`" in str(check["detail"])
    assert invoke("predict").exit_code == 0
    check = _doctor_check("dataset vs database")
    assert check["note"] is False, check
    assert check["facts"]["ingested_version"] == check["facts"]["table_version"]
    assert check["facts"]["predicted_model"] == check["facts"]["model_version"]
    import sqlite3

    with sqlite3.connect(workdir / "data" / "orderpipe.db") as db:  # emptied since
        db.execute("DELETE FROM table_predictions")
    check = _doctor_check("dataset vs database")
    assert "run `orderpipe predict`" in str(check["detail"])  # as predict would: a full pass
    assert invoke("predict").exit_code == 0
    assert invoke("generate", "--events", "300", "--seed", "9").exit_code == 0
    assert invoke("etl").exit_code == 0  # a new version of the table: the database is behind
    check = _doctor_check("dataset vs database")
    assert check["note"] is True
    assert check["facts"]["ingested_version"] < check["facts"]["table_version"]


def test_train_and_predict_through_the_cli(workdir: Path) -> None:
    assert invoke("generate", "--events", "1500").exit_code == 0
    assert invoke("etl").exit_code == 0
    assert invoke("ingest").exit_code == 0
    trained = invoke("train", "--json")
    assert trained.exit_code == 0, trained.stderr
    names = [m["name"] for m in json.loads(trained.stdout)["models"]]
    assert names == ["classification", "regression"]
    predicted = invoke("predict", "--json")
    assert predicted.exit_code == 0, predicted.stderr
    assert json.loads(predicted.stdout)["scored"] == 1500


def test_predict_without_a_model_says_what_to_run(workdir: Path) -> None:
    result = invoke("predict")
    assert result.exit_code == 1
    assert "run `orderpipe train classification`" in result.stderr


def test_train_refuses_an_unknown_model_name(workdir: Path) -> None:
    result = invoke("train", "forest")
    assert result.exit_code == 2
    assert "'forest' is not one of 'classification', 'regression', 'all'" in result.stderr


def test_json_log_format_gives_one_object_per_line() -> None:
    import io
    import logging

    from orderpipe.core.logs import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("orderpipe.test-json")
    logger.addHandler(handler)
    logger.warning("database unavailable; retry %d", 2, extra={"counts": {"retries": 2}})
    logger.removeHandler(handler)
    entry = json.loads(stream.getvalue())
    assert entry["message"] == "database unavailable; retry 2"
    assert entry["level"] == "WARNING" and entry["counts"] == {"retries": 2}


def test_version_prints_the_package_version() -> None:
    from orderpipe import __version__

    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"orderpipe {__version__}"


def test_every_json_result_says_how_long_the_whole_command_took(workdir: Path) -> None:
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "orderpipe", "generate", "--events", "20", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    payload = json.loads(run.stdout)
    # the whole command (interpreter start and imports included) vs the work alone
    assert payload["seconds"] > payload["work_seconds"] > 0
    in_process = json.loads(invoke("generate", "--events", "20", "--json").stdout)
    assert in_process["seconds"] >= in_process["work_seconds"]
