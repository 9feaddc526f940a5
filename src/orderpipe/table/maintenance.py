"""Upkeep of the clean table: the orphan data files that writes killed before their commit left
behind, found (for `doctor`) and removed (by etl, before it merges).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from orderpipe.core.fileio import alive
from orderpipe.table.merge import DATA_FILE
from orderpipe.table.read import PARTITION, data_files, is_table


def orphan_files(path: Path) -> list[Path]:
    """Data files that a write killed before its commit left in the table: named by a process
    that is no longer alive, and in no version of the table's log (so no reader can see them).
    Files of a running write, and files orderpipe did not name, are never listed."""
    if not is_table(path):
        return []
    candidates = [
        file
        for file in path.glob(f"{PARTITION}=*/part-p*.parquet")
        if (match := DATA_FILE.match(file.name)) and not alive(int(match["pid"]))
    ]
    if not candidates:
        return []
    from deltalake.exceptions import DeltaError

    try:
        referenced = _referenced_files(path)
    except (DeltaError, OSError):  # a log that cannot be read now: no file is known to be unused
        return []
    return sorted(f for f in candidates if f.relative_to(path).as_posix() not in referenced)


def _referenced_files(path: Path) -> set[str]:
    """Every data file a version still in the log adds or removes, and the current ones."""
    from urllib.parse import unquote

    from deltalake import DeltaTable

    referenced = set(data_files(DeltaTable(str(path))))
    for log in (path / "_delta_log").glob("*.json"):
        with contextlib.suppress(OSError), log.open(encoding="utf-8") as lines:
            for line in lines:
                with contextlib.suppress(ValueError):
                    action = json.loads(line)
                    for kind in ("add", "remove"):
                        if kind in action:
                            referenced.add(unquote(action[kind]["path"]))
    return referenced


def remove_orphans(path: Path) -> list[Path]:
    """Remove the `orphan_files` of the table; returns what was removed."""
    removed = []
    for file in orphan_files(path):
        with contextlib.suppress(FileNotFoundError):
            file.unlink()
        removed.append(file)
        with contextlib.suppress(OSError):
            file.parent.rmdir()  # a partition folder that only the orphan needed
    return removed
