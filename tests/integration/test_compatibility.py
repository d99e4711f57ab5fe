"""Behaviours real clients depend on that their own test suites found missing (each failed before its fix)."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

pytestmark = pytest.mark.timeout(60)


def test_an_out_of_range_fetch_lets_librdkafka_reset_its_offset(oncelog_broker: str, topic_name: str) -> None:
    """A Fetch answering OFFSET_OUT_OF_RANGE carried `records: null`; librdkafka rejected the whole
    response ("invalid MessageSetSize -1") and never applied auto.offset.reset: the consumer was stuck."""
    producer = Producer({"bootstrap.servers": oncelog_broker, "log_level": 0})
    for index in range(5):
        producer.produce(topic_name, f"r{index}".encode(), partition=0)
    producer.flush(10)
    consumer = Consumer({"bootstrap.servers": oncelog_broker, "group.id": "reset", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "log_level": 0})
    consumer.assign([TopicPartition(topic_name, 0, 1000)])  # far past the end
    values = []
    deadline = time.monotonic() + 30
    try:
        while len(values) < 5 and time.monotonic() < deadline:
            message = consumer.poll(0.3)
            if message is not None and message.error() is None:
                values.append(message.value())
    finally:
        consumer.close()
    assert values == [f"r{index}".encode() for index in range(5)]
