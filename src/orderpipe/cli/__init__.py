"""The `orderpipe` command line: parse options, call one service, render its result.

One module per command group (batch, models, stream, eco, ops) registers its commands on the one
Typer `app`; `app.py` holds the shared plumbing and `render.py` the output. No logic lives here.
"""

from orderpipe.cli import batch, eco, models, ops, stream  # noqa: F401  (they register commands)
from orderpipe.cli.app import app

__all__ = ["app"]
