"""The broker's HTTP listener: `/metrics` for Prometheus and the web console with its JSON API.

A deliberately small HTTP/1.1 server on the broker's event loop (no framework): one request per
connection, then the answer and close. Everything a peer controls is bounded: the request head to
8 KiB, a body to 16 KiB (only the console's POSTs have one), the whole exchange — reading, answering,
writing — to 10 seconds (then the connection is aborted), and at most
`CONNECTIONS_MAX` connections at once (more are closed at once: a scraper or a browser needs a few).
What each path answers is `console.Console.respond`; this module only speaks HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from oncelog.logs import safe

logger = logging.getLogger(__name__)

HEAD_BYTES_MAX = 8192
BODY_BYTES_MAX = 16384
REQUEST_TIMEOUT_S = 10.0
CONNECTIONS_MAX = 32


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Names in lower case."""
    body: bytes


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    content_type: str
    body: bytes


REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           409: "Conflict", 413: "Payload Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}

Responder = Callable[[HttpRequest], Awaitable[HttpResponse]]


def _percent_decode(text: str) -> str:
    from urllib.parse import unquote_plus

    return unquote_plus(text)


def parse_head(head: bytes) -> tuple[str, str, dict[str, str], dict[str, str]]:
    """(method, path, query, headers) of a request head; ValueError if it is not HTTP."""
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError("not HTTP/1.x")
    path, _, query_text = target.partition("?")
    query = {}
    for pair in filter(None, query_text.split("&")):
        key, _, value = pair.partition("=")
        query[_percent_decode(key)] = _percent_decode(value)
    headers = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError("malformed header line")
            headers[name.strip().lower()] = value.strip()
    return method, path, query, headers


class HttpListener:
    def __init__(self, respond: Responder) -> None:
        self._respond = respond
        self._server: asyncio.Server | None = None
        self._open = 0
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port, limit=HEAD_BYTES_MAX)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):  # open exchanges end within REQUEST_TIMEOUT_S
                await asyncio.wait_for(self._server.wait_closed(), REQUEST_TIMEOUT_S + 1)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= CONNECTIONS_MAX:
            writer.transport.abort()
            return
        self._open += 1
        try:
            # One deadline for everything, writing included: a peer that asks and never reads must not
            # hold a connection slot (or the broker's shutdown) for longer.
            await asyncio.wait_for(self._exchange(reader, writer), REQUEST_TIMEOUT_S)
            writer.close()
        except (TimeoutError, ConnectionError):
            writer.transport.abort()  # drop what is unsent; never wait on this peer again
        finally:
            self._open -= 1

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        response = await self._read_and_answer(reader)
        if response is None:
            return
        writer.write(f"HTTP/1.1 {response.status} {REASONS.get(response.status, '')}\r\n"
                     f"Content-Type: {response.content_type}\r\nContent-Length: {len(response.body)}\r\n"
                     "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
                     # never inside another site's frame (a framed Abort button could be clicked for the user)
                     "X-Frame-Options: DENY\r\nContent-Security-Policy: frame-ancestors 'none'\r\n"
                     "Connection: close\r\n\r\n".encode() + response.body)
        await writer.drain()

    async def _read_and_answer(self, reader: asyncio.StreamReader) -> HttpResponse | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, path, query, headers = parse_head(head[:-4])
            length = int(headers.get("content-length", "0"))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, UnicodeError):
            return None  # not HTTP, or a head too large: close without a word
        if not 0 <= length <= BODY_BYTES_MAX:
            return HttpResponse(413, "text/plain", b"request body too large\n")
        try:
            body = await reader.readexactly(length) if length else b""
        except asyncio.IncompleteReadError:
            return None
        try:
            return await self._respond(HttpRequest(method, path, query, headers, body))
        except Exception:
            logger.exception("HTTP %s %s failed", safe(method), safe(path))
            return HttpResponse(500, "text/plain", b"internal error; see the broker's log\n")
