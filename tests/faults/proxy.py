"""A lossy Kafka-aware TCP proxy for fault tests: lose Produce responses the way a network does.

Theory of operation: the proxy listens on 127.0.0.1 (a free port) and, for every client connection,
opens one connection to the current upstream broker and pumps Kafka frames (int32 size + body) both
ways on an asyncio loop in a background thread, so a synchronous test drives it:

    with LossyProxy(broker_bootstrap) as proxy:
        proxy.drop_produce_responses(every=10, limit=5)
        producer = Producer({"bootstrap.servers": proxy.bootstrap, ...})

Requests are always forwarded untouched. From each request header (api key, api version, correlation
id: the first 8 bytes of every request frame) the proxy remembers what each response answers:
- Metadata responses are decoded, their broker list is rewritten to the proxy's own host and port, and
  re-encoded: clients connect to the brokers Metadata advertises and would otherwise bypass the proxy.
  (FindCoordinator is not advertised by the broker, so Metadata is the only address a client learns.)
- A Produce response chosen to be lost (the broker has written the batch by then) is swallowed, and so
  is every later response on that connection until `burst` Produce responses are gone or `burst_s`
  passed; then both sockets are closed. The client sees a connection drop with up to `burst` requests
  in flight whose batches are all in the log — lost acks — reconnects, and retries them.
- Produce requests with acks=0 get no response; they are forwarded and never counted.

`upstream` may be changed at any time (a restarted broker listens on a new port); it applies to new
connections. None means no broker: new client connections are closed at once. When the broker dies its
side of every connection ends, and the proxy closes the client side too.

Not here: delays of single responses, partial frames, faults on requests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import struct
import threading
from typing import Any

from oncelog.protocol.codec import decode_request, decode_response, encode_response

PRODUCE_KEY = 0
METADATA_KEY = 3
FRAME_BYTES_MAX = 64 * 1024 * 1024
CONNECT_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 10.0
BURST_S_DEFAULT = 0.25

_SIZE = struct.Struct(">i")
_REQUEST_HEADER = struct.Struct(">hhi")  # api_key, api_version, correlation_id


class ProxyError(RuntimeError):
    """A peer sent something that is not a Kafka frame."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Loss:
    """How to lose the response just chosen."""

    burst: int
    burst_s: float
    cut_upstream: bool


async def _read_frame(reader: asyncio.StreamReader) -> bytes | None:
    """One frame without its size prefix, or None when the peer closed the connection."""
    try:
        prefix = await reader.readexactly(_SIZE.size)
        (size,) = _SIZE.unpack(prefix)
        if not 0 <= size <= FRAME_BYTES_MAX:
            raise ProxyError(f"frame size {size} outside 0..{FRAME_BYTES_MAX}")
        return await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


class LossyProxy:
    """See the module docstring. Settings and counters are safe to use from any thread."""

    def __init__(self, upstream: str | None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._upstream = upstream
        self._lock = threading.Lock()
        # What to lose (guarded by _lock).
        self._drop_next = 0
        self._drop_next_loss = _Loss(1, BURST_S_DEFAULT, False)
        self._drop_every = 1
        self._drop_every_left = 0
        self._drop_every_loss = _Loss(1, BURST_S_DEFAULT, False)
        self._produce_responses_seen = 0
        # Counters (guarded by _lock).
        self._produce_requests = 0
        self._dropped = 0
        self._cuts = 0
        self._metadata_rewritten = 0
        self._connections = 0
        # Event loop state (loop thread only).
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lossy-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    # --- configuration (any thread) ----------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        assert self.port, "the proxy is not started"
        return f"{self.host}:{self.port}"

    @property
    def upstream(self) -> str | None:
        """Where new connections go ("host:port"); None: nowhere."""
        with self._lock:
            return self._upstream

    @upstream.setter
    def upstream(self, bootstrap: str | None) -> None:
        with self._lock:
            self._upstream = bootstrap

    def drop_next_produce_responses(
        self, count: int, *, burst: int = 1, burst_s: float = BURST_S_DEFAULT, then_cut_upstream: bool = False
    ) -> None:
        """Lose the next `count` Produce responses (each with its burst, see the module docstring).

        With `then_cut_upstream`, the moment the last of them is lost `upstream` becomes None, so the
        client's retries cannot reach the broker until the test sets a new upstream (after killing and
        restarting the broker, say): the retries then meet a broker that knows the batches from disk only.
        """
        assert count >= 0 and burst >= 1 and burst_s > 0
        with self._lock:
            self._drop_next = count
            self._drop_next_loss = _Loss(burst, burst_s, then_cut_upstream)

    def drop_produce_responses(self, every: int, limit: int, *, burst: int = 1,
                               burst_s: float = BURST_S_DEFAULT) -> None:
        """Lose every `every`-th Produce response from now on (with its burst), `limit` times at most."""
        assert every >= 1 and limit >= 0 and burst >= 1 and burst_s > 0
        with self._lock:
            self._drop_every = every
            self._drop_every_left = limit
            self._drop_every_loss = _Loss(burst, burst_s, False)
            self._produce_responses_seen = 0

    def stop_dropping(self) -> None:
        with self._lock:
            self._drop_next = 0
            self._drop_every_left = 0

    @property
    def produce_requests(self) -> int:
        """Produce requests forwarded so far (acks=0 ones included)."""
        with self._lock:
            return self._produce_requests

    @property
    def dropped(self) -> int:
        """Produce responses lost so far (chosen ones and those lost in their bursts)."""
        with self._lock:
            return self._dropped

    @property
    def cuts(self) -> int:
        """Connections the proxy closed after losing responses (one per chosen response)."""
        with self._lock:
            return self._cuts

    @property
    def metadata_rewritten(self) -> int:
        with self._lock:
            return self._metadata_rewritten

    @property
    def connections(self) -> int:
        """Client connections accepted so far."""
        with self._lock:
            return self._connections

    def _choose_loss(self) -> _Loss | None:
        """Called for each Produce response on its way to a client: lose it?"""
        with self._lock:
            self._produce_responses_seen += 1
            if self._drop_next > 0:
                self._drop_next -= 1
                loss = self._drop_next_loss
                if self._drop_next > 0:
                    loss = dataclasses.replace(loss, cut_upstream=False)
                return loss
            if self._drop_every_left > 0 and self._produce_responses_seen % self._drop_every == 0:
                self._drop_every_left -= 1
                return self._drop_every_loss
            return None

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> LossyProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(STOP_TIMEOUT_S)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(STOP_TIMEOUT_S)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(STOP_TIMEOUT_S)
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()

    def disconnect_all(self) -> None:
        """Close every proxied connection now (clients reconnect, to the current upstream)."""
        asyncio.run_coroutine_threadsafe(self._close_connections(), self._loop).result(STOP_TIMEOUT_S)

    def __enter__(self) -> LossyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._close_connections()  # each handler then sees the end of its streams and returns
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=STOP_TIMEOUT_S / 2)
        if self._server is not None:
            await self._server.wait_closed()

    async def _close_connections(self) -> None:
        for writer in list(self._writers):
            writer.close()

    # --- pumping (event loop thread) ----------------------------------------------------------------

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(client_writer)
        with self._lock:
            self._connections += 1
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            upstream = self.upstream
            if upstream is None:
                return  # no broker: the client sees its connection closed and retries
            host, _, port = upstream.rpartition(":")
            try:
                upstream_reader, connected = await asyncio.wait_for(
                    asyncio.open_connection(host, int(port)), CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError):
                return  # no broker there (any more)
            upstream_writer = connected
            self._writers.add(connected)
            pending: dict[int, tuple[int, int]] = {}
            pumps = {
                asyncio.create_task(self._pump_requests(client_reader, connected, pending)),
                asyncio.create_task(self._pump_responses(upstream_reader, client_writer, pending)),
            }
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            for writer in (client_writer, upstream_writer):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.close()
            self._handlers.discard(task)

    async def _pump_requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pending: dict[int, tuple[int, int]]
    ) -> None:
        while (frame := await _read_frame(reader)) is not None:
            if len(frame) < _REQUEST_HEADER.size:
                raise ProxyError(f"request frame of {len(frame)} bytes has no header")
            api_key, api_version, correlation_id = _REQUEST_HEADER.unpack_from(frame)
            expects_response = True
            if api_key == PRODUCE_KEY:
                with self._lock:
                    self._produce_requests += 1
                expects_response = int(decode_request(frame, api_key, api_version)[1].acks) != 0
            if expects_response:
                pending[correlation_id] = (api_key, api_version)
            writer.write(_SIZE.pack(len(frame)) + frame)
            await writer.drain()

    async def _pump_responses(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pending: dict[int, tuple[int, int]]
    ) -> None:
        while (frame := await _read_frame(reader)) is not None:
            (correlation_id,) = struct.unpack_from(">i", frame)
            api_key, api_version = pending.pop(correlation_id, (-1, -1))
            if api_key == PRODUCE_KEY and (loss := self._choose_loss()) is not None:
                await self._lose(reader, pending, loss)
                return  # both connections close: the client must retry
            if api_key == METADATA_KEY:
                data = self._rewrite_metadata(frame, api_version)
            else:
                data = _SIZE.pack(len(frame)) + frame
            writer.write(data)
            await writer.drain()

    async def _lose(self, reader: asyncio.StreamReader, pending: dict[int, tuple[int, int]], loss: _Loss) -> None:
        """Swallow the chosen Produce response and what follows it within its burst."""
        with self._lock:
            self._dropped += 1
            self._cuts += 1
            if loss.cut_upstream:
                self._upstream = None
        lost = 1
        deadline = asyncio.get_running_loop().time() + loss.burst_s
        while lost < loss.burst:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            try:
                frame = await asyncio.wait_for(_read_frame(reader), remaining)
            except TimeoutError:
                return
            if frame is None:
                return
            (correlation_id,) = struct.unpack_from(">i", frame)
            if pending.pop(correlation_id, (-1, -1))[0] == PRODUCE_KEY:
                lost += 1
                with self._lock:
                    self._dropped += 1

    def _rewrite_metadata(self, frame: bytes, api_version: int) -> bytes:
        correlation_id, response = decode_response(frame, METADATA_KEY, api_version)
        brokers: Any = tuple(
            dataclasses.replace(broker, host=self.host, port=self.port) for broker in response.brokers
        )
        with self._lock:
            self._metadata_rewritten += 1
        rewritten = dataclasses.replace(response, brokers=brokers)
        return bytes(encode_response(METADATA_KEY, api_version, correlation_id, rewritten))
