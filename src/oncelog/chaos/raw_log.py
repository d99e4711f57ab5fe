"""The final log as stored, read with oncelog's own codec, each record's fate decided by the markers.

Why not ask a read_committed consumer: its answer comes from the broker under test. Were that broker's
last stable offset or aborted-transaction list wrong, a checker built on it would agree with the bug.
So the checker fetches the raw record batches (read_uncommitted, from offset 0 to the high watermark)
and decides every transactional record itself, as the log defines it: by the next COMMIT or ABORT
control batch of the same producer on that partition (`history.stored_records`). A transactional
record with no marker after it is still open.
"""

from __future__ import annotations

import time
from typing import Any

from oncelog.client import ClientError, KafkaClient
from oncelog.errors import ErrorCode
from oncelog.protocol.records import iter_batches
from oncelog.simulation.history import FinalLog, stored_records

METADATA_VERSION = 9
FETCH_VERSION = 11
MAX_BYTES = 4 << 20


class RawReadError(RuntimeError):
    """The checker could not read a partition to its end."""


def _leaders(client: KafkaClient, topic: str) -> tuple[dict[int, str], dict[int, int]]:
    """node id -> host:port, partition -> leader node id."""
    response = client.request(3, METADATA_VERSION, {
        "topics": [{"name": topic}], "allow_auto_topic_creation": False,
        "include_cluster_authorized_operations": False, "include_topic_authorized_operations": False})
    nodes = {int(b.node_id): f"{b.host}:{b.port}" for b in response.brokers}
    leaders = {int(p.partition_index): int(p.leader_id) for t in response.topics for p in t.partitions
               if ErrorCode(int(p.error_code)) == ErrorCode.none}
    return nodes, leaders


def _fetch(client: KafkaClient, topic: str, partition: int, offset: int) -> Any:
    response = client.request(1, FETCH_VERSION, {
        "replica_id": -1, "max_wait": 0, "min_bytes": 0, "max_bytes": MAX_BYTES, "isolation_level": 0,
        "session_id": 0, "session_epoch": -1,
        "topics": [{"topic": topic, "partitions": [{
            "partition": partition, "current_leader_epoch": -1, "fetch_offset": offset, "log_start_offset": -1,
            "partition_max_bytes": MAX_BYTES}]}],
        "forgotten_topics_data": [], "rack_id": ""})
    return response.responses[0].partitions[0]


def _read_partition(bootstrap: str, topic: str, partition: int, deadline: float) -> tuple[bytes, int, int]:
    """Every whole batch of one partition from offset 0 to its high watermark; (batches, HW, LSO)."""
    batches = bytearray()
    offset = 0
    problem = "no attempt"
    while time.monotonic() < deadline:
        try:
            with KafkaClient(bootstrap) as client:
                nodes, leaders = _leaders(client, topic)
            leader = nodes.get(leaders.get(partition, -1))
            if leader is None:
                problem = f"partition {partition} has no leader"
                time.sleep(0.5)
                continue
            with KafkaClient(leader) as client:
                while True:
                    data = _fetch(client, topic, partition, offset)
                    code = ErrorCode(int(data.error_code))
                    if code != ErrorCode.none:
                        raise ClientError(f"fetch of {topic}-{partition}@{offset} answered {code.name}")
                    high_watermark, stable = int(data.high_watermark), int(data.last_stable_offset)
                    if offset >= high_watermark:
                        return bytes(batches), high_watermark, stable
                    records = bytes(data.records or b"")
                    end = offset
                    for position, header in iter_batches(records):
                        if header.next_offset <= offset:  # a batch from before the fetch offset
                            continue
                        if header.compression != 0:
                            raise RawReadError(f"{topic}-{partition} holds compressed batches; the checker reads "
                                               "uncompressed ones (the chaos producers do not compress)")
                        batches += records[position:position + header.size]
                        end = header.next_offset
                    if end == offset:
                        raise ClientError(f"fetch of {topic}-{partition}@{offset} returned no whole batch below "
                                          f"the high watermark {high_watermark}")
                    offset = end
        except (ClientError, OSError) as error:
            problem = str(error)
            time.sleep(0.5)
    raise RawReadError(f"the checker could not read {topic}-{partition} to its end: {problem}")


def raw_final_log(bootstrap: str, topic: str, partitions: int,
                  limit_s: float = 60.0) -> tuple[FinalLog, dict[int, int]]:
    """`topic` as stored and decided by its markers, and each partition's last stable offset."""
    deadline = time.monotonic() + limit_s
    final = FinalLog()
    stable: dict[int, int] = {}
    for partition in range(partitions):
        batches, final.high_watermarks[partition], stable[partition] = _read_partition(
            bootstrap, topic, partition, deadline)
        final.partitions[partition] = stored_records(batches)
    return final, stable
