"""A broker with its HTTP listener on a free port, for the metrics and console tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from oncelog.config import broker_config
from oncelog.testing import EmbeddedBroker

StartBroker = Callable[..., EmbeddedBroker]


@pytest.fixture
def start_http_broker(tmp_path: Path) -> Iterator[StartBroker]:
    """`start_http_broker(storage=None, **properties)` starts a broker (stopped after the test) whose
    `server.http_port` serves /metrics and the console; properties are Kafka's dotted names."""
    started: list[EmbeddedBroker] = []

    def start(storage: str | None = None, **properties: str) -> EmbeddedBroker:
        config = broker_config({"http.port": "0", "group.initial.rebalance.delay.ms": "0", **properties},
                               data_dir=tmp_path / f"data-{len(started)}", port=0, storage=storage)
        embedded = EmbeddedBroker(config)
        embedded.start()
        started.append(embedded)
        return embedded

    try:
        yield start
    finally:
        for embedded in started:
            embedded.stop()
