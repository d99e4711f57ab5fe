"""The consumer embedded protocol (protocol type "consumer"): subscriptions and assignments.

Only read by the broker for tooling and for OffsetDelete's subscribed-topic check; clients own these
formats (`ConsumerProtocolSubscription` / `ConsumerProtocolAssignment`, versions 0–3). They come from
clients, so every malformation is a ValueError, which callers treat as "not the consumer protocol".
"""

from __future__ import annotations

import struct


def _int(fmt: str, data: bytes, position: int) -> int:
    """One big-endian integer; ValueError (never struct.error) when the bytes run out."""
    try:
        return int(struct.unpack_from(fmt, data, position)[0])
    except struct.error as error:
        raise ValueError(f"truncated at byte {position}") from error


def _string(data: bytes, position: int) -> tuple[str, int]:
    length = _int(">h", data, position)
    position += 2
    if length < 0 or position + length > len(data):
        raise ValueError("string runs past the end")
    try:
        return data[position : position + length].decode(), position + length
    except UnicodeDecodeError as error:
        raise ValueError("a name is not UTF-8") from error


def subscription_topics(metadata: bytes) -> set[str]:
    """Topics of a ConsumerProtocolSubscription (version, [topic], user data, ...)."""
    if len(metadata) < 6:
        raise ValueError("subscription too short")
    (count,) = struct.unpack_from(">i", metadata, 2)
    if count < 0 or count > len(metadata):
        raise ValueError("bad topic count")
    position = 6
    topics = set()
    for _ in range(count):
        topic, position = _string(metadata, position)
        topics.add(topic)
    return topics


def assigned_partitions(assignment: bytes) -> dict[str, list[int]]:
    """Partitions of a ConsumerProtocolAssignment (version, [topic, [partition]], user data)."""
    if not assignment:
        return {}
    if len(assignment) < 6:
        raise ValueError("assignment too short")
    (count,) = struct.unpack_from(">i", assignment, 2)
    if count < 0 or count > len(assignment):
        raise ValueError("bad topic count")
    position = 6
    result: dict[str, list[int]] = {}
    for _ in range(count):
        topic, position = _string(assignment, position)
        partitions = _int(">i", assignment, position)
        position += 4
        if partitions < 0 or position + 4 * partitions > len(assignment):
            raise ValueError("bad partition count")
        result[topic] = list(struct.unpack_from(f">{partitions}i", assignment, position))
        position += 4 * partitions
    return result
