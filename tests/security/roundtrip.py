"""One transactional round trip per client library, for every security configuration the tests try:
three records committed in a transaction (after an aborted one, with confluent-kafka) and read back
read_committed. Each returns what the reader was handed (expected: `EXPECTED`)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import kafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, Producer, TopicPartition

EXPECTED = [b"v0", b"v1", b"v2"]


def read_committed(bootstrap: str, topic: str, count: int, config: dict[str, Any]) -> list[bytes]:
    """Up to `count` values of partition 0 from its start, read_committed, within 20 s (confluent-kafka)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4()}", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed", **config})
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + 20
    try:
        while len(values) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(message.value() or b"")
    finally:
        consumer.close()
    return values


def confluent_kafka(bootstrap: str, config: dict[str, Any], topic: str) -> list[bytes]:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"tx-{uuid.uuid4()}", **config})
    producer.init_transactions(15)
    producer.begin_transaction()
    producer.produce(topic, b"aborted", partition=0)
    producer.abort_transaction(15)
    producer.begin_transaction()
    for index in range(3):
        producer.produce(topic, f"v{index}".encode(), partition=0)
    producer.commit_transaction(15)
    return read_committed(bootstrap, topic, 3, config)


def kafka_python(bootstrap: str, settings: dict[str, Any], topic: str) -> list[bytes]:
    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"tx-{uuid.uuid4()}", **settings)
    producer.init_transactions()
    producer.begin_transaction()
    for index in range(3):
        producer.send(topic, f"v{index}".encode(), partition=0)
    producer.commit_transaction()
    producer.close()
    consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                                   auto_offset_reset="earliest", consumer_timeout_ms=10_000, **settings)
    consumer.assign([kafka.TopicPartition(topic, 0)])
    values = [message.value for _index, message in zip(range(3), consumer, strict=False)]
    consumer.close()
    return values


def aiokafka(bootstrap: str, settings: dict[str, Any], topic: str) -> list[bytes]:
    async def run() -> list[bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"tx-{uuid.uuid4()}", **settings)
        await producer.start()
        try:
            async with producer.transaction():
                for index in range(3):
                    await producer.send(topic, f"v{index}".encode(), partition=0)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                                    auto_offset_reset="earliest", **settings)
        await consumer.start()
        try:
            consumer.assign([kafka.TopicPartition(topic, 0)])
            batches = await consumer.getmany(timeout_ms=10_000, max_records=3)
            return [message.value or b"" for messages in batches.values() for message in messages]
        finally:
            await consumer.stop()

    return asyncio.run(run())
