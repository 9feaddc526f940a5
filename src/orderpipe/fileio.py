"""Atomic file writes: write beside the target, then rename, so a reader never sees half a file.

Used by the services that write files (generate, etl and its dataset, train, eco report).
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


def leftovers(folder: Path, names: set[str] | None = None) -> list[Path]:
    """The temporary files and folders that runs no longer alive left in `folder` (a kill -9 or
    a crash gives them no chance to remove them): those whose pid is not a running process,
    and, given `names`, only those of these outputs (a folder orderpipe does not own). A pid in
    use again by another process keeps its leftover, never the other way round."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        match = _LEFTOVER.match(path.name)
        if match is None or (names is not None and match["name"] not in names):
            continue
        if not _alive(int(match["pid"])):
            found.append(path)
    return found


def remove_leftovers(folder: Path, names: set[str] | None = None) -> list[Path]:
    """Remove the `leftovers` of dead runs in `folder`; returns what was removed."""
    removed: list[Path] = []
    for path in leftovers(folder, names):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        removed.append(path)
    return removed


def size_of(path: Path) -> int:
    """Bytes in a file, or in every file under a folder (0 when it is gone meanwhile)."""
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except FileNotFoundError:
        return 0


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
