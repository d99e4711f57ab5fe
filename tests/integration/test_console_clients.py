"""`oncelog produce` and `oncelog consume` as a user runs them, checked against real clients."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from oncelog.console_producer import key_partition

pytestmark = pytest.mark.timeout(120)


def oncelog(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oncelog", *args], input=stdin, capture_output=True, text=True,
                          timeout=60)


def _read_all(bootstrap: str, topic: str, expected: int) -> list[tuple[int, bytes | None, bytes | None, list[Any]]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False, "log_level": 0})
    consumer.subscribe([topic])
    found = []
    try:
        for _ in range(100):
            message = consumer.poll(0.3)
            if message is not None and message.error() is None:
                found.append((message.partition(), message.key(), message.value(), message.headers() or []))
            if len(found) >= expected:
                break
    finally:
        consumer.close()
    return found


def test_produce_sends_lines_with_keys_and_headers_where_kafka_would(oncelog_broker: str, topic_name: str) -> None:
    assert oncelog("topics", "create", topic_name, "--partitions", "4", "--bootstrap-server",
                   oncelog_broker).returncode == 0
    lines = "".join(f"source:cli,n:{index}\tkey-{index}\tvalue {index}\n" for index in range(40))
    produced = oncelog("produce", topic_name, "--bootstrap-server", oncelog_broker, "--property", "parse.key=true",
                       "--property", "parse.headers=true", "--compression-codec", "gzip", "--batch-size", "7",
                       stdin=lines)
    assert produced.returncode == 0, produced.stderr
    found = _read_all(oncelog_broker, topic_name, 40)
    assert sorted(value for _p, _k, value, _h in found) == sorted(f"value {i}".encode() for i in range(40))
    # The Java client's default partitioner (murmur2), as librdkafka's murmur2_random reproduces it.
    assert oncelog("topics", "create", topic_name + "-ref", "--partitions", "4", "--bootstrap-server",
                   oncelog_broker).returncode == 0
    reference = Producer({"bootstrap.servers": oncelog_broker, "partitioner": "murmur2_random", "log_level": 0})
    placed: dict[bytes, int] = {}
    for index in range(40):
        reference.produce(topic_name + "-ref", f"x{index}".encode(), key=f"key-{index}".encode(),
                          on_delivery=lambda _e, m: placed.__setitem__(m.key(), m.partition()))
    reference.flush(10)
    for partition, key, value, headers in found:
        assert key is not None and partition == key_partition(key, 4)
        assert value == f"value {key.decode().split('-')[1]}".encode()
        assert headers == [("source", b"cli"), ("n", key.split(b"-")[1])]
    assert len(placed) == 40 and all(partition == key_partition(key, 4) for key, partition in placed.items())


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_consume_reads_what_real_producers_compressed(oncelog_broker: str, topic_name: str, codec: str) -> None:
    producer = Producer({"bootstrap.servers": oncelog_broker, "compression.type": codec, "linger.ms": 20,
                         "log_level": 0})
    for index in range(50):
        producer.produce(topic_name, f"record {index}".encode(), key=b"k", headers={"h": b"v"}, partition=0)
    producer.flush(10)
    consumed = oncelog("consume", topic_name, "--bootstrap-server", oncelog_broker, "--from-beginning",
                       "--max-messages", "50", "--property", "print.key=true", "--property", "print.headers=true")
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.splitlines() == [f"h:v\tk\trecord {index}" for index in range(50)]
    assert "Processed a total of 50 messages" in consumed.stderr


def test_consume_read_committed_hides_aborted_and_open_transactions(oncelog_broker: str, topic_name: str) -> None:
    def transaction(transactional_id: str, values: list[str], commit: bool | None) -> Producer:
        producer = Producer({"bootstrap.servers": oncelog_broker, "transactional.id": transactional_id,
                             "log_level": 0})
        producer.init_transactions(10)
        producer.begin_transaction()
        for value in values:
            producer.produce(topic_name, value.encode(), partition=0)
        producer.flush(10)
        if commit is True:
            producer.commit_transaction(10)
        elif commit is False:
            producer.abort_transaction(10)
        return producer

    transaction("committer", ["c1", "c2"], True)
    transaction("aborter", ["a1", "a2"], False)
    transaction("committer", ["c3"], True)
    kept_open = transaction("undecided", ["o1"], None)
    plain = Producer({"bootstrap.servers": oncelog_broker, "log_level": 0})
    plain.produce(topic_name, b"p1", partition=0)
    plain.flush(10)

    def consume(isolation: str) -> list[str]:
        result = oncelog("consume", topic_name, "--bootstrap-server", oncelog_broker, "--from-beginning",
                         "--timeout-ms", "1500", "--isolation-level", isolation)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    assert consume("read_committed") == ["c1", "c2", "c3"]  # p1 lies after the open transaction's o1: not yet
    assert consume("read_uncommitted") == ["c1", "c2", "a1", "a2", "c3", "o1", "p1"]
    kept_open.commit_transaction(10)
    assert consume("read_committed") == ["c1", "c2", "c3", "o1", "p1"]


def test_consume_with_a_group_resumes_where_it_committed(oncelog_broker: str, topic_name: str) -> None:
    produced = oncelog("produce", topic_name, "--bootstrap-server", oncelog_broker,
                       stdin="".join(f"{index}\n" for index in range(10)))
    assert produced.returncode == 0, produced.stderr
    group = f"cli-{uuid.uuid4().hex[:6]}"
    first = oncelog("consume", topic_name, "--bootstrap-server", oncelog_broker, "--group", group,
                    "--from-beginning", "--max-messages", "4")
    assert first.returncode == 0 and first.stdout.split() == ["0", "1", "2", "3"], first.stderr
    described = oncelog("groups", "describe", group, "--bootstrap-server", oncelog_broker)
    assert described.returncode == 0 and f"{topic_name}" in described.stdout
    assert described.stdout.split("\n")[-2].split()[2:5] == ["4", "10", "6"]  # committed, end, lag
    rest = oncelog("consume", topic_name, "--bootstrap-server", oncelog_broker, "--group", group,
                   "--from-beginning", "--timeout-ms", "1500", "--output", "json")
    assert rest.returncode == 0, rest.stderr
    records = [json.loads(line) for line in rest.stdout.splitlines()]
    assert [(r["offset"], r["value"]) for r in records] == [(index, str(index)) for index in range(4, 10)]


def test_binary_values_in_json_and_the_error_paths(oncelog_broker: str, topic_name: str) -> None:
    producer = Producer({"bootstrap.servers": oncelog_broker, "log_level": 0})
    producer.produce(topic_name, b"\xff\x00binary", key=b"\xfe", partition=0)
    producer.flush(10)
    consumed = oncelog("consume", topic_name, "--bootstrap-server", oncelog_broker, "--from-beginning",
                       "--max-messages", "1", "--output", "json")
    [record] = [json.loads(line) for line in consumed.stdout.splitlines()]
    assert record["value_base64"] == "/wBiaW5hcnk=" and record["key_base64"] == "/g==" and "value" not in record

    missing = oncelog("consume", "no-such-topic", "--bootstrap-server", oncelog_broker, "--timeout-ms", "100")
    assert missing.returncode == 1 and "topic 'no-such-topic' does not exist" in missing.stderr
    no_partition = oncelog("consume", topic_name, "--bootstrap-server", oncelog_broker, "--partition", "9")
    assert no_partition.returncode == 1 and "no partition 9" in no_partition.stderr
    bad_property = oncelog("produce", topic_name, "--bootstrap-server", oncelog_broker, "--property", "parse.key=yes",
                           stdin="x\n")
    assert bad_property.returncode == 2 and "true or false" in bad_property.stderr
    unparsable = oncelog("produce", topic_name, "--bootstrap-server", oncelog_broker, "--property", "parse.key=true",
                         stdin="no separator here\n")
    assert unparsable.returncode == 1 and "no key separator" in unparsable.stderr
    offset_alone = oncelog("consume", topic_name, "--bootstrap-server", oncelog_broker, "--offset", "3")
    assert offset_alone.returncode == 2 and "--offset needs --partition" in offset_alone.stderr
    unreachable = oncelog("produce", topic_name, "--bootstrap-server", "127.0.0.1:1", stdin="x\n")
    assert unreachable.returncode == 1 and "cannot connect to 127.0.0.1:1" in unreachable.stderr


def test_produce_rides_out_a_broker_restart_without_losing_or_duplicating(tmp_path: Path) -> None:
    """Found: after a lost connection the producer retried on the dead one and gave up."""
    import socket

    from oncelog.testing import BrokerProcess

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    broker = BrokerProcess(tmp_path / "d", {"listeners": f"PLAINTEXT://127.0.0.1:{port}"})
    bootstrap = broker.start()
    try:
        producer = subprocess.Popen([sys.executable, "-m", "oncelog", "produce", "restarts", "--bootstrap-server",
                                     bootstrap], stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert producer.stdin is not None
        producer.stdin.write("before\n")
        producer.stdin.flush()
        assert [v for _p, _k, v, _h in _read_all(bootstrap, "restarts", 1)] == [b"before"]
        broker.kill()
        broker.start()
        producer.stdin.write("after\n")
        producer.stdin.close()
        assert producer.wait(60) == 0, producer.stderr.read() if producer.stderr else ""
        consumed = oncelog("consume", "restarts", "--bootstrap-server", bootstrap, "--from-beginning",
                           "--timeout-ms", "1500")
        assert consumed.stdout.splitlines() == ["before", "after"], consumed.stderr
    finally:
        broker.terminate()


def test_produce_sizes_batches_by_bytes_too(oncelog_broker: str, topic_name: str) -> None:
    """600 lines of 4 KB made one 2.4 MB batch, over message.max.bytes: refused, then a traceback."""
    lines = "".join(f"{index:04d}" + "x" * 4000 + "\n" for index in range(600))
    produced = oncelog("produce", topic_name, "--bootstrap-server", oncelog_broker, stdin=lines)
    assert produced.returncode == 0, produced.stderr
    consumed = oncelog("consume", topic_name, "--bootstrap-server", oncelog_broker, "--from-beginning",
                       "--max-messages", "600")
    assert [line[:4] for line in consumed.stdout.splitlines()] == [f"{index:04d}" for index in range(600)]
    too_big = oncelog("produce", topic_name, "--bootstrap-server", oncelog_broker, stdin="y" * 2_000_000 + "\n")
    assert too_big.returncode == 1 and "MESSAGE_TOO_LARGE" in too_big.stderr and "Traceback" not in too_big.stderr
