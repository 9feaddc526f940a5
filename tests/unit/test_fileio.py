"""fileio: the leftovers of runs no longer alive."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from orderpipe.core.fileio import leftovers, remove_leftovers


def test_a_leftover_named_by_this_process_pid_is_an_earlier_process_s(tmp_path: Path) -> None:
    """In a container every command runs as pid 1: a temporary file named by the pid of the run
    that is looking was left by an earlier run (orderpipe looks before it writes)."""
    mine = tmp_path / f".raw.jsonl.tmp-{os.getpid()}"
    mine.write_text("half a file of the previous pid-1 run")
    assert leftovers(tmp_path) == [mine]
    assert remove_leftovers(tmp_path) == [mine] and not mine.exists()


def test_a_leftover_of_a_running_process_is_kept(tmp_path: Path) -> None:
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        theirs = tmp_path / f".raw.jsonl.tmp-{running.pid}"
        theirs.write_text("being written")
        assert leftovers(tmp_path) == [] and theirs.exists()
    finally:
        running.kill()
        running.wait()
    assert leftovers(tmp_path) == [theirs]
