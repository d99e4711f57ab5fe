"""`__transaction_state` records in Kafka's format: TransactionLogKey v0 (`int16 0, string id`) and
TransactionLogValue v0 (producer id, epoch, timeout, state id, nullable partitions by topic, last update
and start timestamps). Partitions are null for Empty, the set for Ongoing/Prepare*, empty for Complete*."""

from __future__ import annotations

import struct
from collections import defaultdict

from .state import TopicPartition, TransactionState, TransactionValue

KEY_VERSION = 0
VALUE_VERSION = 0
_VALUE_HEAD = struct.Struct(">hqhib")


def transaction_key(transactional_id: str) -> bytes:
    encoded = transactional_id.encode()
    return struct.pack(">hh", KEY_VERSION, len(encoded)) + encoded


def parse_transaction_key(data: bytes) -> str:
    version, length = struct.unpack_from(">hh", data)
    if version != KEY_VERSION or length < 0 or 4 + length > len(data):
        raise ValueError(f"not a transaction log key (version {version})")
    return data[4 : 4 + length].decode()


def transaction_value(value: TransactionValue) -> bytes:
    out = bytearray(_VALUE_HEAD.pack(VALUE_VERSION, value.producer_id, value.producer_epoch, value.timeout_ms,
                                     value.state.id))
    if value.state == TransactionState.EMPTY:
        out += struct.pack(">i", -1)
    else:
        by_topic: dict[str, list[int]] = defaultdict(list)
        for topic, partition in sorted(value.partitions):
            by_topic[topic].append(partition)
        out += struct.pack(">i", len(by_topic))
        for topic, partitions in by_topic.items():
            encoded = topic.encode()
            out += struct.pack(">h", len(encoded)) + encoded
            out += struct.pack(f">i{len(partitions)}i", len(partitions), *partitions)
    out += struct.pack(">qq", value.last_update_ms, value.start_ms)
    return bytes(out)


def parse_transaction_value(data: bytes) -> TransactionValue:
    version, producer_id, epoch, timeout_ms, state_id = _VALUE_HEAD.unpack_from(data)
    if version not in (0, 1):
        raise ValueError(f"unknown transaction log value version {version}")
    position = _VALUE_HEAD.size
    (topics,) = struct.unpack_from(">i", data, position)
    position += 4
    partitions: set[TopicPartition] = set()
    for _ in range(max(topics, 0)):
        (length,) = struct.unpack_from(">h", data, position)
        topic = data[position + 2 : position + 2 + length].decode()
        position += 2 + length
        (count,) = struct.unpack_from(">i", data, position)
        partitions.update((topic, p) for p in struct.unpack_from(f">{count}i", data, position + 4))
        position += 4 + 4 * count
    last_update_ms, start_ms = struct.unpack_from(">qq", data, position)
    return TransactionValue(producer_id, epoch, timeout_ms, TransactionState.from_id(state_id),
                            frozenset(partitions), last_update_ms, start_ms)
