"""The web console's JSON API and the HTTP listener's limits, driven over real HTTP after real clients worked."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from oncelog.observability.http import BODY_BYTES_MAX, CONNECTIONS_MAX, HEAD_BYTES_MAX
from oncelog.testing import EmbeddedBroker
from tests.observability.conftest import StartBroker

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def broker(start_http_broker: StartBroker, request: pytest.FixtureRequest) -> EmbeddedBroker:
    """On local files, or on a fresh PostgreSQL database with --storage postgresql (tests marked
    both_storages run both ways)."""
    on_postgres = request.config.getoption("--storage") == "postgresql"
    return start_http_broker(request.getfixturevalue("database_url") if on_postgres else None)


def _url(broker: EmbeddedBroker, path: str) -> str:
    return f"http://127.0.0.1:{broker.server.http_port}{path}"


def _get(broker: EmbeddedBroker, path: str) -> Any:
    with urllib.request.urlopen(_url(broker, path), timeout=10) as response:
        assert response.headers["Content-Type"] == "application/json"
        return json.loads(response.read())


def _abort(broker: EmbeddedBroker, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(_url(broker, "/api/transactions/abort"), data=body, method="POST",
                                     headers={"Content-Type": "application/json", "X-Oncelog-Console": "1",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _open_transaction(broker: EmbeddedBroker, transactional_id: str, topic: str) -> Producer:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": transactional_id,
                         "log_level": 0})
    producer.init_transactions(10)
    producer.begin_transaction()
    for index in range(3):
        producer.produce(topic, f"{index}".encode(), partition=0)
    producer.flush(10)
    return producer


@pytest.mark.both_storages
def test_the_overview_shows_topics_groups_lag_and_open_transactions(broker: EmbeddedBroker) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "log_level": 0})
    for index in range(8):
        producer.produce("shown", f"{index}".encode(), partition=0)
    producer.flush(10)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "watchers", "log_level": 0,
                         "client.id": "watcher-1", "auto.offset.reset": "earliest", "enable.auto.commit": False})
    _open_transaction(broker, "undecided", "shown")
    try:
        consumer.subscribe(["shown"])
        deadline = time.monotonic() + 30
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(0.2)
        consumer.commit(offsets=[TopicPartition("shown", 0, 5)], asynchronous=False)
        overview = _get(broker, "/api/overview")
    finally:
        consumer.close()
    topic = next(t for t in overview["topics"] if t["name"] == "shown")
    assert topic["internal"] is False and topic["messages_in"] == 11 and topic["cleanup_policy"] == "delete"
    [partition] = topic["partitions"]
    assert (partition["log_start_offset"], partition["last_stable_offset"], partition["high_watermark"]) == (0, 8, 11)
    assert partition["size_bytes"] is None if broker.config.shared_storage else partition["size_bytes"] > 0
    [group] = overview["groups"]
    assert (group["group_id"], group["state"], group["lag"]) == ("watchers", "Stable", 6)
    assert group["partitions"] == [{"topic": "shown", "partition": 0, "committed": 5, "high_watermark": 11,
                                    "lag": 6}]
    [member] = group["members"]
    assert member["client_id"] == "watcher-1" and member["assignment"] == [["shown", 0]]
    [transaction] = [t for t in overview["transactions"] if t["transactional_id"] == "undecided"]
    assert transaction["state"] == "Ongoing" and transaction["partitions"] == [["shown", 0]]
    assert 0 <= transaction["age_ms"] < 30_000 and transaction["hanging"] is False
    assert overview["read_only"] is False
    assert overview["storage"] == ("postgresql" if broker.config.shared_storage else "local")


@pytest.mark.both_storages
def test_producers_per_partition(broker: EmbeddedBroker) -> None:
    _open_transaction(broker, "listed", "produced")
    answer = _get(broker, "/api/producers?topic=produced")
    [partition] = answer["partitions"]
    [producer] = partition["producers"]
    assert producer["current_txn_start_offset"] == 0 and producer["last_sequence"] == 2
    with pytest.raises(urllib.error.HTTPError) as missing:
        _get(broker, "/api/producers?topic=nothing")
    assert missing.value.code == 404


@pytest.mark.both_storages
def test_abort_ends_the_transaction_and_fences_its_producer(broker: EmbeddedBroker) -> None:
    producer = _open_transaction(broker, "stuck", "aborted")
    assert _abort(broker, json.dumps({"transactional_id": "stuck"}).encode()) == (200, {"error": "NONE"})
    [transaction] = [t for t in _get(broker, "/api/overview")["transactions"] if t["transactional_id"] == "stuck"]
    assert transaction["state"] == "CompleteAbort" and transaction["producer_epoch"] == 1
    [partition] = next(t for t in _get(broker, "/api/overview")["topics"] if t["name"] == "aborted")["partitions"]
    assert partition["last_stable_offset"] == partition["high_watermark"] == 4  # three records and the ABORT
    with pytest.raises(KafkaException):
        producer.commit_transaction(10)  # the zombie is fenced
    assert _abort(broker, b'{"transactional_id": "stuck"}')[0] == 409  # nothing open any more
    assert _abort(broker, b'{"transactional_id": "never"}')[0] == 404
    assert _abort(broker, b'{"transactional": 1}')[0] == 400
    assert _abort(broker, b"not json")[0] == 400


def test_abort_needs_the_console_header_and_a_trusted_host(broker: EmbeddedBroker) -> None:
    _open_transaction(broker, "guarded", "guarded")
    body = b'{"transactional_id": "guarded"}'
    request = urllib.request.Request(_url(broker, "/api/transactions/abort"), data=body, method="POST",
                                     headers={"Content-Type": "text/plain"})  # what a cross-site form can send
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403
    assert _abort(broker, body, {"Host": f"evil.example:{broker.server.http_port}"})[0] == 403  # DNS rebinding
    for path in ("/api/overview", "/", "/api/producers?topic=guarded"):  # nor can such a page read the console
        rebound = urllib.request.Request(_url(broker, path), headers={"Host": "evil.example"})
        with pytest.raises(urllib.error.HTTPError) as reading:
            urllib.request.urlopen(rebound, timeout=10)
        assert reading.value.code == 403, path
    metrics = urllib.request.Request(_url(broker, "/metrics"), headers={"Host": "prometheus-target.example"})
    with urllib.request.urlopen(metrics, timeout=10) as scraped:  # Prometheus names its targets as it likes
        assert scraped.status == 200
        assert scraped.headers["X-Frame-Options"] == "DENY"
    states = {t["transactional_id"]: t["state"] for t in _get(broker, "/api/overview")["transactions"]}
    assert states["guarded"] == "Ongoing"
    assert _abort(broker, body, {"Host": f"localhost:{broker.server.http_port}"})[0] == 200


def test_a_read_only_console_refuses_the_abort(start_http_broker: StartBroker) -> None:
    broker = start_http_broker(**{"http.console.read.only": "true"})
    _open_transaction(broker, "kept", "kept")
    assert _abort(broker, b'{"transactional_id": "kept"}')[0] == 403
    assert _get(broker, "/api/overview")["read_only"] is True
    states = {t["transactional_id"]: t["state"] for t in _get(broker, "/api/overview")["transactions"]}
    assert states["kept"] == "Ongoing"


def test_the_page_and_unknown_paths(broker: EmbeddedBroker) -> None:
    with urllib.request.urlopen(_url(broker, "/"), timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/html")
        assert b"<canvas id=\"throughput-chart\"" in response.read()
    for path, method, status in (("/nothing", "GET", 404), ("/api/overview", "POST", 405),
                                 ("/api/transactions/abort", "GET", 405)):
        request = urllib.request.Request(_url(broker, path), method=method, data=b"" if method == "POST" else None)
        with pytest.raises(urllib.error.HTTPError) as answered:
            urllib.request.urlopen(request, timeout=10)
        assert answered.value.code == status, path


def _raw(broker: EmbeddedBroker, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", broker.server.http_port), timeout=10) as connection:
        connection.sendall(data)
        chunks = []
        try:
            while chunk := connection.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:  # closed with our bytes unread: a reset rather than an orderly close
            pass
        return b"".join(chunks)


def test_the_listener_bounds_what_a_peer_sends(broker: EmbeddedBroker) -> None:
    assert _raw(broker, b"GET / HTTP/1.1\r\nX: " + b"a" * HEAD_BYTES_MAX + b"\r\n\r\n") == b""  # head too large
    assert _raw(broker, b"\x00\x00\x00\x10not http at all\r\n\r\n") == b""
    too_long = f"POST /api/transactions/abort HTTP/1.1\r\nContent-Length: {BODY_BYTES_MAX + 1}\r\n\r\n".encode()
    assert _raw(broker, too_long).startswith(b"HTTP/1.1 413 ")
    # Slow or idle peers hold at most CONNECTIONS_MAX connections; the next one is closed at once, and once
    # they go, the listener serves again.
    idle = [socket.create_connection(("127.0.0.1", broker.server.http_port), timeout=10)
            for _ in range(CONNECTIONS_MAX)]
    try:
        time.sleep(0.3)
        assert _raw(broker, b"GET /api/overview HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") == b""
    finally:
        for connection in idle:
            connection.close()
    deadline = time.monotonic() + 10
    while _raw(broker, b"GET /api/overview HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") == b"" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _raw(broker, b"GET /api/overview HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").startswith(b"HTTP/1.1 200 ")


def test_a_peer_that_never_reads_loses_its_slot_when_the_exchange_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from oncelog.observability import http

    monkeypatch.setattr(http, "REQUEST_TIMEOUT_S", 0.5)

    async def huge(_request: http.HttpRequest) -> http.HttpResponse:
        return http.HttpResponse(200, "text/plain", b"x" * (64 << 20))  # far more than socket buffers hold

    async def scenario() -> tuple[int, int]:
        listener = http.HttpListener(huge)
        port = await listener.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")  # ...and never read the answer
        await asyncio.sleep(0.2)
        during = listener._open
        await asyncio.sleep(1.0)
        after = listener._open
        writer.transport.abort()
        await listener.stop()
        del reader
        return during, after

    assert asyncio.run(scenario()) == (1, 0)


def test_a_member_with_a_garbled_assignment_does_not_break_the_console(broker: EmbeddedBroker) -> None:
    """A leader may sync any bytes as an assignment; the view shows no assignment instead of failing."""
    from oncelog.client import KafkaClient

    with KafkaClient(broker.bootstrap) as client:
        join = {"group_id": "garbled", "session_timeout": 30000, "rebalance_timeout": 30000, "member_id": "",
                "group_instance_id": None, "protocol_type": "consumer",
                "protocols": [{"name": "range", "metadata": b"\x00\x00\x00\x00\x00\x01\x00"}]}
        joined = client.request(11, 5, join)
        joined = client.request(11, 5, {**join, "member_id": joined.member_id})
        assert int(joined.error_code) == 0
        synced = client.request(14, 3, {"group_id": "garbled", "generation_id": joined.generation_id,
                                        "member_id": joined.member_id, "group_instance_id": None,
                                        "assignments": [{"member_id": joined.member_id,
                                                         "assignment": b"\x00\x00\x00\x00\x00\x01\x00\x01t"}]})
        assert int(synced.error_code) == 0
        [group] = [g for g in _get(broker, "/api/overview")["groups"] if g["group_id"] == "garbled"]
        assert group["state"] == "Stable" and group["members"][0]["assignment"] == []
        with urllib.request.urlopen(_url(broker, "/metrics"), timeout=10) as scraped:
            assert scraped.status == 200
