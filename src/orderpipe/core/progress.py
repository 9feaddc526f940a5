"""The one progress callback type of orderpipe's long commands: `progress(what, done, total)`,
called as work advances, `what` naming the step or table, `total` None when not known."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int, "int | None"], None]  # (step or table, done, total when known)
