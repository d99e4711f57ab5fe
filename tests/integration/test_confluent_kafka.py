"""confluent-kafka (librdkafka) against a real broker over TCP: admin, produce with every codec and
acks level, consume by assignment, watermarks, offsets by timestamp, restart and read back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from oncelog.testing import embedded_broker
from tests.helpers import create_topic

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def produce(bootstrap: str, topic: str, values: list[bytes], **config: object) -> list[int]:
    """Produce `values` to partition 0 and return their offsets (every delivery must succeed)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **config})
    offsets: list[int] = []
    errors: list[object] = []

    def delivered(error: object, message: object) -> None:
        if error is not None:
            errors.append(error)
        else:
            offsets.append(message.offset())  # type: ignore[attr-defined]

    for value in values:
        producer.produce(topic, value=value, key=b"k" + value[:4], partition=0, on_delivery=delivered)
    assert producer.flush(30) == 0
    assert not errors, errors
    return offsets


def consume(bootstrap: str, topic: str, count: int, partition: int = 0, offset: int = 0,
            isolation: str = "read_uncommitted") -> list[tuple[int, bytes]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False,
                         "isolation.level": isolation})
    consumer.assign([TopicPartition(topic, partition, offset)])
    received: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + 30
    while len(received) < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        assert message.error() is None or message.error().code() == KafkaError._PARTITION_EOF, message.error()
        if message.error() is None:
            received.append((message.offset(), message.value()))
    consumer.close()
    return received


def test_admin_creates_describes_and_deletes_topics(oncelog_broker: str, topic_name: str) -> None:
    """CreateTopics goes to the controller from Metadata; a controller id of -1 would hang librdkafka."""
    admin = AdminClient({"bootstrap.servers": oncelog_broker})
    futures = admin.create_topics([NewTopic(topic_name, num_partitions=3, replication_factor=1)])
    futures[topic_name].result(15)
    metadata = admin.list_topics(timeout=10)
    assert len(metadata.topics[topic_name].partitions) == 3
    duplicate = admin.create_topics([NewTopic(topic_name, num_partitions=1, replication_factor=1)])
    with pytest.raises(Exception, match=r"TOPIC_ALREADY_EXISTS|already exists"):
        duplicate[topic_name].result(15)
    admin.delete_topics([topic_name])[topic_name].result(15)
    assert topic_name not in admin.list_topics(timeout=10).topics


@pytest.mark.parametrize("codec", CODECS)
def test_produce_and_consume_every_codec(oncelog_broker: str, topic_name: str, codec: str) -> None:
    values = [f"{codec}-{i:05d}-".encode() * 8 for i in range(2000)]
    offsets = produce(oncelog_broker, topic_name, values, **{"compression.codec": codec, "acks": "all"})
    assert sorted(offsets) == list(range(2000))
    received = consume(oncelog_broker, topic_name, 2000)
    assert [value for _offset, value in received] == values
    assert [offset for offset, _value in received] == list(range(2000))


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_every_acks_level(oncelog_broker: str, topic_name: str, acks: str) -> None:
    values = [f"acks{acks}-{i}".encode() for i in range(300)]
    producer = Producer({"bootstrap.servers": oncelog_broker, "acks": acks, "linger.ms": 2})
    for value in values:
        producer.produce(topic_name, value=value, partition=0)
    assert producer.flush(30) == 0
    received = consume(oncelog_broker, topic_name, len(values))
    assert [value for _offset, value in received] == values


def test_watermarks_and_offsets_for_times(oncelog_broker: str, topic_name: str) -> None:
    producer = Producer({"bootstrap.servers": oncelog_broker, "linger.ms": 0})
    for i in range(10):
        producer.produce(topic_name, value=b"v", partition=0, timestamp=1_000_000 + i * 1000)
        producer.flush(10)
    consumer = Consumer({"bootstrap.servers": oncelog_broker, "group.id": "unused", "enable.auto.commit": False})
    assert consumer.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=10) == (0, 10)
    found = consumer.offsets_for_times([TopicPartition(topic_name, 0, 1_004_500)], timeout=10)
    assert found[0].offset == 5
    beyond = consumer.offsets_for_times([TopicPartition(topic_name, 0, 9_999_999_999)], timeout=10)
    assert beyond[0].offset == -1  # no such record: librdkafka reports OFFSET_END
    consumer.close()


def test_data_survives_a_clean_restart(tmp_path: Path, topic_name: str) -> None:
    values = [f"restart-{i}".encode() for i in range(500)]
    with embedded_broker(tmp_path) as bootstrap:
        produce(bootstrap, topic_name, values, acks="all")
    with embedded_broker(tmp_path) as bootstrap:
        received = consume(bootstrap, topic_name, len(values))
        assert [value for _offset, value in received] == values
        produce(bootstrap, topic_name, [b"after"], acks="all")
        assert consume(bootstrap, topic_name, 1, offset=500) == [(500, b"after")]


def test_log_append_time_topic(oncelog_broker: str, topic_name: str) -> None:
    create_topic(oncelog_broker, topic_name, configs={"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    produce(oncelog_broker, topic_name, [b"x"], acks="all")
    consumer = Consumer({"bootstrap.servers": oncelog_broker, "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic_name, 0, 0)])
    message = None
    deadline = time.monotonic() + 20
    while message is None and time.monotonic() < deadline:
        message = consumer.poll(0.5)
    assert message is not None and message.error() is None
    timestamp_type, timestamp = message.timestamp()
    consumer.close()
    assert timestamp_type == 2  # TIMESTAMP_LOG_APPEND_TIME
    assert before - 5 <= timestamp <= int(time.time() * 1000) + 5
