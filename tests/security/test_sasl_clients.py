"""SASL with real clients configured as their documentation says: SCRAM-SHA-512 over SASL_SSL and PLAIN
over SASL_PLAINTEXT with transactions for each client, SCRAM users managed through Kafka's APIs and
`oncelog users`, bad credentials failing fast, and the broker refusing what an unauthenticated
connection may not do."""

from __future__ import annotations

import logging
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka.helpers import create_ssl_context
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from oncelog.client import ClientError, KafkaClient
from oncelog.client_security import ClientSecurity
from oncelog.logs import RateLimited
from oncelog.protocol.codec import build_request, encode_request

from . import roundtrip
from .conftest import Pki, TlsBroker

QUIET = {"log_level": 0}


def _confluent(pki: Pki, protocol: str, mechanism: str, user: str, password: str) -> dict[str, Any]:
    config = {"security.protocol": protocol, "sasl.mechanism": mechanism, "sasl.username": user,
              "sasl.password": password, **QUIET}
    return {**config, "ssl.ca.location": str(pki.ca_file)} if protocol == "SASL_SSL" else config


@pytest.mark.timeout(60)
def test_confluent_kafka_scram_sha_512_over_sasl_ssl(sasl_broker: TlsBroker, pki: Pki) -> None:
    config = _confluent(pki, "SASL_SSL", "SCRAM-SHA-512", "alice", "alice-secret")
    assert roundtrip.confluent_kafka(sasl_broker.address("SASL_SSL"), config, "scram-c") == roundtrip.EXPECTED


@pytest.mark.timeout(60)
def test_confluent_kafka_plain_over_sasl_plaintext(sasl_broker: TlsBroker, pki: Pki) -> None:
    config = _confluent(pki, "SASL_PLAINTEXT", "PLAIN", "carol", "carol-secret")
    assert roundtrip.confluent_kafka(sasl_broker.address("SASL_PLAINTEXT"), config, "plain-c") == roundtrip.EXPECTED


SASL_CASES = pytest.mark.parametrize(("listener", "mechanism", "user", "password"), [
    ("SASL_SSL", "SCRAM-SHA-512", "alice", "alice-secret"),
    ("SASL_PLAINTEXT", "PLAIN", "carol", "carol-secret"),
])


@pytest.mark.timeout(60)
@SASL_CASES
def test_kafka_python_transactions_over_sasl(sasl_broker: TlsBroker, pki: Pki, listener: str, mechanism: str,
                                             user: str, password: str) -> None:
    settings: dict[str, Any] = {"security_protocol": listener, "sasl_mechanism": mechanism,
                                "sasl_plain_username": user, "sasl_plain_password": password}
    if listener == "SASL_SSL":
        settings["ssl_cafile"] = str(pki.ca_file)
    topic = f"kp-{mechanism.lower()}"
    assert roundtrip.kafka_python(sasl_broker.address(listener), settings, topic) == roundtrip.EXPECTED


@pytest.mark.timeout(60)
@SASL_CASES
def test_aiokafka_transactions_over_sasl(sasl_broker: TlsBroker, pki: Pki, listener: str, mechanism: str,
                                         user: str, password: str) -> None:
    settings: dict[str, Any] = {"security_protocol": listener, "sasl_mechanism": mechanism,
                                "sasl_plain_username": user, "sasl_plain_password": password}
    if listener == "SASL_SSL":
        settings["ssl_context"] = create_ssl_context(cafile=str(pki.ca_file))
    topic = f"aio-{mechanism.lower()}"
    assert roundtrip.aiokafka(sasl_broker.address(listener), settings, topic) == roundtrip.EXPECTED


@pytest.mark.timeout(60)
def test_scram_users_managed_through_kafkas_admin_api(sasl_broker: TlsBroker, pki: Pki) -> None:
    admin = AdminClient({"bootstrap.servers": sasl_broker.address("SASL_SSL"),
                         **_confluent(pki, "SASL_SSL", "SCRAM-SHA-512", "alice", "alice-secret")})
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192)
    futures = admin.alter_user_scram_credentials([UserScramCredentialUpsertion("dave", info, b"dave-secret")])
    futures["dave"].result(15)
    described = {user: future.result(15) for user, future in
                 admin.describe_user_scram_credentials(["dave", "alice"]).items()}
    assert [(i.mechanism, i.iterations) for i in described["dave"].scram_credential_infos] == \
        [(ScramMechanism.SCRAM_SHA_256, 8192)]
    assert [i.mechanism for i in described["alice"].scram_credential_infos] == [ScramMechanism.SCRAM_SHA_512]
    config = _confluent(pki, "SASL_SSL", "SCRAM-SHA-256", "dave", "dave-secret")
    assert roundtrip.confluent_kafka(sasl_broker.address("SASL_SSL"), config, "dave") == roundtrip.EXPECTED
    too_few = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 1000)
    with pytest.raises(KafkaException, match="iterations"):
        admin.alter_user_scram_credentials([UserScramCredentialUpsertion("erin", too_few, b"x")])["erin"].result(15)


def _oncelog(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oncelog", *args], input=stdin, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.timeout(120)
def test_oncelog_users_online_through_a_secured_listener(sasl_broker: TlsBroker, pki: Pki, tmp_path: Path) -> None:
    command_config = tmp_path / "admin.properties"
    command_config.write_text(f"security.protocol=SASL_SSL\nssl.ca.location={pki.ca_file}\nsasl.mechanism=PLAIN\n"
                              "sasl.username=admin\nsasl.password=admin-secret\n")
    target = ["--bootstrap", sasl_broker.address("SASL_SSL"), "--command-config", str(command_config)]
    added = _oncelog("users", "add", "frank", "--mechanism", "SCRAM-SHA-256", *target, stdin="frank-secret\n")
    assert added.returncode == 0 and "frank: SCRAM-SHA-256 set" in added.stdout, added.stderr
    listing = _oncelog("users", "list", *target)
    assert "frank\tSCRAM-SHA-256 (iterations 4096)" in listing.stdout and "alice\tSCRAM-SHA-512" in listing.stdout
    config = _confluent(pki, "SASL_SSL", "SCRAM-SHA-256", "frank", "frank-secret")
    producer = Producer({"bootstrap.servers": sasl_broker.address("SASL_SSL"), **config})
    producer.produce("frank", b"hello")
    assert producer.flush(15) == 0
    deleted = _oncelog("users", "delete", "frank", *target)
    assert deleted.returncode == 0 and "frank: SCRAM-SHA-256 deleted" in deleted.stdout
    assert "frank" not in _oncelog("users", "list", *target).stdout
    wrong = _oncelog("topics", "list", "--bootstrap", sasl_broker.address("SASL_PLAINTEXT"))
    assert wrong.returncode == 1


def test_oncelog_users_offline_on_a_stopped_brokers_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    assert _oncelog("users", "add", "gina", "--data-dir", str(data), stdin="gina-secret\n").returncode == 0
    listing = _oncelog("users", "list", "--data-dir", str(data))
    assert listing.stdout.strip() == "gina\tSCRAM-SHA-512 (iterations 4096)"
    assert "gina-secret" not in (data / "scram-credentials.json").read_text()
    assert _oncelog("users", "add", "x", "--data-dir", str(data), stdin="\n").returncode == 1  # empty password


@pytest.mark.timeout(60)
def test_bad_credentials_fail_fast_with_kafkas_error_and_one_log_line(
        sasl_broker: TlsBroker, pki: Pki, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="oncelog.server.connection")
    monkeypatch.setattr("oncelog.server.connection._auth_errors", RateLimited(60.0))  # not spent by other tests
    errors: list[str] = []
    config = _confluent(pki, "SASL_SSL", "SCRAM-SHA-512", "alice", "wrong")
    admin = AdminClient({"bootstrap.servers": sasl_broker.address("SASL_SSL"), **config,
                         "error_cb": lambda error: errors.append(str(error))})
    started = time.monotonic()
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    assert time.monotonic() - started < 6
    admin.poll(0.5)
    assert any("Authentication failed" in error for error in errors), errors
    lines = [r.getMessage() for r in caplog.records if "authentication failed on listener SASL_SSL" in r.getMessage()]
    assert len(lines) == 1 and "user 'alice'" in lines[0] and "wrong" not in lines[0], lines


@pytest.mark.timeout(30)
def test_a_failed_authentication_is_answered_after_the_delay(sasl_broker: TlsBroker) -> None:
    security = ClientSecurity("SASL_PLAINTEXT", mechanism="PLAIN", username="admin", password="nope")
    started = time.monotonic()
    with pytest.raises(ClientError, match="Invalid username or password"):
        KafkaClient(sasl_broker.address("SASL_PLAINTEXT"), security=security)
    assert time.monotonic() - started >= 0.1  # connection.failed.authentication.delay.ms


def _raw(address: str) -> socket.socket:
    host, port = address.split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def _send(sock: socket.socket, api_key: int, version: int, fields: dict[str, Any], correlation_id: int = 1) -> None:
    sock.sendall(encode_request(api_key, version, correlation_id, "raw", build_request(api_key, version, fields)))


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(4) == b""
    except ConnectionResetError:
        return True


@pytest.mark.timeout(30)
def test_a_request_before_authentication_closes_the_connection(sasl_broker: TlsBroker) -> None:
    with _raw(sasl_broker.address("SASL_PLAINTEXT")) as sock:
        _send(sock, 3, 9, {"topics": None, "allow_auto_topic_creation": False,
                           "include_cluster_authorized_operations": False,
                           "include_topic_authorized_operations": False})
        assert _closed(sock)


@pytest.mark.timeout(30)
def test_a_large_frame_before_authentication_closes_the_connection(sasl_broker: TlsBroker) -> None:
    with _raw(sasl_broker.address("SASL_PLAINTEXT")) as sock:
        sock.sendall(struct.pack(">i", 524289))  # sasl.server.max.receive.size + 1, announced, never sent
        assert _closed(sock)


@pytest.mark.timeout(30)
def test_sasl_handshake_v0_then_bare_tokens(sasl_broker: TlsBroker) -> None:
    with _raw(sasl_broker.address("SASL_PLAINTEXT")) as sock:
        _send(sock, 17, 0, {"mechanism": "PLAIN"})
        (size,) = struct.unpack(">i", sock.recv(4))
        assert size > 0 and sock.recv(size)
        token = b"\0carol\0carol-secret"
        sock.sendall(struct.pack(">i", len(token)) + token)
        assert sock.recv(4) == struct.pack(">i", 0)  # PLAIN's empty answer, as a bare frame
        _send(sock, 18, 0, {}, correlation_id=2)
        (size,) = struct.unpack(">i", sock.recv(4))
        assert int.from_bytes(sock.recv(4), "big") == 2  # an ordinary Kafka response now


@pytest.mark.broker_properties({"connections.max.reauth.ms": "600"})
@pytest.mark.timeout(60)
def test_an_expired_session_is_closed_and_clients_reauthenticate(sasl_broker: TlsBroker, pki: Pki) -> None:
    address = sasl_broker.address("SASL_PLAINTEXT")
    client = KafkaClient(address, security=ClientSecurity("SASL_PLAINTEXT", mechanism="PLAIN", username="carol",
                                                          password="carol-secret"))
    client.request(18, 3, {"client_software_name": "t", "client_software_version": "1"})
    time.sleep(0.8)
    with pytest.raises(ClientError):  # no re-authentication: the broker closes the connection
        client.request(18, 3, {"client_software_name": "t", "client_software_version": "1"})
    client.close()
    # librdkafka keeps producing across several session lifetimes (it re-authenticates, KIP-368).
    producer = Producer({"bootstrap.servers": address, **_confluent(pki, "SASL_PLAINTEXT", "SCRAM-SHA-512", "alice",
                                                                     "alice-secret")})
    for index in range(8):
        producer.produce("reauth", f"{index}".encode())
        assert producer.flush(10) == 0
        time.sleep(0.3)


@pytest.mark.timeout(30)
def test_frames_after_a_failed_bare_token_are_not_served_and_the_delay_holds(
        sasl_broker: TlsBroker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with _raw(sasl_broker.address("SASL_PLAINTEXT")) as sock:
        _send(sock, 17, 0, {"mechanism": "PLAIN"})
        (size,) = struct.unpack(">i", sock.recv(4))
        sock.recv(size)
        started = time.monotonic()
        for token in (b"\0carol\0wrong", b"\0carol\0carol-secret"):  # a second guess right behind the first
            sock.sendall(struct.pack(">i", len(token)) + token)
        assert _closed(sock)
        assert time.monotonic() - started >= 0.1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
