"""The consumer's collector settings: paused while the model loads, service thresholds while it
serves, and the process's own thresholds back once the last consumer of the process is done."""

from __future__ import annotations

import gc

from orderpipe.stream import runtime
from orderpipe.stream.runtime import SERVICE_GC_THRESHOLDS


def test_overlapping_consumers_put_the_process_thresholds_back_once_the_last_is_done() -> None:
    """Each consumer used to restore what it saw at its start: with two in one process (as the
    tests run), the second saw the first's service thresholds and left them for good."""
    own = gc.get_threshold()
    first, second = runtime.collector_for_serving(), runtime.collector_for_serving()
    first.__enter__()
    second.__enter__()
    assert gc.get_threshold() == SERVICE_GC_THRESHOLDS
    first.__exit__(None, None, None)
    assert gc.get_threshold() == SERVICE_GC_THRESHOLDS  # the second still serves
    second.__exit__(None, None, None)
    assert gc.get_threshold() == own


def test_the_collector_is_paused_while_loading_and_back_after() -> None:
    assert gc.isenabled()
    with runtime.collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
