"""Atomic file writes: write beside the target, then rename, so a reader never sees half a file;
the temporary files of runs that died (leftovers); a full disk as one line (`DiskFull`).

Used by the services that write files (generate, etl and its dataset, train, eco report).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from orderpipe.core.errors import DiskFull

# How a full disk shows through the libraries that write for orderpipe: Python's OSError, and
# the Rust writers' (polars, delta-rs) errors that carry the OS message in their text.
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_SIGNS = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")


def temporary_path(target: Path) -> Path:
    """Where this process writes `target` before renaming it into place: `.<name>.tmp-<pid>`
    beside it (a leftover once the process is gone, see `leftovers`)."""
    return target.with_name(f".{target.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success it replaces `target` in one rename."""
    with staged_paths(target) as (tmp,):
        yield tmp


@contextlib.contextmanager
def staged_paths(
    *targets: Path, moved: Callable[[Path], None] | None = None
) -> Iterator[list[Path]]:
    """Yield a temporary path beside each target; once the block has written them all, each
    replaces its target in turn (`moved(target)` after each rename). A block that fails changes
    no target. The first rename is the commit: if the renames are cut short after it, the
    temporaries left stay, for the next reader to finish (else they are removed)."""
    tmps = [temporary_path(target) for target in targets]
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
    renamed = 0
    try:
        yield tmps
        for target, tmp in zip(targets, tmps, strict=True):
            os.replace(tmp, target)
            renamed += 1
            if moved:
                moved(target)
    finally:
        if not renamed:
            for tmp in tmps:
                tmp.unlink(missing_ok=True)


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


def is_disk_full(exc: BaseException) -> bool:
    """True when `exc`, or an exception it was raised from, says the disk (or quota) is full."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            return True
        if any(sign in str(current) for sign in _FULL_SIGNS):
            return True
        current = current.__cause__ or current.__context__
    return False


@contextlib.contextmanager
def disk_full_as_error(
    what: str,
    target: Path,
    needed: Callable[[], int | None] | None = None,
    *,
    outcome: str = "nothing was changed",
) -> Iterator[None]:
    """Turn a full disk inside the block into one line: where, while writing what, about how
    much more space the run needs (`needed()`: bytes in all, estimated; None when unknown), and
    what the run left (`outcome`: the block's writes are atomic, so by default nothing)."""
    try:
        yield
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        estimate = needed() if needed else None
        raise DiskFull(_no_space_message(what, target, estimate, outcome)) from exc


def _no_space_message(what: str, target: Path, needed: int | None, outcome: str) -> str:
    device, mount = _filesystem_of(target)
    where = f"{device} ({mount})" if device != "?" else str(target)
    more = ""
    if needed is not None:
        try:
            free = shutil.disk_usage(mount).free  # once this run's temporary files are gone
        except OSError:
            free = 0
        more = f" (about {max(needed - free, 0) / 1e6:,.0f} MB more needed)"
    return f"no space left on {where} while writing {what}{more}; {outcome}"


def _filesystem_of(path: Path) -> tuple[str, str]:
    """(device, mount point) of the filesystem holding `path` (or its nearest existing parent)."""
    resolved = path.resolve()
    while not resolved.exists() and resolved != resolved.parent:
        resolved = resolved.parent
    where = str(resolved)
    device, best = "?", "/"
    with contextlib.suppress(OSError), open("/proc/self/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            source, mount = (field.replace("\\040", " ") for field in line.split()[:2])
            inside = where == mount or where.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best):
                device, best = source, mount
    return device, best


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
        if not alive(int(match["pid"])):
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
    except OSError:  # gone meanwhile, or not readable
        return 0


def alive(pid: int) -> bool:
    """True when `pid` is another running process. This process's own pid counts as dead:
    orderpipe looks for leftovers before it writes, so a file named by this pid was left by an
    earlier process that had it (in a container, every command runs as pid 1)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
