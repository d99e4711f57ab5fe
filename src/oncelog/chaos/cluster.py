"""The brokers `oncelog chaos` starts and hurts: `oncelog serve` processes on fixed ports.

One broker on local files by default; with a PostgreSQL URL, several brokers sharing it. Each keeps its
port across restarts, so the proxy's route to it stays right. SIGKILL and restart, SIGSTOP and SIGCONT.
A broker on PostgreSQL may not start again until its old registration has expired (its id is taken
while it looks alive), so a restart retries for a while.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from pathlib import Path

from oncelog.testing import BrokerProcess

RESTART_LIMIT_S = 30.0
BROKER_PROPERTIES = {
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
    "group.initial.rebalance.delay.ms": "0",
}
SHARED_PROPERTIES = {"broker.heartbeat.interval.ms": "200", "broker.session.timeout.ms": "1500"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ManagedBrokers:
    def __init__(self, work_dir: Path, count: int = 1, storage: str | None = None) -> None:
        assert count == 1 or storage is not None, "several brokers need shared storage (PostgreSQL)"
        self.brokers: list[BrokerProcess] = []
        self.paused: set[int] = set()
        for index in range(count):
            properties = {**BROKER_PROPERTIES, "listeners": f"PLAINTEXT://127.0.0.1:{_free_port()}"}
            if storage is not None:
                properties.update(SHARED_PROPERTIES, storage=storage, **{"broker.id": str(index + 1)})
            self.brokers.append(BrokerProcess(work_dir / f"broker-{index + 1}", properties))

    def start(self) -> str:
        """Start every broker; the bootstrap address of the first."""
        for broker in self.brokers:
            broker.start()
        return self.brokers[0].bootstrap

    def running(self, index: int) -> bool:
        process = self.brokers[index].process
        return process is not None and process.poll() is None

    def kill(self, index: int) -> None:
        self.resume(index)
        if self.running(index):
            self.brokers[index].kill()

    def restart(self, index: int) -> None:
        broker = self.brokers[index]
        deadline = time.monotonic() + RESTART_LIMIT_S
        while True:
            try:
                broker.start()
                return
            except RuntimeError:
                if broker.process is not None:
                    broker.process.kill()
                    broker.process.wait(10)
                    broker.process = None
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    def pause(self, index: int) -> None:
        if self.running(index) and index not in self.paused:
            self.brokers[index].process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
            self.paused.add(index)

    def resume(self, index: int) -> None:
        if index in self.paused:
            self.paused.discard(index)
            if self.running(index):
                self.brokers[index].process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]

    def heal(self) -> None:
        """Every broker running and not paused (the end of the faults)."""
        for index in range(len(self.brokers)):
            self.resume(index)
            if not self.running(index):
                self.restart(index)

    def stop(self) -> None:
        for index, broker in enumerate(self.brokers):
            self.resume(index)
            if self.running(index):
                with contextlib.suppress(Exception):
                    broker.terminate()
