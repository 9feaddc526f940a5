"""stream.pipeline: how `stream run` and `stream produce` stop when asked to."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from orderpipe.core.errors import Terminated
from orderpipe.stream import run as pipeline
from orderpipe.stream.kafka import KafkaEndpoint
from orderpipe.stream.producer import ProduceResult


class WaitingConsumer:
    """A consumer that works until it is asked to stop, and says how it ended."""

    def __init__(self, *_args: object, **_kwargs: object) -> None:
        self.ready = asyncio.Event()
        self.asked = asyncio.Event()
        self.stop_at: object = None
        self.consumed = 0
        self.ended = ""

    async def run(self) -> object:
        try:
            await self.asked.wait()
        except asyncio.CancelledError:
            self.ended = "cancelled in the middle of its work"
            raise
        self.ended = "stopped, its batch finished and committed"
        return None

    def stop(self) -> None:
        self.asked.set()


def test_a_cancelled_stream_run_stops_its_consumer_instead_of_cancelling_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C or SIGTERM once the producer is done: the consumer must end its batch."""
    consumers: list[WaitingConsumer] = []

    def make_consumer(*args: object, **kwargs: object) -> WaitingConsumer:
        consumers.append(WaitingConsumer())
        return consumers[-1]

    async def no_topic(*_args: object) -> None:
        return None

    async def sent_at_once(*_args: object, **_kwargs: object) -> ProduceResult:
        return ProduceResult(topic="t", source=Path("x"), sent=10, skipped=0)

    monkeypatch.setattr(pipeline, "StreamConsumer", make_consumer)
    monkeypatch.setattr(pipeline, "produce", sent_at_once)
    monkeypatch.setattr(pipeline, "ensure_topic", no_topic)

    async def cancel_once_produced() -> None:
        task = asyncio.ensure_future(
            pipeline.run_stream(KafkaEndpoint("127.0.0.1:1"), "t", "g", Path("x"), object)  # type: ignore[arg-type]
        )
        await asyncio.sleep(0.05)  # the producer is done, the consumer works
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_once_produced())
    assert [consumer.ended for consumer in consumers] == [
        "stopped, its batch finished and committed"
    ]


def test_sigterm_cancels_once_and_lets_the_clean_up_finish() -> None:
    """The first SIGTERM cancels the command; a second one must not cut its clean-up short."""
    cleaned: list[str] = []

    async def work() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.05)  # the clean-up (a consumer ending its batch)
            cleaned.append("done")

    async def signalled() -> None:
        asyncio.get_running_loop().call_later(0.02, os.kill, os.getpid(), signal.SIGTERM)
        asyncio.get_running_loop().call_later(0.04, os.kill, os.getpid(), signal.SIGTERM)
        await pipeline._cancelled_by_sigterm(work(), "stream run")

    with pytest.raises(Terminated, match="stream run: stopped by SIGTERM"):
        asyncio.run(signalled())
    assert cleaned == ["done"]
