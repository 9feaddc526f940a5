"""Fixtures shared by the integration test modules: the stream's data (trained model included)
and the backends a stream test runs against. Plain helpers are in helpers.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orderpipe.etl.run import run_etl
from orderpipe.generate.dirt import Dirt
from orderpipe.generate.writer import generate_events
from orderpipe.ml.train import run_train
from orderpipe.stream.broker import EmbeddedBroker
from orderpipe.table.export import export_dataset
from tests.factories import layout_under
from tests.integration.helpers import BAD, EVENTS, Backend, StreamData


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> StreamData:
    root = tmp_path_factory.mktemp("stream")
    raw = generate_events(
        root / "raw.jsonl", EVENTS, seed=11, dirt=Dirt(duplicates=60, bad_lines=BAD)
    ).output
    paths = layout_under(root)
    result = run_etl(raw, paths)
    run_train("classification", paths.table, root / "artifacts")
    clean_jsonl = export_dataset(paths.table, paths.export("jsonl"), "jsonl").output
    return StreamData(raw, clean_jsonl, root / "artifacts", result.clean)


@pytest.fixture
def embedded_backend(tmp_path: Path) -> Iterator[Backend]:
    broker = EmbeddedBroker()
    try:
        yield Backend(broker.start(), f"sqlite:///{tmp_path}/stream.db", embedded=True)
    finally:
        broker.stop()


@pytest.fixture
def kafka_backend(kafka_bootstrap: str, mysql_url: str) -> Backend:
    return Backend(kafka_bootstrap, mysql_url, embedded=False)


@pytest.fixture
def kafka_postgres_backend(kafka_bootstrap: str, postgres_url: str) -> Backend:
    return Backend(kafka_bootstrap, postgres_url, embedded=False)
