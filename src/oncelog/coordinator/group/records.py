"""`__consumer_offsets` record keys and values, in Kafka's formats (`GroupCoordinatorRecordHelpers`).

Keys: OffsetCommitKey (version 1: group, topic, partition) and GroupMetadataKey (version 2: group).
Values: OffsetCommitValue v3 (offset, leader epoch, metadata, commit timestamp) and GroupMetadataValue v3
(protocol type, generation, protocol, leader, state timestamp, members with subscription and assignment).
A null value is a tombstone. Matching Kafka's bytes keeps `kafka-dump-log`-style tooling meaningful and
makes the topic's compaction keys the same as Kafka's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

OFFSET_COMMIT_KEY_VERSION = 1
GROUP_METADATA_KEY_VERSION = 2
OFFSET_COMMIT_VALUE_VERSION = 3
GROUP_METADATA_VALUE_VERSION = 3


class _Writer:
    def __init__(self) -> None:
        self.data = bytearray()

    def int16(self, value: int) -> _Writer:
        self.data += struct.pack(">h", value)
        return self

    def int32(self, value: int) -> _Writer:
        self.data += struct.pack(">i", value)
        return self

    def int64(self, value: int) -> _Writer:
        self.data += struct.pack(">q", value)
        return self

    def string(self, value: str | None) -> _Writer:
        if value is None:
            return self.int16(-1)
        encoded = value.encode()
        self.int16(len(encoded))
        self.data += encoded
        return self

    def bytes(self, value: bytes | None) -> _Writer:
        if value is None:
            return self.int32(-1)
        self.int32(len(value))
        self.data += value
        return self


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def _take(self, size: int) -> bytes:
        if size < 0 or self.position + size > len(self.data):
            raise ValueError("record field runs past the end")
        chunk = self.data[self.position : self.position + size]
        self.position += size
        return chunk

    def int16(self) -> int:
        return int(struct.unpack(">h", self._take(2))[0])

    def int32(self) -> int:
        return int(struct.unpack(">i", self._take(4))[0])

    def int64(self) -> int:
        return int(struct.unpack(">q", self._take(8))[0])

    def string(self) -> str | None:
        length = self.int16()
        return None if length < 0 else self._take(length).decode()

    def bytes(self) -> bytes | None:
        length = self.int32()
        return None if length < 0 else self._take(length)


@dataclass(frozen=True, slots=True)
class OffsetKey:
    group_id: str
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class GroupKey:
    group_id: str


@dataclass(frozen=True, slots=True)
class OffsetValue:
    offset: int
    leader_epoch: int
    metadata: str
    commit_timestamp_ms: int


@dataclass(frozen=True, slots=True)
class MemberValue:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    subscription: bytes
    assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupValue:
    protocol_type: str
    generation_id: int
    protocol_name: str | None
    leader_id: str | None
    state_timestamp_ms: int
    members: tuple[MemberValue, ...]


def offset_key(group_id: str, topic: str, partition: int) -> bytes:
    return bytes(_Writer().int16(OFFSET_COMMIT_KEY_VERSION).string(group_id).string(topic).int32(partition).data)


def group_key(group_id: str) -> bytes:
    return bytes(_Writer().int16(GROUP_METADATA_KEY_VERSION).string(group_id).data)


def offset_value(value: OffsetValue) -> bytes:
    writer = _Writer().int16(OFFSET_COMMIT_VALUE_VERSION).int64(value.offset).int32(value.leader_epoch)
    return bytes(writer.string(value.metadata).int64(value.commit_timestamp_ms).data)


def group_value(value: GroupValue) -> bytes:
    writer = _Writer().int16(GROUP_METADATA_VALUE_VERSION).string(value.protocol_type).int32(value.generation_id)
    writer.string(value.protocol_name).string(value.leader_id).int64(value.state_timestamp_ms)
    writer.int32(len(value.members))
    for member in value.members:
        writer.string(member.member_id).string(member.group_instance_id).string(member.client_id)
        writer.string(member.client_host).int32(member.rebalance_timeout_ms).int32(member.session_timeout_ms)
        writer.bytes(member.subscription).bytes(member.assignment)
    return bytes(writer.data)


def parse_key(data: bytes) -> OffsetKey | GroupKey:
    reader = _Reader(data)
    version = reader.int16()
    if version in (0, 1):
        return OffsetKey(reader.string() or "", reader.string() or "", reader.int32())
    if version == GROUP_METADATA_KEY_VERSION:
        return GroupKey(reader.string() or "")
    raise ValueError(f"unknown __consumer_offsets key version {version}")


def parse_offset_value(data: bytes) -> OffsetValue:
    reader = _Reader(data)
    version = reader.int16()
    if version not in (0, 1, 2, 3):
        raise ValueError(f"unknown offset commit value version {version}")
    offset = reader.int64()
    leader_epoch = reader.int32() if version >= 3 else -1
    metadata = reader.string() or ""
    commit_timestamp = reader.int64()
    return OffsetValue(offset, leader_epoch, metadata, commit_timestamp)


def parse_group_value(data: bytes) -> GroupValue:
    reader = _Reader(data)
    version = reader.int16()
    if version not in (0, 1, 2, 3):
        raise ValueError(f"unknown group metadata value version {version}")
    protocol_type = reader.string() or ""
    generation_id = reader.int32()
    protocol_name = reader.string()
    leader_id = reader.string()
    state_timestamp = reader.int64() if version >= 2 else -1
    members = []
    for _ in range(reader.int32()):
        member_id = reader.string() or ""
        instance_id = reader.string() if version >= 3 else None
        client_id = reader.string() or ""
        client_host = reader.string() or ""
        rebalance_timeout = reader.int32() if version >= 1 else -1
        session_timeout = reader.int32()
        subscription = reader.bytes() or b""
        assignment = reader.bytes() or b""
        members.append(MemberValue(member_id, instance_id, client_id, client_host, rebalance_timeout,
                                   session_timeout, subscription, assignment))
    return GroupValue(protocol_type, generation_id, protocol_name, leader_id, state_timestamp, tuple(members))


def java_string_hash(value: str) -> int:
    """Java's `String.hashCode` (over UTF-16 code units, int32 arithmetic)."""
    h = 0
    encoded = value.encode("utf-16-be")
    for index in range(0, len(encoded), 2):
        h = (31 * h + ((encoded[index] << 8) | encoded[index + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def partition_for(key: str, partitions: int) -> int:
    """Kafka's `Utils.abs(key.hashCode()) % partitions` (abs of Integer.MIN_VALUE is 0)."""
    h = java_string_hash(key)
    return (0 if h == -(1 << 31) else abs(h)) % partitions
