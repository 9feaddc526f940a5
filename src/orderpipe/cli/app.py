"""The Typer app and the plumbing every command shares: settings once, services' errors as one
red line with exit 1 (`--debug` shows the traceback), exit 2 for bad usage.
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from orderpipe import __version__
from orderpipe.core.errors import OrderpipeError, Terminated, UsageError
from orderpipe.core.logs import configure_logging

if TYPE_CHECKING:
    from orderpipe.core.settings import Settings

T = TypeVar("T")

app = typer.Typer(
    name="orderpipe",
    help="E-commerce order pipeline: generate, etl, ingest, train, predict, stream, eco.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON object (the result) on stdout.")
]
DatabaseUrlOption = Annotated[
    str | None, typer.Option(help="Overrides ORDERPIPE_DATABASE_URL for this run.")
]


@dataclasses.dataclass
class CliState:
    debug: bool = False
    settings: Settings | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # global options


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"orderpipe {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of failures.")] = False,
    log_format: Annotated[
        str | None, typer.Option("--log-format", help="text or json (ORDERPIPE_LOG_FORMAT).")
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """orderpipe: generate -> etl -> ingest -> train -> predict, each step its own command.

    Settings come from ORDERPIPE_* environment variables and ./.env (see `orderpipe doctor`).
    """
    from orderpipe.cli.render import start_command

    start_command()
    if log_format is not None and log_format not in ("text", "json"):
        raise typer.BadParameter("text or json", param_hint="--log-format")
    ctx.obj = CliState(debug=debug, overrides={"log_format": log_format} if log_format else {})


def _state(ctx: typer.Context) -> CliState:
    return ctx.obj if isinstance(ctx.obj, CliState) else CliState()


def fail(ctx: typer.Context, message: str, code: int = 1) -> NoReturn:
    """One red line on stderr (the traceback too with --debug), then exit with `code`."""
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    if _state(ctx).debug:
        traceback.print_exc()
    raise typer.Exit(code)


def settings_of(ctx: typer.Context, **overrides: Any) -> Settings:
    """The settings, loaded once (again when a command overrides some); configures logging."""
    from orderpipe.core.settings import load_settings

    state = _state(ctx)
    if state.settings is None or overrides:
        cleaned = {**state.overrides}
        cleaned.update({key: value for key, value in overrides.items() if value is not None})
        state.settings = load_settings(**cleaned)
        configure_logging(state.settings.log_format, state.settings.log_level)
    return state.settings


def run_service(ctx: typer.Context, call: Callable[[], T]) -> T:
    """Call a service; domain errors become one red line and exit 1 (2 for bad usage, 143
    for a command stopped by SIGTERM)."""

    try:
        return call()
    except UsageError as exc:
        fail(ctx, str(exc), 2)
    except Terminated as exc:
        fail(ctx, str(exc), 143)
    except OrderpipeError as exc:
        fail(ctx, str(exc))
    except KeyboardInterrupt:
        fail(ctx, "interrupted", 130)
    except typer.Exit:
        raise
    except Exception as exc:
        if _state(ctx).debug:
            raise
        fail(ctx, f"unexpected {type(exc).__name__}: {exc} (--debug shows the traceback)")
