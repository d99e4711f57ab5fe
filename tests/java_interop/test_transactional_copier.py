"""Kafka's own exactly-once recipe, the one its system tests run (TransactionalMessageCopier): Java
copiers consume an input partition and produce to an output topic transactionally, committing their
input offsets in the same transaction (sendOffsetsToTransaction with the consumer's group metadata),
aborting some transactions at random. They are SIGKILLed and restarted, and the broker is SIGKILLed and
restarted once; afterwards a read_committed consumer must find every input value in the output exactly
once."""

from __future__ import annotations

import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from oncelog.testing import BrokerProcess

from .conftest import KafkaJava

pytestmark = pytest.mark.timeout(300)

COPIER = "org.apache.kafka.tools.TransactionalMessageCopier"
PARTITIONS = 2
PER_PARTITION = 3000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _copier(kafka_java: KafkaJava, bootstrap: str, partition: int) -> subprocess.Popen[str]:
    return kafka_java.start(COPIER, "--broker-list", bootstrap, "--input-topic", "input", "--input-partition",
                            str(partition), "--output-topic", "output", "--transactional-id", f"copier-{partition}",
                            "--consumer-group", "copiers", "--transaction-size", "40", "--transaction-timeout",
                            "10000", "--enable-random-aborts", "--use-group-metadata")


def _output_end(bootstrap: str) -> int:
    """Offsets written to the output so far (records, markers, aborted ones: progress, not a result)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "progress", "log_level": 0})
    try:
        return sum(consumer.get_watermark_offsets(TopicPartition("output", p), timeout=10)[1]
                   for p in range(PARTITIONS))
    except Exception:  # the broker is restarting: no progress to report yet
        return 0
    finally:
        consumer.close()


def _committed_output(bootstrap: str, expected: int) -> Counter[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "audit", "isolation.level": "read_committed",
                         "auto.offset.reset": "earliest", "enable.partition.eof": True, "log_level": 0})
    consumer.assign([TopicPartition("output", p, 0) for p in range(PARTITIONS)])
    seen: Counter[bytes] = Counter()
    at_end: set[int] = set()
    deadline = time.monotonic() + 60
    while (len(at_end) < PARTITIONS or sum(seen.values()) < expected) and time.monotonic() < deadline:
        for message in consumer.consume(500, 0.5):
            if message.error() is not None:
                if message.partition() is not None:
                    at_end.add(message.partition())
                continue
            seen[message.value() or b""] += 1
    consumer.close()
    return seen


def test_killed_copiers_and_a_killed_broker_copy_every_record_exactly_once(kafka_java: KafkaJava,
                                                                            tmp_path: Path) -> None:
    port = _free_port()
    broker = BrokerProcess(tmp_path / "data", {"listeners": f"PLAINTEXT://127.0.0.1:{port}",
                                               "group.initial.rebalance.delay.ms": "0"})
    bootstrap = broker.start()
    copiers: dict[int, subprocess.Popen[str]] = {}
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for name in ("input", "output"):
            admin.create_topics([NewTopic(name, PARTITIONS)])[name].result(15)
        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "log_level": 0})
        for partition in range(PARTITIONS):
            for index in range(PER_PARTITION):
                producer.produce("input", f"{partition}-{index}".encode(), partition=partition)
        assert producer.flush(30) == 0
        copiers = {p: _copier(kafka_java, bootstrap, p) for p in range(PARTITIONS)}
        killed = 0
        for bounce in range(3):
            # Kill in the middle of the work: once the copiers have moved a little further.
            target = (bounce + 1) * PARTITIONS * PER_PARTITION // 5
            deadline = time.monotonic() + 60
            while _output_end(bootstrap) < target and time.monotonic() < deadline:
                time.sleep(0.05)
            if bounce == 1:  # the broker once: acknowledged transactions must survive it
                broker.kill()
                broker.start()
            for partition, copier in copiers.items():
                if copier.poll() is None:
                    copier.kill()
                    copier.wait(30)
                    killed += 1
                    copiers[partition] = _copier(kafka_java, bootstrap, partition)
        assert killed >= 4, "the copiers finished before they could be killed: give them more to copy"
        for partition, copier in copiers.items():
            try:
                stdout, stderr = copier.communicate(timeout=180)
            except subprocess.TimeoutExpired:
                copier.kill()
                stdout, stderr = copier.communicate()
            assert copier.returncode == 0, f"copier {partition}: {stdout[-2000:]}{stderr[-2000:]}"
        seen = _committed_output(bootstrap, PARTITIONS * PER_PARTITION)
        expected = {f"{p}-{i}".encode() for p in range(PARTITIONS) for i in range(PER_PARTITION)}
        missing = expected - set(seen)
        duplicated = {value: count for value, count in seen.items() if count > 1}
        assert not missing and not duplicated and set(seen) == expected, (
            f"{len(missing)} missing, {len(duplicated)} duplicated, e.g. {sorted(missing)[:5]} {list(duplicated)[:5]}")
    finally:
        for copier in copiers.values():
            if copier.poll() is None:
                copier.kill()
        broker.terminate()
