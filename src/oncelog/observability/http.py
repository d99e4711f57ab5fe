"""The broker's HTTP listener: `GET /metrics` in Prometheus text format.

A deliberately small HTTP/1.1 server on the broker's event loop (no framework): one request per
connection, the request head bounded to 8 KiB and 5 seconds, then the answer and close. Anything but
`GET /metrics` (and `/`, which says where to look) gets 404 or 405. Scrapes are rendered on the loop,
reading the broker's state where it lives, so they see one consistent moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import BrokerMetrics

logger = logging.getLogger(__name__)

HEAD_BYTES_MAX = 8192
READ_TIMEOUT_S = 5.0


class HttpListener:
    def __init__(self, metrics: BrokerMetrics) -> None:
        self._metrics = metrics
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port, limit=HEAD_BYTES_MAX)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            if method != "GET":
                status, kind, body = "405 Method Not Allowed", "text/plain", b"only GET\n"
            elif path == "/metrics":
                status, kind, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(self._metrics.registry)
            elif path == "/":
                status, kind, body = "200 OK", "text/plain", b"oncelog: metrics at /metrics\n"
            else:
                status, kind, body = "404 Not Found", "text/plain", b"not found\n"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass  # a peer that does not speak HTTP, or too slowly: just close
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
