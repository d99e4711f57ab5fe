"""aiokafka against a real broker: produce with every codec, consume by assignment, end offsets."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

CODECS = [None, "gzip", "snappy", "lz4", "zstd"]


async def _produce_and_consume(bootstrap: str, topic: str, codec: str | None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=codec, acks="all", linger_ms=5)
    await producer.start()
    values = [f"aio-{codec}-{i}".encode() * 4 for i in range(1000)]
    try:
        futures = [await producer.send(topic, value=value, partition=0) for value in values]
        offsets = [(await future).offset for future in futures]
    finally:
        await producer.stop()
    assert offsets == list(range(1000))
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        received: list[bytes] = []
        async with asyncio.timeout(30):
            while len(received) < len(values):
                batch = await consumer.getmany(tp, timeout_ms=1000)
                received += [message.value for message in batch.get(tp, [])]
        assert received == values
        assert await consumer.end_offsets([tp]) == {tp: 1000}
        assert await consumer.beginning_offsets([tp]) == {tp: 0}
    finally:
        await consumer.stop()


@pytest.mark.parametrize("codec", CODECS)
def test_produce_and_consume_every_codec(oncelog_broker: str, topic_name: str, codec: str | None) -> None:
    asyncio.run(_produce_and_consume(oncelog_broker, topic_name, codec))
