"""Atomic file writes: write beside the target, then rename, so a reader never sees half a file.

Used by the services that write files (generate, etl and its dataset, eco report).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success it replaces `target` in one rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_atomic(target: Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp_path)` and move the result onto `target` atomically."""
    with atomic_path(target) as tmp:
        write(tmp)
    return target


def write_text_atomic(target: Path, text: str) -> Path:
    """Write a text file atomically."""
    return write_atomic(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))
