"""Embedded brokers for tests: in-process (fast) or as a subprocess (for kill -9 tests).

    from oncelog.testing import embedded_broker

    with embedded_broker() as bootstrap:      # "127.0.0.1:PORT", data in a temp dir
        producer = Producer({"bootstrap.servers": bootstrap})

`embedded_broker` runs the broker's event loop in a background thread and stops it cleanly on exit.
`BrokerProcess` runs `python -m oncelog serve --port 0` and reads the port from its first line; it can
be stopped with SIGTERM or killed with SIGKILL and restarted on the same data directory. Installing
oncelog registers a pytest plugin (`oncelog.pytest_plugin`) whose fixture `oncelog_broker` yields a
bootstrap address of a fresh embedded broker.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from oncelog.config import BrokerConfig, broker_config

STARTUP_TIMEOUT_S = 30.0


class EmbeddedBroker:
    """A broker on its own event loop thread. `bootstrap` is valid between start() and stop()."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.bootstrap = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="oncelog-broker", daemon=True)
        self.server: Any = None

    def start(self) -> str:
        from oncelog.server.app import BrokerServer

        self._thread.start()
        self.server = BrokerServer(self.config)
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(STARTUP_TIMEOUT_S)
        self.bootstrap = f"{self.config.host}:{self.server.port}"
        return self.bootstrap

    def call(self, function: Any, *args: Any) -> Any:
        """Run `function(*args)` on the broker's loop (where all broker state lives) and return its result."""
        future: Future[Any] = Future()

        def run() -> None:
            try:
                future.set_result(function(*args))
            except BaseException as error:
                future.set_exception(error)

        self._loop.call_soon_threadsafe(run)
        return future.result(STARTUP_TIMEOUT_S)

    def stop(self) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(STARTUP_TIMEOUT_S)
            self.server = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(STARTUP_TIMEOUT_S)
        self._loop.close()


@contextmanager
def embedded_broker(data_dir: Path | None = None, **properties: str) -> Iterator[str]:
    """Start a broker on a free port (in a temp dir unless `data_dir`), yield "host:port", stop it.

    Keyword arguments are broker properties with `_` for `.`, e.g. `auto_create_topics_enable="false"`.
    Like Kafka's own test harness, groups start without the initial rebalance delay unless
    `group_initial_rebalance_delay_ms` is given.
    """
    with tempfile.TemporaryDirectory(prefix="oncelog-") as temporary:
        directory = data_dir or Path(temporary)
        props = {"group.initial.rebalance.delay.ms": "0"}
        props.update({key.replace("_", "."): value for key, value in properties.items()})
        config = broker_config(props, port=0, data_dir=directory)
        broker = EmbeddedBroker(config)
        bootstrap = broker.start()
        try:
            yield bootstrap
        finally:
            broker.stop()


class BrokerProcess:
    """`oncelog serve` in a subprocess, for crash tests. Restartable on the same data directory."""

    def __init__(self, data_dir: Path, overrides: dict[str, str] | None = None,
                 env: dict[str, str] | None = None, open_files_limit: int | None = None) -> None:
        self.data_dir = data_dir
        self.overrides = overrides or {}
        self.env = env or {}
        """Extra environment for the next start (e.g. ONCELOG_FAULT_INJECTION for crash tests)."""
        self.open_files_limit = open_files_limit
        """A file-descriptor limit (soft and hard) for the broker process, for limit tests."""
        self.process: subprocess.Popen[str] | None = None
        self.bootstrap = ""
        self.log_path = data_dir.parent / f"{data_dir.name}.broker.log"

    def start(self) -> str:
        command = [sys.executable, "-m", "oncelog", "serve", "--data-dir", str(self.data_dir)]
        if "listeners" not in self.overrides:
            command += ["--port", "0"]
        for key, value in self.overrides.items():
            command += ["--override", f"{key}={value}"]
        log = open(self.log_path, "a")  # noqa: SIM115 - the child keeps writing to it
        limit = self.open_files_limit

        def limit_open_files() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True,
                                        env={**os.environ, **self.env}, preexec_fn=limit_open_files)
        log.close()
        assert self.process.stdout is not None
        line = self._read_line_with_timeout()
        if not line.startswith("oncelog listening on "):
            raise RuntimeError(f"broker did not start: {line!r}; see {self.log_path}")
        self.bootstrap = line[len("oncelog listening on "):].split()[0]
        return self.bootstrap

    def _read_line_with_timeout(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.process.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(STARTUP_TIMEOUT_S)
        return result[0] if result else ""

    def kill(self) -> None:
        """SIGKILL: no flush, no checkpoint, no clean-shutdown marker."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(STARTUP_TIMEOUT_S)
        self.process = None

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(STARTUP_TIMEOUT_S)
        self.process = None
        return code

    def __enter__(self) -> BrokerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(STARTUP_TIMEOUT_S)
            self.process = None
