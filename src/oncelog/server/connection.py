"""One client connection: read frames, dispatch in order, answer in order, with bounded memory.

Theory of operation: `Connection` is an asyncio `Protocol`, so the event loop hands it bytes and it
decides when to read more. Frames are taken from the decoder one at a time and handed to the
(synchronous) handler immediately and in arrival order, so a pipelined client's produce requests are
appended in the order it sent them (sequence numbers rely on this). Each request gets an entry in an
in-order queue: finished response bytes, nothing (acks=0), or a task that waits (fsync for acks=all, new
data for a long-poll fetch, a coordinator) and then produces the bytes. Entries leave the queue from
the head only, so responses go out in request order even when a later one was ready first.

What one connection may hold is bounded, and reading stops (`pause_reading`, no EOF) while it is over:
- at most `connection_requests_in_flight_max` requests taken but not yet answered;
- at most `CONNECTION_UNSENT_BYTES_MAX` of responses not yet taken by the socket (queued here plus the
  transport's buffer), so a client that pipelines fetches and never reads pins a bounded amount;
- while a Fetch is in flight, no further request is taken (Kafka mutes a channel until its response is
  sent; consumers have one fetch per connection outstanding anyway), so parked fetches cannot pile up
  responses of `fetch.max.bytes` each;
- bytes received but not yet taken as frames stay in the decoder: one read chunk plus at most one
  partial frame of `socket.request.max.bytes`.
A connection with no request in flight and no bytes received for `connections.max.idle.ms` is closed,
as Kafka's selector does. On close everything it held is dropped and its waiting tasks are cancelled.

Failures stay with their request or their connection: a frame we cannot parse, an unknown API key or
version (other than ApiVersions, which gets Kafka's UNSUPPORTED_VERSION answer) closes this connection
and nothing else, with one INFO line per peer per minute. A handler or continuation that raises is a
bug: the request is answered with UNKNOWN_SERVER_ERROR (Kafka's `getErrorResponse`) and one rate-limited
ERROR line with the traceback, and the connection keeps serving.

On a TLS listener the connection first upgrades itself (`loop.start_tls`, reading paused until then);
a failed handshake is one INFO line naming the peer and the likely cause, and the connection closes. A
verified client certificate names the connection's principal (`ssl.principal.mapping.rules`). On a
plaintext listener, a TLS ClientHello as the first bytes gets the same one-line explanation.

Shutdown (`stop_reading`) stops taking requests without feeding EOF to anything, lets the requests
already taken finish and be written, and then closes the transport.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from oncelog.awaiting import completed
from oncelog.broker import Broker
from oncelog.errors import ErrorCode, ProtocolError
from oncelog.handlers import GROUP_IDS, HANDLERS
from oncelog.handlers.api_versions import API_KEY as API_VERSIONS_KEY
from oncelog.handlers.api_versions import unsupported_version_response
from oncelog.handlers.authorization import REQUEST_CHECKS
from oncelog.handlers.base import (
    CLOSE_CONNECTION,
    NO_RESPONSE,
    ApiHandler,
    AwaitCompletion,
    AwaitData,
    RequestContext,
)
from oncelog.handlers.fetch import API_KEY as FETCH_KEY
from oncelog.logs import RateLimited, safe
from oncelog.protocol.codec import decode_request, encode_response
from oncelog.protocol.framing import FrameDecoder, peek_header
from oncelog.security.principal import ANONYMOUS_PRINCIPAL, KafkaPrincipal, NoMatchingRule
from oncelog.security.sasl import AUTHENTICATE_KEY as SASL_AUTHENTICATE_KEY
from oncelog.security.sasl import HANDSHAKE_KEY as SASL_HANDSHAKE_KEY
from oncelog.security.sasl import ListenerSasl, SaslSession
from oncelog.security.sasl import State as SaslState
from oncelog.security.tls import ListenerTls, peer_principal

from .waiters import DataWaiters

logger = logging.getLogger(__name__)

CONNECTION_UNSENT_BYTES_MAX = 4 * 1024 * 1024
"""Responses a connection may have waiting for its socket before it stops taking requests."""
TLS_HANDSHAKE_TIMEOUT_S = 10.0
TLS_RECORD_START = (b"\x16\x03", b"\x80")
"""How a TLS ClientHello begins (a handshake record, or the SSLv2-compatible form)."""

_protocol_errors = RateLimited(60.0)
_auth_errors = RateLimited(60.0)
_handler_errors = RateLimited(60.0)


class _Close(Exception):
    """Stop serving this connection after the responses already queued."""


async def _after(delay_s: float, response: bytes | None) -> bytes | None:
    await asyncio.sleep(delay_s)
    return response


class _Entry:
    """One request taken: its response bytes once known (None: no response), or the task making them."""

    __slots__ = ("mutes", "response", "task")

    def __init__(self, response: bytes | None, task: asyncio.Task[bytes | None] | None, mutes: bool) -> None:
        self.response = response
        self.task = task
        self.mutes = mutes
        """A Fetch: nothing more is taken from the connection until it is answered."""


class Connection(asyncio.Protocol):
    def __init__(self, broker: Broker, waiters: DataWaiters,
                 on_closed: Callable[[Connection], None], listener: str = "PLAINTEXT",
                 tls: ListenerTls | None = None, sasl: ListenerSasl | None = None) -> None:
        self._broker = broker
        self._listener = listener
        self._tls = tls
        self.principal: KafkaPrincipal = ANONYMOUS_PRINCIPAL
        self._first_bytes = True
        self._awaiting_tls = tls is not None
        """Until `start_tls` returns: decrypted bytes that arrive before it are kept, not served (their
        answers must go through the TLS transport, which we do not have yet)."""
        self._handshake: asyncio.Future[None] | None = None
        self._waiters = waiters
        self._on_closed = on_closed
        config = broker.config
        self._decoder = FrameDecoder(config.socket_request_max_bytes)
        self._session: SaslSession | None = None
        if sasl is not None:  # Kafka's sasl.server.max.receive.size: small frames until authenticated
            security = broker.security
            self._session = SaslSession(sasl, security.credential if security is not None else lambda _u, _m: None,
                                        broker.clock)
            self._decoder.limit(min(config.socket_request_max_bytes, sasl.max_receive_size))
        self._in_flight_max = config.connection_requests_in_flight_max
        self._transport: asyncio.Transport | None = None
        self._queue: deque[_Entry] = deque()
        self._queued_bytes = 0
        self._muted_by_fetch = 0
        self._reading = True
        self._write_paused = False
        self._stopping = False
        self._closing = False
        self._close_requested = False
        self.peer = "?"
        self._peer_host = "?"
        self.last_active = time.monotonic()
        self.closed = asyncio.get_running_loop().create_future()

    # --- transport callbacks -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self._peer_host = str(peer[0]) if isinstance(peer, tuple) else self.peer
        """Log lines about failures are limited per client host and listener: clients retry from new ports."""
        if self._tls is not None:
            transport.pause_reading()  # until the handshake: no plaintext may reach the decoder
            self._first_bytes = False
            self._handshake = asyncio.ensure_future(self._start_tls(transport, self._tls))

    async def _start_tls(self, raw: asyncio.Transport, tls: ListenerTls) -> None:
        try:
            transport = await asyncio.get_running_loop().start_tls(
                raw, self, tls.context, server_side=True, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S)
        except (OSError, TimeoutError, ConnectionError) as error:
            # Clients retry a failed handshake every few hundred ms: one line per host and listener a minute.
            if _protocol_errors.allow((self._peer_host, self._listener)) is not None:
                hint = (" (it did not speak TLS: configure the client with security.protocol=SSL or SASL_SSL)"
                        if isinstance(error, ssl.SSLError) and "WRONG_VERSION_NUMBER" in str(error)
                        else " (no handshake in time)" if isinstance(error, TimeoutError) else "")
                logger.info("peer=%s TLS handshake on listener %s failed: %s%s", self.peer, self._listener,
                            safe(error), hint)
            raw.abort()
            self.connection_lost(error)  # asyncio's TLS layer does not tell us during a handshake
            return
        if transport is None or self._closing:
            raw.abort()
            self.connection_lost(None)
            return
        self._transport = transport
        try:
            self.principal = peer_principal(tls, transport.get_extra_info("ssl_object"))
        except Exception as error:  # NoMatchingRule, or a certificate the rules cannot read
            reason = error if isinstance(error, NoMatchingRule) else f"cannot name its principal: {error!r}"
            logger.info("peer=%s on listener %s refused: %s", self.peer, self._listener, safe(reason))
            transport.abort()
            self.connection_lost(None)
            return
        self._awaiting_tls = False
        self._serve(b"")

    def data_received(self, data: bytes) -> None:
        if self._closing or self._stopping:
            return
        self.last_active = time.monotonic()
        if self._first_bytes:
            self._first_bytes = False
            if data.startswith(TLS_RECORD_START):
                if _protocol_errors.allow((self._peer_host, self._listener)) is not None:
                    logger.info("peer=%s sent a TLS handshake to plaintext listener %s: configure the client with "
                                "security.protocol=PLAINTEXT, or connect it to a TLS listener", self.peer,
                                self._listener)
                self._close_after_queued()
                return
        self._serve(data)

    def _serve(self, data: bytes) -> None:
        try:
            self._decoder.append(data)
            if not self._awaiting_tls:
                self._take_requests()
        except ProtocolError as error:
            if _protocol_errors.allow(self.peer) is not None:
                logger.info("peer=%s closing connection: %s", self.peer, safe(error))
            self._close_after_queued()
        except _Close:
            self._close_after_queued()

    def eof_received(self) -> bool:
        # A peer that half-closes gets no more answers in Kafka either: close the connection.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed.done():
            return
        self._closing = True
        for entry in self._queue:
            if entry.task is not None:
                entry.task.cancel()
        self._queue.clear()
        self._queued_bytes = 0
        self._decoder = FrameDecoder(0)
        if not self.closed.done():
            self.closed.set_result(None)
        self._on_closed(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._write_ready()
        self._update_reading()

    # --- taking requests -------------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        return not self._queue and self._decoder.buffered_bytes == 0

    def _may_take(self) -> bool:
        return (not self._stopping and not self._closing and not self._close_requested and not self._muted_by_fetch
                and len(self._queue) < self._in_flight_max and self._unsent_bytes() < CONNECTION_UNSENT_BYTES_MAX)

    def _unsent_bytes(self) -> int:
        buffered = self._transport.get_write_buffer_size() if self._transport is not None else 0
        return self._queued_bytes + buffered

    def _take_requests(self) -> None:
        while self._may_take():
            frame = self._decoder.next_frame()
            if frame is None:
                break
            entry = self._dispatch(frame)
            self._queue.append(entry)
            if entry.mutes:
                self._muted_by_fetch += 1
            if entry.response is not None:
                self._queued_bytes += len(entry.response)
            self._write_ready()
            if self._session is not None and self._session.state is SaslState.FAILED:
                self._close_after_queued()  # after the (delayed) answer, as Kafka closes a failed authentication
                return
        self._update_reading()

    def _update_reading(self) -> None:
        if self._transport is None or self._closing:
            return
        want = self._may_take()
        if want and not self._reading:
            self._reading = True
            self._transport.resume_reading()
            self._take_requests()  # frames may already be buffered
        elif not want and self._reading:
            self._reading = False
            self._transport.pause_reading()

    def _dispatch(self, frame: bytes) -> _Entry:
        """Handle one request synchronously, counted and timed (metrics); raises ProtocolError or _Close to
        drop the connection."""
        if self._session is not None and self._session.raw_tokens:
            return self._raw_token(self._session, frame)
        api_key, api_version, correlation_id = peek_header(frame)
        api = HANDLERS.get(api_key)
        if api is None:
            raise ProtocolError(f"unknown API key {api_key}")
        supported = api.version_min <= api_version <= api.version_max
        # An unsupported version is counted as -1: a peer must not mint one label per version it makes up.
        answered = self._broker.metrics.observe_request(api.name, api_version if supported else -1,
                                                        time.perf_counter())
        if not supported:
            if api_key == API_VERSIONS_KEY and api_version > api.version_max:
                answered()
                return _Entry(unsupported_version_response(correlation_id), None, False)
            raise ProtocolError(f"unsupported {api.name} version {api_version}")
        entry = self._handle(api, frame, api_key, api_version, correlation_id)
        if entry.task is None:
            answered()
        else:
            entry.task.add_done_callback(lambda _task: answered())
        return entry

    def _handle(self, api: ApiHandler, frame: bytes, api_key: int, api_version: int, correlation_id: int) -> _Entry:
        session = self._session
        if session is not None:
            self._check_session(session, api, api_key)
        header, request = decode_request(frame, api_key, api_version)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("peer=%s %s v%d correlation_id=%d client_id=%s", self.peer, api.name, api_version,
                         correlation_id, safe(header.client_id or ""))
        context = RequestContext(self._broker, api_key, api_version, correlation_id, header.client_id, self.peer,
                                 self._listener, session, self.principal)
        mutes = api_key == FETCH_KEY
        try:
            check = REQUEST_CHECKS.get(api_key) if self._broker.authorizer.config.enabled else None
            refused = check(context, request) if check is not None else None
            if refused is not None:  # the ACLs refuse the request as a whole (handlers/authorization.py)
                return _Entry(self._settle(context, api.error_response(api_version, request, refused)), None, False)
            group_ids = GROUP_IDS.get(api_key)
            problem = self._broker.group_gate(group_ids(request)) if group_ids is not None else None
            if problem is not None:  # another broker coordinates these groups, or they are still loading
                return _Entry(self._settle(context, api.error_response(api_version, request, problem)), None, False)
            outcome = api.handle(context, request)
            if session is not None and api_key in (SASL_HANDSHAKE_KEY, SASL_AUTHENTICATE_KEY):
                return self._after_sasl(session, context, outcome)
            if isinstance(outcome, AwaitData | AwaitCompletion):
                task = asyncio.ensure_future(self._wait(api, context, request, outcome))
                task.add_done_callback(lambda _task: self._write_ready())
                return _Entry(None, task, mutes)
            return _Entry(self._settle(context, outcome), None, False)
        except _Close:
            raise
        except Exception:
            return _Entry(self._failed(api, context, request), None, False)

    def _check_session(self, session: SaslSession, api: ApiHandler, api_key: int) -> None:
        """Before authentication only the SASL APIs (and ApiVersions) are served; an expired session
        only re-authenticates (KIP-368). Anything else closes the connection, as Kafka does."""
        if not session.allows(api_key):
            why = (f"{api.name} before authenticating" if session.principal is None
                   else f"{api.name} during re-authentication")
        elif session.expired() and api_key not in (SASL_HANDSHAKE_KEY, SASL_AUTHENTICATE_KEY):
            why = f"{api.name} after its session expired (connections.max.reauth.ms) without re-authenticating"
        else:
            return
        if _auth_errors.allow((self._peer_host, self._listener)) is not None:
            logger.info("peer=%s on listener %s sent %s; closing", self.peer, self._listener, why)
        raise _Close()

    def _raw_token(self, session: SaslSession, token: bytes) -> _Entry:
        """After SaslHandshake v0 the tokens travel as bare frames, with no Kafka header either way."""
        answer = session.authenticate(token, 0)
        response = None if session.state is SaslState.FAILED else len(answer.auth_bytes).to_bytes(4, "big") + \
            answer.auth_bytes
        return self._sasl_outcome(session, response)

    def _after_sasl(self, session: SaslSession, context: RequestContext, outcome: Any) -> _Entry:
        return self._sasl_outcome(session, self._settle(context, outcome))

    def _sasl_outcome(self, session: SaslSession, response: bytes | None) -> _Entry:
        if session.state is SaslState.FAILED:
            if _auth_errors.allow((self._peer_host, self._listener)) is not None:
                logger.info("peer=%s authentication failed on listener %s: %s", self.peer, self._listener,
                            safe(session.failure))
            delay_s = session.listener.failed_delay_ms / 1000  # KIP-306: a brake on guessing passwords
            task = asyncio.ensure_future(_after(delay_s, response))
            task.add_done_callback(lambda _task: self._write_ready())
            return _Entry(None, task, False)
        if session.state is SaslState.AUTHENTICATED and session.principal is not None:
            self.principal = session.principal
            self._decoder.limit(self._broker.config.socket_request_max_bytes)
        return _Entry(response, None, False)

    def _settle(self, context: RequestContext, outcome: Any) -> bytes | None:
        if outcome is NO_RESPONSE:
            return None
        if outcome is CLOSE_CONNECTION:
            raise _Close()
        api = HANDLERS[context.api_key]
        self._broker.metrics.answered(api.name, outcome)
        return encode_response(context.api_key, context.api_version, context.correlation_id, outcome)

    def _failed(self, api: ApiHandler, context: RequestContext, request: Any) -> bytes:
        """A handler raised: log it (rate-limited) and answer UNKNOWN_SERVER_ERROR, as Kafka does."""
        self._broker.metrics.failures.labels(api.name).inc()
        suppressed = _handler_errors.allow((api.api_key, self.peer))
        if suppressed is not None:
            logger.error("peer=%s %s v%d failed (%d more since the last report)", self.peer, api.name,
                         context.api_version, suppressed, exc_info=True)
        try:
            response = api.error_response(context.api_version, request, ErrorCode.unknown_server_error)
            self._broker.metrics.answered(api.name, response)
            return encode_response(context.api_key, context.api_version, context.correlation_id, response)
        except Exception as error:  # not even an error response: the connection is all that is left to close
            logger.error("peer=%s %s v%d: cannot build an error response (%s); closing the connection", self.peer,
                         api.name, context.api_version, safe(error))
            raise _Close() from None

    async def _wait(self, api: ApiHandler, context: RequestContext, request: Any, outcome: Any) -> bytes | None:
        try:
            response = await self._continue(context, outcome)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("peer=%s %s v%d correlation_id=%d answered", self.peer, api.name, context.api_version,
                             context.correlation_id)
            return response
        except (_Close, asyncio.CancelledError):
            raise
        except Exception:
            return self._failed(api, context, request)

    async def _continue(self, context: RequestContext, outcome: Any) -> bytes | None:
        deadline: float | None = None
        while True:
            if isinstance(outcome, AwaitCompletion):
                outcome = outcome.respond(await completed(outcome.completion))
            elif isinstance(outcome, AwaitData):
                if deadline is None:
                    deadline = time.monotonic() + outcome.wait_ms / 1000
                remaining = deadline - time.monotonic()
                if remaining > 0 and not self._stopping:
                    await self._waiters.wait_any(outcome.partitions, remaining)
                outcome = outcome.retry(self._stopping or time.monotonic() >= deadline)
            else:
                return self._settle(context, outcome)

    # --- writing ---------------------------------------------------------------------------------------

    def _write_ready(self) -> None:
        """Write every finished response at the head of the queue, in order."""
        transport = self._transport
        if transport is None or self._closing:
            return
        queue = self._queue
        while queue:
            entry = queue[0]
            if entry.task is not None:
                if not entry.task.done():
                    break
                try:
                    entry.response = entry.task.result()
                except asyncio.CancelledError:
                    entry.response = None
                except _Close:
                    self._close_now()
                    return
                entry.task = None
                if entry.response is not None:
                    self._queued_bytes += len(entry.response)
            if self._write_paused and entry.response is not None:
                break  # the socket is full: keep it here, counted, until resume_writing
            queue.popleft()
            if entry.mutes:
                self._muted_by_fetch -= 1
            if entry.response is not None:
                self._queued_bytes -= len(entry.response)
                transport.write(entry.response)
        if (self._stopping or self._close_requested) and not queue:
            self._close_now()
            return
        self._update_reading()

    # --- closing ---------------------------------------------------------------------------------------

    def _close_after_queued(self) -> None:
        """Answer what was taken, then close (a bad frame, acks=0 failure)."""
        self._close_requested = True
        self._reading = False
        if self._transport is not None:
            self._transport.pause_reading()
        self._write_ready()

    def _close_now(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def stop_reading(self) -> None:
        """Broker shutdown: take no more requests, answer the ones already taken, then close."""
        self._stopping = True
        if self._transport is not None and self._reading and not self._closing:
            self._reading = False
            self._transport.pause_reading()
        self._write_ready()

    def abort(self) -> None:
        """Close at once, dropping whatever is still queued (end of the shutdown grace period, idle)."""
        if self._transport is not None:
            self._transport.abort()
