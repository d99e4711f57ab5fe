"""Garbage on one socket closes that socket only; every other client keeps working."""

from __future__ import annotations

import os
import random
import socket
import struct
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from oncelog.client import KafkaClient
from oncelog.errors import ErrorCode

GARBAGE = {
    # A whole frame of seeded random bytes (a random size prefix may be a plausible partial frame, which
    # the broker rightly waits for until connections.max.idle.ms).
    "random frame": struct.pack(">i", 60) + random.Random(7).randbytes(60),
    "oversized frame": struct.pack(">i", 2**30) + b"x" * 16,
    "negative size": struct.pack(">i", -5),
    "unknown api key": struct.pack(">ihhih", 12, 999, 0, 1, -1) + b"\x00\x00",
    "unsupported produce version": struct.pack(">ihhih", 10, 0, 0, 1, -1),
    "garbage body": struct.pack(">ihhih", 20, 3, 9, 1, -1) + os.urandom(10),
    "client id past the end": struct.pack(">ihhih", 10, 3, 9, 1, 400),
}


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_closes_only_that_connection(oncelog_broker: str, topic_name: str, name: str) -> None:
    host, port = oncelog_broker.rsplit(":", 1)
    producer = Producer({"bootstrap.servers": oncelog_broker, "acks": "all"})
    producer.produce(topic_name, value=b"before", partition=0)
    assert producer.flush(15) == 0
    bad = socket.create_connection((host, int(port)))
    bad.sendall(GARBAGE[name])
    assert _closed_by_peer(bad)
    bad.close()
    producer.produce(topic_name, value=b"after", partition=0)
    assert producer.flush(15) == 0
    consumer = Consumer({"bootstrap.servers": oncelog_broker, "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic_name, 0, 0)])
    values = []
    deadline = time.monotonic() + 20
    while len(values) < 2 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            values.append(message.value())
    consumer.close()
    assert values == [b"before", b"after"]


def test_torn_frame_then_disconnect_is_harmless(oncelog_broker: str) -> None:
    host, port = oncelog_broker.rsplit(":", 1)
    for _ in range(20):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(struct.pack(">i", 100) + b"\x00\x03\x00")
        sock.close()
    with KafkaClient(oncelog_broker) as client:
        response = client.request(18, 3, {"client_software_name": "t", "client_software_version": "1"})
    assert response.error_code == ErrorCode.none


def test_api_versions_above_our_range_gets_a_v0_answer(oncelog_broker: str) -> None:
    """KIP-511: an unknown ApiVersions version is answered UNSUPPORTED_VERSION in a v0 body."""
    with KafkaClient(oncelog_broker) as client:
        client.send_raw(struct.pack(">ihhih", 10, 18, 99, 77, -1) + b"\x00\x00")
        frame = client.receive_frame()
    correlation_id, error_code, count = struct.unpack_from(">ihi", frame)
    assert (correlation_id, error_code, count) == (77, 35, 1)
    assert struct.unpack_from(">hhh", frame, 10) == (18, 0, 4)


def test_bad_requests_get_kafka_error_codes(oncelog_broker: str, topic_name: str) -> None:
    from oncelog.protocol.records import build_batch

    with KafkaClient(oncelog_broker) as client:
        def produce(topic: str, records: bytes, acks: int = -1) -> int:
            response = client.request(0, 7, {"transactional_id": None, "acks": acks, "timeout": 5000,
                                             "topic_data": [{"name": topic, "partition_data": [
                                                 {"index": 0, "records": records}]}]})
            return int(response.responses[0].partition_responses[0].error_code)

        good = build_batch([(None, b"v")])
        assert produce("no-such-topic", good) == ErrorCode.unknown_topic_or_partition
        created = client.request(19, 5, {"topics": [{"name": topic_name, "num_partitions": 1,
                                                     "replication_factor": 1, "assignments": [], "configs": []}],
                                         "timeout": 5000, "validate_only": False})
        assert created.topics[0].error_code == 0
        assert produce(topic_name, good) == ErrorCode.none
        corrupt = bytearray(good)
        corrupt[-1] ^= 1
        assert produce(topic_name, bytes(corrupt)) == ErrorCode.corrupt_message
        assert produce(topic_name, good + good) == ErrorCode.invalid_record
        assert produce(topic_name, good, acks=2) == ErrorCode.invalid_required_acks
        big = build_batch([(None, b"x" * 1_100_000)])
        assert produce(topic_name, big) == ErrorCode.message_too_large
        bad_name = client.request(19, 5, {"topics": [{"name": "bad/name", "num_partitions": 1,
                                                      "replication_factor": 1, "assignments": [], "configs": []}],
                                          "timeout": 5000, "validate_only": False})
        assert bad_name.topics[0].error_code == ErrorCode.invalid_topic_exception
        bad_config = client.request(19, 5, {"topics": [{"name": "x" + topic_name, "num_partitions": 1,
                                                        "replication_factor": 1, "assignments": [],
                                                        "configs": [{"name": "no.such", "value": "1"}]}],
                                            "timeout": 5000, "validate_only": False})
        assert bad_config.topics[0].error_code == ErrorCode.invalid_config
        fetch = client.request(1, 11, {"replica_id": -1, "max_wait": 0, "min_bytes": 0, "max_bytes": 1 << 20,
                                       "isolation_level": 0, "session_id": 0, "session_epoch": -1,
                                       "topics": [{"topic": topic_name, "partitions": [
                                           {"partition": 0, "fetch_offset": 99, "partition_max_bytes": 1 << 20}]}],
                                       "forgotten_topics_data": [], "rack_id": ""})
        assert fetch.responses[0].partitions[0].error_code == ErrorCode.offset_out_of_range
