"""A fault-injecting Kafka proxy for `oncelog chaos`: one local port per broker, faults on command.

Theory of operation: the proxy runs an asyncio loop in a background thread. It listens on one port for
the bootstrap address and, as Metadata, FindCoordinator and DescribeCluster responses name brokers, on
one more port per broker; those responses are decoded and re-encoded with the proxy's own address for
each broker, so clients talk to every broker through the proxy and never around it. Frames are pumped
whole (int32 size + body) in both directions; requests are never changed.

Faults, from any thread:
- `sever()` closes every connection at once (clients see a connection reset with requests in flight);
- `delay(ms, seconds)` holds every frame `ms` before forwarding it, for a while (in order);
- `blackhole(seconds)` forwards nothing for a while, then severs: a network partition as the client
  sees it (requests time out), then a reset.

Responses the proxy cannot decode (a version this build does not know) are forwarded unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import struct
import threading
import time
from typing import Any

from oncelog.protocol.codec import decode_response, encode_response

FRAME_BYTES_MAX = 128 * 1024 * 1024
_SIZE = struct.Struct(">i")
_HEADER = struct.Struct(">hhi")
METADATA, FIND_COORDINATOR, DESCRIBE_CLUSTER = 3, 10, 60
REWRITTEN = (METADATA, FIND_COORDINATOR, DESCRIBE_CLUSTER)
BOOTSTRAP = -1


class ChaosProxy:
    def __init__(self, bootstrap: str, host: str = "127.0.0.1") -> None:
        upstream_host, _, upstream_port = bootstrap.rpartition(":")
        self.host = host
        self._upstreams: dict[int, tuple[str, int]] = {BOOTSTRAP: (upstream_host, int(upstream_port))}
        self._ports: dict[int, int] = {}
        self._servers: dict[int, asyncio.Server] = {}
        self._writers: set[asyncio.StreamWriter] = set()
        self._lock = threading.Lock()
        self._delay_s = 0.0
        self._delay_until = 0.0
        self._hold_until = 0.0
        self.counts = {"connections": 0, "severed": 0, "delays": 0, "blackholes": 0, "not rewritten": 0}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-proxy", daemon=True)

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> str:
        """Start listening; returns the bootstrap address clients should use."""
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._listen(BOOTSTRAP), self._loop).result(10)
        return f"{self.host}:{port}"

    def stop(self) -> None:
        async def close() -> None:
            for server in self._servers.values():
                server.close()
            for writer in list(self._writers):
                writer.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # --- faults (any thread) ---------------------------------------------------------------------------

    def sever(self) -> None:
        self.counts["severed"] += 1
        self._loop.call_soon_threadsafe(self._close_all)

    def delay(self, ms: int, seconds: float) -> None:
        with self._lock:
            self.counts["delays"] += 1
            self._delay_s = ms / 1000
            self._delay_until = time.monotonic() + seconds

    def blackhole(self, seconds: float) -> None:
        with self._lock:
            self.counts["blackholes"] += 1
            self._hold_until = time.monotonic() + seconds
        self._loop.call_soon_threadsafe(lambda: self._loop.call_later(seconds, self._close_all))

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _hold(self) -> None:
        """Wait as the current fault says before forwarding a frame."""
        while True:
            with self._lock:
                now = time.monotonic()
                hold = self._hold_until - now
                delay = self._delay_s if now < self._delay_until else 0.0
            if hold > 0:
                await asyncio.sleep(hold)
                continue
            if delay:
                await asyncio.sleep(delay)
            return

    # --- listening and pumping (loop thread) ---------------------------------------------------------

    async def _listen(self, node_id: int) -> int:
        if node_id in self._ports:
            return self._ports[node_id]
        server = await asyncio.start_server(lambda r, w: self._serve(node_id, r, w), self.host, 0)
        port = int(server.sockets[0].getsockname()[1])
        self._servers[node_id], self._ports[node_id] = server, port
        return port

    async def _serve(self, node_id: int, client_reader: asyncio.StreamReader,
                     client_writer: asyncio.StreamWriter) -> None:
        self.counts["connections"] += 1
        host, port = self._upstreams[node_id]
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        except (OSError, TimeoutError):
            client_writer.transport.abort()
            return
        self._writers |= {client_writer, upstream_writer}
        pending: dict[int, tuple[int, int]] = {}
        to_broker = asyncio.ensure_future(self._pump_requests(client_reader, upstream_writer, pending))
        to_client = asyncio.ensure_future(self._pump_responses(upstream_reader, client_writer, pending))
        await asyncio.wait([to_broker, to_client], return_when=asyncio.FIRST_COMPLETED)
        for task in (to_broker, to_client):
            task.cancel()
        for writer in (client_writer, upstream_writer):
            self._writers.discard(writer)
            writer.transport.abort()

    async def _pump_requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                             pending: dict[int, tuple[int, int]]) -> None:
        while (frame := await _read_frame(reader)) is not None:
            if len(frame) >= _HEADER.size:
                api_key, api_version, correlation_id = _HEADER.unpack_from(frame)
                if api_key in REWRITTEN:
                    pending[correlation_id] = (api_key, api_version)
            await self._hold()
            writer.write(_SIZE.pack(len(frame)) + frame)
            await writer.drain()

    async def _pump_responses(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                              pending: dict[int, tuple[int, int]]) -> None:
        while (frame := await _read_frame(reader)) is not None:
            if len(frame) >= 4 and pending:
                asked = pending.pop(int.from_bytes(frame[:4], "big", signed=True), None)
                if asked is not None:
                    frame = await self._rewrite(frame, *asked)
            await self._hold()
            writer.write(_SIZE.pack(len(frame)) + frame)
            await writer.drain()

    async def _rewrite(self, frame: bytes, api_key: int, api_version: int) -> bytes:
        try:
            correlation_id, response = decode_response(frame, api_key, api_version)
        except Exception:  # a version or shape this build cannot decode: pass it on, counted (clients may
            self.counts["not rewritten"] += 1  # then learn a broker's real address and go around the proxy)
            return frame
        if api_key == FIND_COORDINATOR:
            if hasattr(response, "coordinators"):
                response = dataclasses.replace(response, coordinators=tuple([
                    await self._broker_entry(c, "node_id") for c in response.coordinators]))
            elif int(response.node_id) >= 0:
                response = await self._broker_entry(response, "node_id")
        else:
            response = dataclasses.replace(response, brokers=tuple([
                await self._broker_entry(b, "node_id" if hasattr(b, "node_id") else "broker_id")
                for b in response.brokers]))
        return encode_response(api_key, api_version, correlation_id, response)[_SIZE.size:]

    async def _broker_entry(self, entry: Any, id_field: str) -> Any:
        node_id = int(getattr(entry, id_field))
        self._upstreams[node_id] = (str(entry.host), int(entry.port))
        port = await self._listen(node_id)
        return dataclasses.replace(entry, host=self.host, port=type(entry.port)(port))


async def _read_frame(reader: asyncio.StreamReader) -> bytes | None:
    try:
        (size,) = _SIZE.unpack(await reader.readexactly(_SIZE.size))
        if not 0 <= size <= FRAME_BYTES_MAX:
            return None
        return await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
