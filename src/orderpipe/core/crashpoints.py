"""Crash points: where the crash harness kills a run, by name, to prove that a kill at that
moment leaves every output as the last completed run left it.

`ORDERPIPE_CRASH_AT=<point>` (or `<point>:<n>`, the n-th time the run passes it) makes the
process kill itself with SIGKILL there, as `kill -9` would: no handler, no clean-up, no flush.
A test hook, not a setting: unset (always, outside the tests), each point costs one lookup.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "ORDERPIPE_CRASH_AT"
_passed: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Die here when the environment names this point (and this is the pass it names)."""
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
