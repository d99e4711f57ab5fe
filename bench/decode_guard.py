"""What the request guard costs: decoding with and without the bounds pre-pass, per request kind.

    python bench/decode_guard.py [--seconds 2]

Prints microseconds per decode for a small idempotent Produce (v9, one partition, one 16 KiB batch), a
consumer's Fetch (v12, one partition and 100 partitions), Metadata (v12, 1000 topics) and OffsetCommit
(v8, 100 partitions), with the guard (what the broker does) and kio's reader alone.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from kio.serial import entity_reader

from oncelog.protocol.codec import build_request, decode_request, encode_request, request_class
from oncelog.protocol.framing import parse_request_header
from oncelog.protocol.guard import check_request
from oncelog.protocol.records import build_batch

CASES: dict[str, tuple[int, int, dict[str, Any]]] = {
    "produce v9, 1 partition, 16 KiB batch": (0, 9, {
        "transactional_id": None, "acks": -1, "timeout": 30_000, "topic_data": [{"name": "orders", "partition_data": [
            {"index": 0, "records": build_batch([(None, b"x" * 1000)] * 16, producer_id=7, producer_epoch=0,
                                                base_sequence=0)}]}]}),
    "fetch v12, 1 partition": (1, 12, {
        "max_wait": 500, "min_bytes": 1, "max_bytes": 52428800, "isolation_level": 1, "session_id": 0,
        "session_epoch": -1, "topics": [{"topic": "orders", "partitions": [
            {"partition": 0, "fetch_offset": 12345, "partition_max_bytes": 1048576}]}],
        "forgotten_topics_data": [], "rack_id": ""}),
    "fetch v12, 100 partitions": (1, 12, {
        "max_wait": 500, "min_bytes": 1, "max_bytes": 52428800, "isolation_level": 1, "session_id": 0,
        "session_epoch": -1, "topics": [{"topic": "orders", "partitions": [
            {"partition": p, "fetch_offset": 12345, "partition_max_bytes": 1048576} for p in range(100)]}],
        "forgotten_topics_data": [], "rack_id": ""}),
    "metadata v12, 1000 topics": (3, 12, {
        "topics": [{"name": f"topic-{i:05d}", "topic_id": None} for i in range(1000)],
        "allow_auto_topic_creation": False, "include_topic_authorized_operations": False}),
    "offset_commit v8, 100 partitions": (8, 8, {
        "group_id": "group", "generation_id_or_member_epoch": 3, "member_id": "member-1", "group_instance_id": None,
        "topics": [{"name": "orders", "partitions": [
            {"partition_index": p, "committed_offset": 1000 + p, "committed_leader_epoch": 0,
             "committed_metadata": ""} for p in range(100)]}]}),
}


def per_call_us(function: Callable[[], object], seconds: float) -> float:
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            function()
        calls += 100
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement (default 2)")
    args = parser.parse_args()
    print(f"{'request':40} {'bytes':>8} {'guard':>9} {'kio only':>9} {'guarded decode':>15}")
    for name, (api_key, version, fields) in CASES.items():
        frame = encode_request(api_key, version, 1, "bench", build_request(api_key, version, fields))[4:]
        cls = request_class(api_key, version)
        body = parse_request_header(frame, bool(cls.__flexible__)).body_position
        reader = entity_reader(cls)
        guard_us = per_call_us(lambda: check_request(cls, frame, body), args.seconds)  # noqa: B023
        kio_us = per_call_us(lambda: reader(frame, body), args.seconds)  # noqa: B023
        total_us = per_call_us(lambda: decode_request(frame, api_key, version), args.seconds)  # noqa: B023
        print(f"{name:40} {len(frame):8d} {guard_us:8.1f}µ {kio_us:8.1f}µ {total_us:14.1f}µ")


if __name__ == "__main__":
    main()
