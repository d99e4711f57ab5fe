"""One client connection: read frames, dispatch in order, answer in order.

Theory of operation: the reader decodes frames and calls the (synchronous) handler for each request
immediately and in arrival order, so a pipelined client's produce requests are appended in the order it
sent them (sequence numbers rely on this). What the handler returns goes into a bounded queue: either
finished response bytes, or a task that waits (fsync for acks=all, new data for a long-poll fetch) and
then yields the bytes. The writer takes queue entries in order and writes each response when it is
ready, so responses leave in request order even when a later one was ready first. The queue bound
(`connection_requests_in_flight_max`) applies back-pressure: a client that pipelines more stops being
read until earlier responses went out.

A frame we cannot parse, an unknown API key or version (other than ApiVersions, which gets Kafka's
UNSUPPORTED_VERSION answer) closes this connection and nothing else; it is logged at INFO with the peer.
An exception inside a handler is a bug: it is logged with its traceback and the connection is closed
(the client reconnects and retries); the broker and every other connection keep going. When the peer
goes away, requests still waiting (parked fetches) are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from oncelog.broker import Broker
from oncelog.coordinator.runtime import Completion
from oncelog.errors import ProtocolError
from oncelog.handlers import HANDLERS, INTERNAL_HANDLERS
from oncelog.handlers.api_versions import API_KEY as API_VERSIONS_KEY
from oncelog.handlers.api_versions import unsupported_version_response
from oncelog.handlers.base import (
    CLOSE_CONNECTION,
    NO_RESPONSE,
    AwaitCompletion,
    AwaitData,
    AwaitDurable,
    RequestContext,
)
from oncelog.protocol.codec import decode_request, encode_response
from oncelog.protocol.framing import FrameDecoder, peek_header

from .flusher import Flusher, StorageError
from .waiters import DataWaiters

logger = logging.getLogger(__name__)

READ_CHUNK_BYTES = 256 * 1024

_Entry = bytes | None | asyncio.Task[bytes | None]


async def _wait_completion(completion: Completion[Any]) -> Any:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def settle(value: Any) -> None:
        if not future.done():  # the connection may have gone away while the coordinator worked
            future.set_result(value)

    completion.on_done(settle)
    return await future


class _Close(Exception):
    """Stop serving this connection after the responses already queued."""


class Connection:
    def __init__(
        self,
        broker: Broker,
        flusher: Flusher,
        waiters: DataWaiters,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._broker = broker
        self._flusher = flusher
        self._waiters = waiters
        self._reader = reader
        self._writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self._queue: asyncio.Queue[_Entry | _Close] = asyncio.Queue(
            broker.config.connection_requests_in_flight_max
        )
        self._pending: set[asyncio.Task[bytes | None]] = set()
        self._stopping = False

    def stop_reading(self) -> None:
        """Broker shutdown: read no more requests, answer the ones already taken, then close."""
        self._stopping = True
        self._reader.feed_eof()

    async def serve(self) -> None:
        writer_task = asyncio.create_task(self._write_loop())
        decoder = FrameDecoder(self._broker.config.socket_request_max_bytes)
        try:
            while not writer_task.done():
                data = await self._reader.read(READ_CHUNK_BYTES)
                if not data:
                    break
                for frame in decoder.feed(data):
                    await self._queue.put(self._dispatch(frame))
        except ProtocolError as error:
            logger.info("peer=%s closing connection: %s", self.peer, error)
        except _Close:
            pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if not self._stopping:  # the peer left: nobody reads what parked requests would answer
                for task in self._pending:
                    task.cancel()
            await self._queue.put(_Close())
            with contextlib.suppress(Exception):  # a failed write just ends the connection
                await writer_task
            self._writer.close()

    def _dispatch(self, frame: bytes) -> _Entry:
        """Handle one request synchronously; raises ProtocolError or _Close to drop the connection."""
        api_key, api_version, correlation_id = peek_header(frame)
        api = HANDLERS.get(api_key) or INTERNAL_HANDLERS.get(api_key)
        if api is None:
            raise ProtocolError(f"unknown API key {api_key}")
        if not api.version_min <= api_version <= api.version_max:
            if api_key == API_VERSIONS_KEY and api_version > api.version_max:
                return unsupported_version_response(correlation_id)
            raise ProtocolError(f"unsupported {api.name} version {api_version}")
        header, request = decode_request(frame, api_key, api_version)
        context = RequestContext(self._broker, api_key, api_version, correlation_id, header.client_id, self.peer)
        try:
            return self._settle(context, api.handle(context, request))
        except _Close:
            raise
        except Exception:
            logger.exception("peer=%s %s v%d failed", self.peer, api.name, api_version)
            raise _Close() from None

    def _settle(self, context: RequestContext, outcome: Any) -> _Entry:
        if outcome is NO_RESPONSE:
            return None
        if outcome is CLOSE_CONNECTION:
            raise _Close()
        if isinstance(outcome, AwaitDurable | AwaitData | AwaitCompletion):
            task = asyncio.create_task(self._wait(context, outcome))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            return task
        return encode_response(context.api_key, context.api_version, context.correlation_id, outcome)

    async def _wait(self, context: RequestContext, outcome: Any) -> bytes | None:
        deadline: float | None = None
        while True:
            if isinstance(outcome, AwaitDurable):
                try:
                    for log, offset in outcome.targets:
                        await self._flusher.durable(log, offset)
                    outcome = outcome.respond()
                except StorageError:
                    outcome = outcome.on_failure()
            elif isinstance(outcome, AwaitCompletion):
                outcome = outcome.respond(await _wait_completion(outcome.completion))
            elif isinstance(outcome, AwaitData):
                if deadline is None:
                    deadline = time.monotonic() + outcome.wait_ms / 1000
                remaining = deadline - time.monotonic()
                if remaining > 0 and not self._stopping:
                    await self._waiters.wait_any(outcome.logs, remaining)
                outcome = outcome.retry(self._stopping or time.monotonic() >= deadline)
            else:
                entry = self._settle(context, outcome)
                assert not isinstance(entry, asyncio.Task)
                return entry

    async def _write_loop(self) -> None:
        while True:
            entry = await self._queue.get()
            if isinstance(entry, _Close):
                return
            if isinstance(entry, asyncio.Task):
                try:
                    entry = await entry
                except asyncio.CancelledError:
                    if not entry.cancelled():  # type: ignore[union-attr]  # we were cancelled ourselves, not the waiting request
                        raise
                    continue
            if entry is None:
                continue
            self._writer.write(entry)
            if self._writer.transport.get_write_buffer_size() > 1024 * 1024:
                await self._writer.drain()
