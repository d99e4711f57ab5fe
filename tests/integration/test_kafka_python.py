"""kafka-python against a real broker: admin, produce with every codec, consume by assignment, offsets."""

from __future__ import annotations

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

CODECS = [None, "gzip", "snappy", "lz4", "zstd"]


def _producer(bootstrap: str, **config: object) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, **config)


def _consume(bootstrap: str, topic: str, count: int, partition: int = 0) -> list[tuple[int, bytes]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=20_000)
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    received = []
    for message in consumer:
        received.append((message.offset, message.value))
        if len(received) >= count:
            break
    consumer.close()
    return received


def test_admin_create_and_delete(oncelog_broker: str, topic_name: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=oncelog_broker)
    admin.create_topics([NewTopic(topic_name, num_partitions=2, replication_factor=1)])
    assert topic_name in admin.list_topics()
    admin.delete_topics([topic_name])
    assert topic_name not in admin.list_topics()
    admin.close()


@pytest.mark.parametrize("codec", CODECS)
def test_produce_and_consume_every_codec(oncelog_broker: str, topic_name: str, codec: str | None) -> None:
    producer = _producer(oncelog_broker, compression_type=codec, acks="all", enable_idempotence=False)
    values = [f"kp-{codec}-{i}".encode() * 4 for i in range(1000)]
    futures = [producer.send(topic_name, value=value, partition=0) for value in values]
    producer.flush(30)
    offsets = [future.get(10).offset for future in futures]
    producer.close()
    assert offsets == list(range(1000))
    received = _consume(oncelog_broker, topic_name, 1000)
    assert [value for _offset, value in received] == values


def test_end_offsets_and_offsets_for_times(oncelog_broker: str, topic_name: str) -> None:
    producer = _producer(oncelog_broker, acks=1, enable_idempotence=False)
    for i in range(6):
        producer.send(topic_name, value=b"x", partition=0, timestamp_ms=5_000 + i).get(10)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=oncelog_broker)
    tp = TopicPartition(topic_name, 0)
    assert consumer.end_offsets([tp]) == {tp: 6}
    assert consumer.beginning_offsets([tp]) == {tp: 0}
    found = consumer.offsets_for_times({tp: 5_003})
    assert found[tp] is not None and found[tp].offset == 3
    consumer.close()
