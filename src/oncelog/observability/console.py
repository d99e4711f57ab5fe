"""What the HTTP listener answers: `/metrics`, the web console page, and the console's JSON API.

    GET  /metrics                   Prometheus text format (one `view.BrokerView` per scrape)
    GET  /                          the console: one static page (console.html) that polls the API
    GET  /api/overview              topics, partitions, groups with lag, transactions, byte/record totals
    GET  /api/producers?topic=T     the producers each partition of T remembers
    POST /api/transactions/abort    {"transactional_id": ID}: abort an Ongoing transaction, fencing its producer

Everything but `/metrics` answers only when the `Host` header is an IP address, `localhost` or
`http.host`, so a DNS-rebinding page (Host: evil.example) can neither read the console nor act; no answer
may be framed by another site (X-Frame-Options, CSP frame-ancestors). The abort is the only action,
guarded twice more: `http.console.read.only=true` refuses it, and it needs the `X-Oncelog-Console`
header, which a page of another origin cannot send without a CORS preflight this server never approves.
The listener has no authentication: bind it beyond loopback only behind a proxy that has, or read-only.
"""

from __future__ import annotations

import ipaddress
import json
from importlib import resources
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from oncelog import __version__
from oncelog.errors import ErrorCode

from .http import HttpRequest, HttpResponse
from .metrics import BrokerMetrics
from .view import BrokerView, settled, take_view

if TYPE_CHECKING:
    from oncelog.broker import Broker

ACTION_HEADER = "x-oncelog-console"
_ABORT_STATUS = {ErrorCode.none: 200, ErrorCode.transactional_id_not_found: 404, ErrorCode.invalid_txn_state: 409,
                 ErrorCode.concurrent_transactions: 409}


def _json(status: int, value: Any) -> HttpResponse:
    return HttpResponse(status, "application/json", json.dumps(value, separators=(",", ":")).encode())


def _text(status: int, text: str) -> HttpResponse:
    return HttpResponse(status, "text/plain; charset=utf-8", text.encode())


class Console:
    def __init__(self, broker: Broker, metrics: BrokerMetrics) -> None:
        self._broker = broker
        self._metrics = metrics
        self._page = resources.files(__package__).joinpath("console.html").read_bytes()

    async def respond(self, request: HttpRequest) -> HttpResponse:
        route = (request.method, request.path)
        if route == ("GET", "/metrics"):  # for Prometheus, which names the target however it likes
            await self._metrics.refresh()
            return HttpResponse(200, CONTENT_TYPE_LATEST, generate_latest(self._metrics.registry))
        if not self._trusted_host(request.headers.get("host", "")):
            return _json(403, {"error": "the console answers only to an IP address, localhost or http.host in "
                                        "the Host header (a DNS-rebinding page must not read it)"})
        if route in (("GET", "/"), ("GET", "/console")):
            return HttpResponse(200, "text/html; charset=utf-8", self._page)
        if route == ("GET", "/api/overview"):
            return _json(200, self.overview(await take_view(self._broker)))
        if route == ("GET", "/api/producers"):
            return await self._producers(request.query.get("topic", ""))
        if route == ("POST", "/api/transactions/abort"):
            return await self._abort(request)
        if request.path in ("/metrics", "/", "/console", "/api/overview", "/api/producers",
                            "/api/transactions/abort"):
            return _text(405, f"{request.method} is not allowed on {request.path}\n")
        return _text(404, "not found: the console is at /, metrics at /metrics\n")

    def overview(self, view: BrokerView) -> dict[str, Any]:
        broker = self._broker
        topics = []
        for topic in view.topics:
            bytes_in, messages_in, bytes_out = self._metrics.topic_totals(topic.name)
            topics.append({
                "name": topic.name, "internal": topic.internal, "retention_ms": topic.retention_ms,
                "retention_bytes": topic.retention_bytes, "cleanup_policy": topic.cleanup_policy,
                "messages_in": messages_in, "bytes_in": bytes_in, "bytes_out": bytes_out,
                "partitions": [{"partition": p.partition, "log_start_offset": p.log_start_offset,
                                "high_watermark": p.high_watermark, "last_stable_offset": p.last_stable_offset,
                                "log_end_offset": p.log_end_offset, "size_bytes": p.size_bytes}
                               for p in topic.partitions]})
        groups = []
        for group in view.groups:
            partitions = []
            for (topic_name, index), committed in sorted(group.committed.items()):
                found = view.partition(topic_name, index)
                partitions.append({"topic": topic_name, "partition": index, "committed": committed,
                                   "high_watermark": found.high_watermark if found else None,
                                   "lag": group.lag.get((topic_name, index))})
            groups.append({
                "group_id": group.group_id, "state": group.state, "protocol_type": group.protocol_type,
                "protocol": group.protocol, "lag": sum(group.lag.values()), "partitions": partitions,
                "members": [{"member_id": m.member_id, "client_id": m.client_id, "client_host": m.client_host,
                             "group_instance_id": m.group_instance_id, "assignment": m.assignment}
                            for m in group.members]})
        transactions = [{"transactional_id": t.transactional_id, "producer_id": t.producer_id,
                         "producer_epoch": t.producer_epoch, "state": t.state, "timeout_ms": t.timeout_ms,
                         "start_ms": t.start_ms, "age_ms": t.age_ms, "hanging": t.hanging,
                         "partitions": t.partitions} for t in view.transactions]
        return {"now_ms": view.now_ms, "version": __version__, "node_id": broker.config.node_id,
                "storage": "local" if broker.shared is None else "postgresql",
                "read_only": broker.config.http_console_read_only, "topics": topics, "groups": groups,
                "transactions": transactions, "transactions_unlisted": view.transactions_unlisted}

    async def _producers(self, topic: str) -> HttpResponse:
        info = self._broker.storage.topic(topic)
        if info is None:
            return _json(404, {"error": f"no topic {topic!r}"})
        keys = [(topic, partition) for partition in range(info.partitions)]
        found = await settled(self._broker.storage.producers(keys))
        partitions = []
        for (_topic, partition), producers in zip(keys, found, strict=True):
            partitions.append({"partition": partition, "error": producers.error.name.upper(),
                               "producers": [{"producer_id": p.producer_id, "producer_epoch": p.producer_epoch,
                                              "last_sequence": p.last_sequence, "last_timestamp": p.last_timestamp,
                                              "current_txn_start_offset": p.current_txn_start_offset}
                                             for p in producers.active]})
        return _json(200, {"topic": topic, "partitions": partitions})

    async def _abort(self, request: HttpRequest) -> HttpResponse:
        if self._broker.config.http_console_read_only:
            return _json(403, {"error": "the console is read-only (http.console.read.only=true)"})
        if request.headers.get(ACTION_HEADER) != "1":
            return _json(403, {"error": f"actions need the {ACTION_HEADER} header"})
        try:
            transactional_id = json.loads(request.body)["transactional_id"]
        except (ValueError, KeyError, TypeError):
            return _json(400, {"error": 'the body must be {"transactional_id": "..."}'})
        if not isinstance(transactional_id, str) or not transactional_id:
            return _json(400, {"error": "transactional_id must be a non-empty string"})
        code = await settled(self._broker.transactions.abort_open(transactional_id))
        return _json(_ABORT_STATUS.get(code, 503), {"error": code.name.upper()})

    def _trusted_host(self, host_header: str) -> bool:
        host = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
        host = host.strip("[]")
        if host in ("localhost", self._broker.config.http_host):
            return True
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
        return True
