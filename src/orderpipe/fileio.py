"""Atomic file writes: write beside the target, then rename, so a reader never sees half a file.

Used by the services that write files (generate, etl and its dataset, eco report).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
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


# What a run leaves beside its outputs while it works: `.<name>.tmp-<pid>` (atomic writes),
# `.etl-stage-<pid>` (etl's staging), `.<name>.truth-parts-<pid>` (generate's truth chunks).
_LEFTOVER = re.compile(r"^\.(?P<name>.*?)(?:\.tmp|\.truth-parts|etl-stage)-(?P<pid>\d+)$")


def remove_leftovers(folder: Path, names: set[str] | None = None) -> list[Path]:
    """Remove the temporary files and folders that runs no longer alive left in `folder` (a
    kill -9 or a crash gives them no chance to): those whose pid is not a running process, and,
    given `names`, only those of these outputs (a folder orderpipe does not own). A pid in use
    again by another process keeps its leftover, never the other way round."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = _LEFTOVER.match(path.name)
        if match is None or (names is not None and match["name"] not in names):
            continue
        if _alive(int(match["pid"])):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
