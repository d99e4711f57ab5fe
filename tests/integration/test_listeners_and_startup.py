"""Where the broker listens, what it tells clients, and what it says when it cannot start.

Found by outside testers: a data directory that cannot be written was reported as "cannot listen on
HOST:PORT", a corrupt topics.json gave a raw traceback, and `--host 0.0.0.0` advertised 0.0.0.0 to
clients. Kafka's `listeners` and `advertised.listeners` let a broker bind one address and advertise
another; each client is told the address of the listener it came through.
"""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Producer

from oncelog.broker import Broker
from oncelog.client import KafkaClient
from oncelog.config import broker_config
from oncelog.coordinator.runtime import ManualScheduler
from oncelog.fs import OS_FILE_SYSTEM, Fault, FaultPlan, FaultyFileSystem
from oncelog.log.manager import DataDirError
from oncelog.testing import BrokerProcess, embedded_broker


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oncelog", "serve", "--port", "0", *args], capture_output=True,
                          text=True, timeout=60)


def _metadata_brokers(bootstrap: str) -> list[tuple[str, int]]:
    with KafkaClient(bootstrap) as client:
        response = client.request(3, 12, {"topics": [], "allow_auto_topic_creation": False,
                                          "include_topic_authorized_operations": False})
    return [(broker.host, int(broker.port)) for broker in response.brokers]


def test_a_data_directory_that_cannot_be_used_is_named_not_blamed_on_the_port(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = _serve("--data-dir", str(blocker / "data"))
    assert result.returncode == 1, result.stderr
    assert f"cannot use data directory {blocker / 'data'}" in result.stderr
    assert "Not a directory" in result.stderr and "listen" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_read_only_data_directory_says_so(tmp_path: Path) -> None:
    """Through the file-system seam (root ignores permission bits): every write refused with EROFS."""
    plan = FaultPlan()
    for operation in ("mkdir", "open", "write", "rename"):
        plan.add(Fault(operation, error=errno.EROFS, repeat=True))
    broker = Broker(broker_config({}, data_dir=tmp_path / "data"), fs=FaultyFileSystem(OS_FILE_SYSTEM, plan))
    scheduler = ManualScheduler()
    with pytest.raises(DataDirError, match="Read-only file system"):
        broker.start(scheduler, lambda log, offset, callback: callback(True))


def test_a_corrupt_topics_file_is_named_with_what_to_do(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "topics.json").write_text('{"orders": {"id": "not-a-uuid", "partitions": 3}')
    result = _serve("--data-dir", str(data))
    assert result.returncode == 1
    assert f"{data / 'topics.json'} is corrupt" in result.stderr and "backup" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_is_reported_as_such(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        result = subprocess.run([sys.executable, "-m", "oncelog", "serve", "--port", str(port), "--data-dir",
                                 str(tmp_path / "d")], capture_output=True, text=True, timeout=60)
    finally:
        holder.close()
    assert result.returncode == 1
    assert f"cannot listen on PLAINTEXT://127.0.0.1:{port}" in result.stderr and "in use" in result.stderr


def test_binding_every_interface_advertises_this_host_not_0_0_0_0(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "d", {"listeners": "PLAINTEXT://0.0.0.0:0"}) as broker:
        port = int(broker.bootstrap.rsplit(":", 1)[1])
        brokers = _metadata_brokers(f"127.0.0.1:{port}")
    assert brokers == [(socket.getfqdn(), port)]


def test_advertised_listeners_tell_clients_another_address(tmp_path: Path) -> None:
    """Two listeners; the EXTERNAL one advertises a name clients outside would use. A client is told the
    address of the listener it connected through."""
    internal_port = _free_port()
    with BrokerProcess(tmp_path / "d", {
        "listeners": f"EXTERNAL://127.0.0.1:0,INTERNAL://127.0.0.1:{internal_port}",
        "advertised.listeners": "EXTERNAL://kafka.example.com:19092",
        "listener.security.protocol.map": "EXTERNAL:PLAINTEXT,INTERNAL:PLAINTEXT",
    }) as broker:
        external = broker.bootstrap
        assert _metadata_brokers(external) == [("kafka.example.com", 19092)]
        assert _metadata_brokers(f"127.0.0.1:{internal_port}") == [("127.0.0.1", internal_port)]
        producer = Producer({"bootstrap.servers": f"127.0.0.1:{internal_port}"})
        producer.produce("via-internal", value=b"x")
        assert producer.flush(15) == 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(("overrides", "message"), [
    ({"advertised.listeners": "PLAINTEXT://0.0.0.0:9092"}, "nonroutable meta-address 0.0.0.0"),
    ({"listeners": "SSL://127.0.0.1:0"}, "uses TLS but has no certificate: set ssl.keystore.location"),
    ({"listeners": "PLAINTEXT://127.0.0.1:0,PLAINTEXT://127.0.0.1:0"}, "listener names must be unique"),
    ({"listeners": "INTERNAL://127.0.0.1:0"}, "INTERNAL has no security protocol"),
    ({"advertised.listeners": "OTHER://host:1"}, "OTHER, which is not in listeners"),
    ({"listeners": "localhost:9092"}, "is not NAME://HOST:PORT"),
])
def test_listener_mistakes_are_configuration_errors(tmp_path: Path, overrides: dict[str, str], message: str) -> None:
    args = [arg for key, value in overrides.items() for arg in ("--override", f"{key}={value}")]
    result = subprocess.run([sys.executable, "-m", "oncelog", "serve", "--data-dir", str(tmp_path / "d"), *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_host_and_listeners_together_are_refused(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "oncelog", "serve", "--host", "0.0.0.0", "--data-dir",
                             str(tmp_path / "d"), "--override", "listeners=PLAINTEXT://127.0.0.1:0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "use one of them" in result.stderr


def test_embedded_broker_metadata_points_at_itself() -> None:
    with embedded_broker() as bootstrap:
        host, port = bootstrap.rsplit(":", 1)
        assert _metadata_brokers(bootstrap) == [(host, int(port))]
