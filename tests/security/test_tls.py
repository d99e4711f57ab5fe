"""TLS listeners with real clients configured as their documentation says: transactions through SSL
with each client, client certificates, and the wrong protocol on either side failing fast and clearly."""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
import time
import uuid
from typing import Any

import pytest
from aiokafka.helpers import create_ssl_context
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from oncelog.logs import RateLimited

from . import roundtrip
from .conftest import Pki, TlsBroker

QUIET = {"log_level": 0}
FAIL_FAST_S = 15.0


def _confluent_tls(pki: Pki) -> dict[str, Any]:
    return {"security.protocol": "SSL", "ssl.ca.location": str(pki.ca_file), **QUIET}


@pytest.mark.timeout(60)
def test_confluent_kafka_transactions_through_tls(tls_broker: TlsBroker, pki: Pki) -> None:
    assert roundtrip.confluent_kafka(tls_broker.address("SSL"), _confluent_tls(pki), "tls-c") == roundtrip.EXPECTED


@pytest.mark.timeout(60)
def test_kafka_python_transactions_through_tls(tls_broker: TlsBroker, pki: Pki) -> None:
    tls = {"security_protocol": "SSL", "ssl_cafile": str(pki.ca_file)}
    assert roundtrip.kafka_python(tls_broker.address("SSL"), tls, "tls-k") == roundtrip.EXPECTED


@pytest.mark.timeout(60)
def test_aiokafka_transactions_through_tls(tls_broker: TlsBroker, pki: Pki) -> None:
    tls = {"security_protocol": "SSL", "ssl_context": create_ssl_context(cafile=str(pki.ca_file))}
    assert roundtrip.aiokafka(tls_broker.address("SSL"), tls, "tls-a") == roundtrip.EXPECTED


@pytest.mark.timeout(60)
def test_a_listener_that_requires_client_certificates(tls_broker: TlsBroker, pki: Pki) -> None:
    bootstrap = tls_broker.address("MTLS")
    with_certificate = {**_confluent_tls(pki), "ssl.certificate.location": str(pki.client_cert),
                        "ssl.key.location": str(pki.client_key)}
    producer = Producer({"bootstrap.servers": bootstrap, **with_certificate})
    producer.produce("mtls", b"hello", partition=0)
    assert producer.flush(15) == 0
    assert roundtrip.read_committed(bootstrap, "mtls", 1, with_certificate) == [b"hello"]
    started = time.monotonic()
    with pytest.raises(KafkaException):
        AdminClient({"bootstrap.servers": bootstrap, **_confluent_tls(pki)}).list_topics(timeout=FAIL_FAST_S)
    assert time.monotonic() - started < FAIL_FAST_S + 1


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _failure(bootstrap: str, config: dict[str, Any]) -> str:
    """What librdkafka tells the application and logs when it cannot talk to `bootstrap`; it must give
    up within the timeout."""
    errors: list[str] = []
    lines = _Lines()
    client_log = logging.getLogger(f"librdkafka-{uuid.uuid4()}")
    client_log.addHandler(lines)
    client_log.propagate = False
    client_log.setLevel(logging.INFO)
    admin = AdminClient({"bootstrap.servers": bootstrap, "error_cb": lambda error: errors.append(str(error)),
                         "reconnect.backoff.ms": 100, "logger": client_log, **config})
    started = time.monotonic()
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    assert time.monotonic() - started < 6
    admin.poll(0.5)
    return " | ".join(errors + lines.lines)


@pytest.mark.timeout(60)
def test_a_plaintext_client_on_a_tls_port_fails_fast_and_is_logged_once(
        tls_broker: TlsBroker, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="oncelog.server.connection")
    monkeypatch.setattr("oncelog.server.connection._protocol_errors", RateLimited(60.0))  # not spent by other tests
    error = _failure(tls_broker.address("SSL"), {"security.protocol": "PLAINTEXT"})
    # librdkafka 2.16 words it so (older versions add "connecting to a SSL listener?"; Kafka closes alike).
    assert "closed by peer" in error and "APIVERSION_QUERY" in error, error
    lines = [r.getMessage() for r in caplog.records if "TLS handshake on listener SSL failed" in r.getMessage()]
    assert len(lines) == 1 and "security.protocol=SSL" in lines[0], lines  # not one per retry


@pytest.mark.timeout(60)
def test_a_tls_client_on_a_plaintext_port_fails_fast_and_is_logged(
        tls_broker: TlsBroker, pki: Pki, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="oncelog.server.connection")
    monkeypatch.setattr("oncelog.server.connection._protocol_errors", RateLimited(60.0))
    error = _failure(tls_broker.address("PLAINTEXT"), {"security.protocol": "SSL", "ssl.ca.location": str(pki.ca_file)})
    assert "SSL handshake failed" in error and "connecting to a PLAINTEXT broker listener?" in error, error
    assert any("sent a TLS handshake to plaintext listener PLAINTEXT" in r.getMessage() for r in caplog.records)


@pytest.mark.timeout(30)
def test_an_unverified_certificate_is_refused_by_the_client(tls_broker: TlsBroker, tmp_path: Any) -> None:
    import trustme

    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    error = _failure(tls_broker.address("SSL"), {"security.protocol": "SSL", "ssl.ca.location": str(other)})
    assert "certificate verify failed" in error, error


@pytest.mark.broker_properties({"ssl.enabled.protocols": "TLSv1.3"})
def test_ssl_enabled_protocols_is_enforced(tls_broker: TlsBroker, pki: Pki) -> None:
    host, port = tls_broker.address("SSL").split(":")

    def handshake(maximum: ssl.TLSVersion) -> str | None:
        context = ssl.create_default_context(cafile=str(pki.ca_file))
        context.maximum_version = maximum
        with socket.create_connection((host, int(port)), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=host) as wrapped:
            return wrapped.version()

    assert handshake(ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    with pytest.raises(ssl.SSLError):
        handshake(ssl.TLSVersion.TLSv1_2)


@pytest.mark.broker_properties({"ssl.key.password": "do-not-show"})
@pytest.mark.timeout(30)
def test_describe_configs_shows_tls_settings_but_never_secrets(tls_broker: TlsBroker, pki: Pki) -> None:
    from confluent_kafka.admin import ConfigResource  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": tls_broker.address("SSL"), **_confluent_tls(pki)})
    resource = ConfigResource(ConfigResource.Type.BROKER, "1")
    configs = admin.describe_configs([resource])[resource].result(15)
    assert configs["ssl.keystore.location"].value == str(pki.server_pem)
    assert configs["listener.name.mtls.ssl.client.auth"].value == "required"
    assert configs["ssl.key.password"].is_sensitive and configs["ssl.key.password"].value is None
    assert "security" not in configs


@pytest.mark.timeout(30)
def test_failed_and_abandoned_handshakes_leave_no_connection_behind(tls_broker: TlsBroker) -> None:
    host, port = tls_broker.address("SSL").split(":")
    client = ssl.create_default_context()
    for index in range(9):
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            if index % 3 == 0:
                raw.sendall(b"\x00\x00\x00\x10not tls at all!!")  # refused: not a ClientHello
                raw.recv(10)
            elif index % 3 == 1:  # half a ClientHello, then a reset in the middle of the handshake
                incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
                with contextlib.suppress(ssl.SSLWantReadError):
                    client.wrap_bio(incoming, outgoing, server_hostname=host).do_handshake()
                hello = outgoing.read()
                raw.sendall(hello[: len(hello) // 2])
                time.sleep(0.05)
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # else: closed before any byte
    server = tls_broker.broker.server
    deadline = time.monotonic() + 10
    while tls_broker.broker.call(lambda: len(server._connections)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tls_broker.broker.call(lambda: len(server._connections)) == 0
