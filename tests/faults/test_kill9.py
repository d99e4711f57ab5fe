"""SIGKILL the broker process under acks=all load: every acknowledged record is there after restart."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from oncelog.testing import BrokerProcess
from tests.helpers import create_topic


def _read_all(bootstrap: str, topic: str, partitions: int) -> dict[int, list[tuple[int, bytes]]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "audit", "enable.partition.eof": True,
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    result: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(partitions)}
    at_end: set[int] = set()
    deadline = time.monotonic() + 60
    while len(at_end) < partitions and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error() is not None:
            assert message.error().code() == KafkaError._PARTITION_EOF, message.error()
            at_end.add(message.partition())
            continue
        result[message.partition()].append((message.offset(), message.value()))
    consumer.close()
    assert len(at_end) == partitions, "consumer never reached the end of every partition"
    return result


def test_acknowledged_records_survive_kill_9(tmp_path: Path, topic_name: str) -> None:
    partitions = 3
    broker = BrokerProcess(tmp_path / "data")
    bootstrap = broker.start()
    try:
        create_topic(bootstrap, topic_name, partitions)
        acknowledged: set[bytes] = set()
        lock = threading.Lock()
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 1,
                             "message.timeout.ms": 5000, "retries": 0})

        def delivered(error: object, message: object) -> None:
            if error is None:
                with lock:
                    acknowledged.add(message.value())  # type: ignore[attr-defined]

        sent = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with lock:
                if len(acknowledged) >= 20_000:
                    break
            producer.produce(topic_name, value=f"record-{sent:08d}".encode() * 8, on_delivery=delivered)
            sent += 1
            if sent % 500 == 0:
                producer.poll(0)
        broker.kill()
        producer.flush(10)  # whatever is still in flight fails or was acknowledged before the kill
        with lock:
            acked = set(acknowledged)
        assert len(acked) >= 20_000

        bootstrap = broker.start()
        stored = _read_all(bootstrap, topic_name, partitions)
        values = [value for records in stored.values() for _offset, value in records]
        missing = acked - set(values)
        assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:3]}"
        assert len(values) == len(set(values)), "a record is stored twice"
        for records in stored.values():
            assert [offset for offset, _value in records] == list(range(len(records)))
        # The restarted broker keeps accepting writes after recovery.
        check = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        check.produce(topic_name, value=b"after-restart", partition=0)
        assert check.flush(15) == 0
    finally:
        if broker.process is not None:
            broker.terminate()
