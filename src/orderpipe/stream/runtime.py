"""What the consumer asks of the Python runtime: the cyclic collector's settings while it loads
and serves, its worker threads (one OpenMP thread each), and the backoff between retries."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

BACKOFF_BASE, BACKOFF_CAP = 0.2, 8.0  # seconds: 0.2, 0.4, 0.8 ... 8, each with jitter
# The cyclic collector's thresholds while a consumer runs (Python's defaults: 700, 10, 10).
SERVICE_GC_THRESHOLDS = (100_000, 50, 100)
# Consumers serving in this process, and the thresholds from before the first one (a process
# may run several, as the tests do: the last one to finish puts them back).
_serving: dict[str, Any] = {"count": 0, "thresholds": None}


@contextlib.contextmanager
def collector_for_serving() -> Iterator[None]:
    """The service thresholds while the block serves, the process's own before and after."""
    if _serving["count"] == 0:
        _serving["thresholds"] = gc.get_threshold()
        gc.set_threshold(*SERVICE_GC_THRESHOLDS)
    _serving["count"] += 1
    try:
        yield
    finally:
        _serving["count"] -= 1
        if _serving["count"] == 0:
            gc.set_threshold(*_serving["thresholds"])


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection while the block loads what lives as long as the process: importing
    scikit-learn and its model allocates ~10^6 objects, and the collections they set off
    re-scanned all of them (~0.4 s of `stream run`'s start)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def one_thread_for_numerics() -> None:
    """Run in the writer and cleaner threads: each one's OpenMP kernels (the model's predict)
    use that one thread. A micro-batch of a few hundred rows spent more time waking and
    spinning OpenMP workers, on a core the other stage needs, than computing (~30 ms instead
    of ~10 ms per batch)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="openmp")


def worker_thread(name: str) -> ThreadPoolExecutor:
    """One worker thread named `name`, its numerics on one thread (see one_thread_for_numerics)."""
    return ThreadPoolExecutor(1, thread_name_prefix=name, initializer=one_thread_for_numerics)


async def run_in(pool: ThreadPoolExecutor | None, call: Callable[..., Any], *args: Any) -> Any:
    """`call(*args)` in the worker thread `pool`, awaited."""
    return await asyncio.get_running_loop().run_in_executor(pool, call, *args)


async def open_in(pool: ThreadPoolExecutor | None, factory: Callable[[], Any]) -> Any:
    """`factory()` in the worker thread `pool`; what opens after the caller was cancelled (the
    thread cannot be) is closed as soon as it is there."""
    opened = asyncio.get_running_loop().run_in_executor(pool, factory)
    try:
        return await asyncio.shield(opened)
    except asyncio.CancelledError:
        opened.add_done_callback(_close_late)
        raise


def _close_late(opened: asyncio.Future[Any]) -> None:
    if not opened.cancelled() and opened.exception() is None:
        with contextlib.suppress(Exception):
            opened.result().close()


def shut_down(*pools: ThreadPoolExecutor | None) -> None:
    """Shut the worker threads down without waiting for them."""
    for pool in pools:
        if pool is not None:
            pool.shutdown(wait=False)


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Capped exponential backoff with "equal jitter": in [d/2, d], d = min(cap, base * 2^n).

    Consumers that lost the same database do not come back in lockstep.
    """
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(attempt - 1, 0))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


async def back_off(seconds: float, stop: asyncio.Event, metrics: Any) -> None:
    """Wait `seconds`, or less when `stop` is set; the consumer's state is "paused" meanwhile.

    No lock is held, so a rebalance meanwhile completes; and nothing polls Kafka here.
    (Polling "paused" partitions is not safe: the partitions a rebalance assigns during the
    pause are not paused, and a poll would hand over, and so skip, their records.) The fetch
    of the next batch goes on concurrently and stops at batch_size; an outage longer than
    max_poll_interval makes the member leave the group, and the next poll rejoins it."""
    metrics.state("paused")
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
    finally:
        metrics.state("running")
