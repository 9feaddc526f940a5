"""How results reach the user: rich tables and progress bars on a terminal, one JSON object on
stdout with `--json` (the human output then goes to stderr).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from orderpipe.core.progress import Progress

if TYPE_CHECKING:
    import rich.progress


def consoles(as_json: bool) -> tuple[Console, Console]:
    """(human output, diagnostics): with --json both go to stderr, stdout keeps the JSON."""
    err = Console(stderr=True)
    return (err if as_json else Console()), err


def jsonable(value: Any) -> Any:
    """A result (dataclasses, paths, datetimes...) as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 6)
    return value


_started: float | None = None  # perf_counter() at the command's start, start-up included


def start_command() -> None:
    """Note when the command started: when this process was started to run it (`orderpipe`,
    `python -m orderpipe`), its start, interpreter and imports included; else now."""
    global _started
    _started = time.perf_counter() - _process_age()


def own_process() -> bool:
    """Whether this process was started to run orderpipe: the `orderpipe` console script, or
    `python -m orderpipe` (not `python -m pytest` or another program calling the app)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None:
        return getattr(spec, "name", None) == "orderpipe.__main__"
    return Path(sys.argv[0]).name == "orderpipe"


def finish_now() -> None:
    """End a command whose work is written and whose output is out, without the interpreter's
    teardown of the libraries it loaded (0.3-0.6 s once scikit-learn and polars are in). Only
    in a process of its own (see `own_process`); elsewhere it returns and the caller goes on."""
    import logging

    if not own_process():
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _process_age() -> float:
    """Seconds since this process started, when it was started to run orderpipe; else 0."""
    if not own_process():
        return 0.0  # called in another program (a test's CliRunner): its age is not ours
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime, in ticks
        return max(float(Path("/proc/uptime").read_text().split()[0]) - started, 0.0)
    except (OSError, ValueError, IndexError):  # not Linux: from the CLI's start
        return 0.0


def command_seconds() -> float:
    """Seconds the command has taken so far, as its user waited for it."""
    return time.perf_counter() - (_started if _started is not None else time.perf_counter())


def emit(result: Any, as_json: bool, render: Callable[[Console], None]) -> None:
    """Render for people, and with --json print the result as one JSON object on stdout. Its
    `seconds` is the whole command as the user waited for it; a result's own `seconds` (the
    work, without start-up and imports) becomes `work_seconds`."""
    out, _ = consoles(as_json)
    render(out)
    if as_json:
        payload = jsonable(result)
        if isinstance(payload, dict):
            if "seconds" in payload:
                payload["work_seconds"] = payload.pop("seconds")
            payload["seconds"] = round(command_seconds(), 3)
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()


def emit_table(result: Any, as_json: bool, title: str, rows: list[tuple[str, str]]) -> None:
    """Render `rows` as a two-column table (and dump `result` with --json)."""
    emit(result, as_json, lambda out: out.print(table(title, rows)))


def table(title: str, rows: list[tuple[str, str]]) -> Table:
    """A two-column (name, value) table."""
    grid = Table(title=title, show_header=False, title_justify="left")
    grid.add_column(style="bold")
    grid.add_column(justify="right")
    for key, value in rows:
        grid.add_row(key, value)
    return grid


def columns_table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> Table:
    """A table with a header; the first column left-aligned, the figures right-aligned."""
    grid = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        grid.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        grid.add_row(*row)
    return grid


def n(value: float) -> str:
    """A count with thousands separators."""
    return f"{value:,.0f}"


@contextmanager
def progress_bar() -> Iterator[rich.progress.Progress]:
    """A progress display on stderr when it is a terminal; silent otherwise."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    err = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
        transient=True,
    ) as progress:
        yield progress


@contextmanager
def table_progress() -> Iterator[Progress]:
    """A `(name, done, total)` callback that shows one bar per name."""
    with progress_bar() as progress:
        tasks: dict[str, Any] = {}

        def on_progress(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done)

        yield on_progress


def what_was_read(result: Any) -> str:
    """What an ingest or predict run read of etl's table (its `table_version`/`since_version`)."""
    if result.table_version is None:
        return "the whole file"
    if result.since_version is None:
        return f"all of table version {result.table_version}"
    if result.since_version == result.table_version:
        return f"nothing: version {result.table_version} is in already"
    return f"changes from version {result.since_version} to {result.table_version}"
