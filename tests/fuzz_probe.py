"""Sending fuzzed frames to a live broker and telling answered from closed from silent."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from oncelog.client import parse_bootstrap
from oncelog.protocol.codec import build_request, encode_request

PROBE_TIMEOUT_S = 10.0
SENTINEL_CORRELATION_ID = 2**31 - 1

FUZZ_BROKER_OVERRIDES = {
    "max.broker.partitions": "300",  # random CreateTopics would otherwise make thousands of directories
    "group.initial.rebalance.delay.ms": "0",
    # A JoinGroup may rightly wait for the group's other members until their sessions expire (Kafka's
    # DelayedJoin); fuzzed members never heartbeat, so short sessions bound that wait below PROBE_TIMEOUT_S.
    "group.min.session.timeout.ms": "1",
    "group.max.session.timeout.ms": "3000",
    "offsets.topic.num.partitions": "3",
    "transaction.state.log.num.partitions": "3",
}

_SENTINEL = encode_request(18, 3, SENTINEL_CORRELATION_ID, "probe", build_request(
    18, 3, {"client_software_name": "probe", "client_software_version": "1"}))


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def broker_problems(log: Path) -> list[str]:
    """Lines of the broker log that mean a bug: a handler that failed, a traceback, a fatal loop error."""
    markers = (" failed (", "Traceback", "Fatal error", "cannot build an error response")
    return [line for line in log.read_text(errors="replace").splitlines() if any(m in line for m in markers)]


class Prober:
    def __init__(self, bootstrap: str) -> None:
        self._address = parse_bootstrap(bootstrap)
        self._socket: socket.socket | None = None
        self._buffer = bytearray()
        self._rss_start: int | None = None

    def rss_at_start(self, pid: int) -> int:
        if self._rss_start is None:
            self._rss_start = rss_bytes(pid)
        return self._rss_start

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def probe(self, frame: bytes | None) -> str:
        """Send `frame` (None: nothing) and an ApiVersions sentinel. "answered": a response to the frame came
        before the sentinel's; "no response": only the sentinel's (acks=0); "closed": the broker closed the
        connection; "silent": neither within PROBE_TIMEOUT_S."""
        if self._socket is None:
            self._socket = socket.create_connection(self._address, timeout=PROBE_TIMEOUT_S)
            self._buffer.clear()
        payload = (struct.pack(">i", len(frame)) + frame if frame is not None else b"") + _SENTINEL
        answered = frame is None
        try:
            self._socket.sendall(payload)
            while True:
                response = self._next_frame()
                if response is None:
                    self.close()
                    return "closed"
                correlation_id = struct.unpack_from(">i", response)[0]
                if correlation_id == SENTINEL_CORRELATION_ID:
                    return "answered" if answered else "no response"
                answered = True
        except TimeoutError:
            self.close()
            return "silent"
        except (ConnectionError, BrokenPipeError):
            self.close()
            return "closed"

    def _next_frame(self) -> bytes | None:
        assert self._socket is not None
        while True:
            if len(self._buffer) >= 4:
                (size,) = struct.unpack_from(">i", self._buffer)
                if len(self._buffer) >= 4 + size:
                    frame = bytes(self._buffer[4 : 4 + size])
                    del self._buffer[: 4 + size]
                    return frame
            chunk = self._socket.recv(1 << 20)
            if not chunk:
                return None
            self._buffer += chunk
