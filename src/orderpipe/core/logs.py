"""Logging for the orderpipe loggers: rich text lines or one JSON object per line, on stderr.

Configured once by the CLI from the settings (ORDERPIPE_LOG_FORMAT, ORDERPIPE_LOG_LEVEL).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp, level, logger, message (and extra `counts`)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("phase", "counts"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        return json.dumps(entry, default=str)


def configure_logging(log_format: str = "text", level: str = "INFO") -> None:
    """Attach one handler to the `orderpipe` logger (idempotent)."""
    logger = logging.getLogger("orderpipe")
    logger.setLevel(level)
    if any(getattr(h, "_orderpipe", False) for h in logger.handlers):
        return
    if log_format == "json":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(stderr=True), show_path=False, markup=False)
    handler._orderpipe = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False
