"""ListOffsets (key 2), versions 1–7.

Behaviour:
- timestamp -1 (LATEST): the high watermark, or the last stable offset for read_committed (v2+).
- timestamp -2 (EARLIEST): the log start offset.
- timestamp -3 (MAX_TIMESTAMP, v7): the first batch holding the largest timestamp (Kafka before 3.7
  also answered with a batch-level offset, `shallowOffsetOfMaxTimestamp`).
- any other timestamp: the first batch whose max timestamp ≥ it, or offset -1 / timestamp -1 when none
  is below the fetchable end.
- Unknown partitions → UNKNOWN_TOPIC_OR_PARTITION.
"""

from __future__ import annotations

from typing import Any

from oncelog.broker import LEADER_EPOCH
from oncelog.errors import ErrorCode, KafkaError
from oncelog.log.partition import PartitionLog
from oncelog.protocol.codec import build_response

from .base import RequestContext

API_KEY = 2
VERSIONS = (1, 7)

LATEST = -1
EARLIEST = -2
MAX_TIMESTAMP = -3
READ_COMMITTED = 1


def offset_for(log: PartitionLog, timestamp: int, read_committed: bool) -> tuple[int, int]:
    """(offset, timestamp) answering a ListOffsets query on one partition."""
    fetchable_end = log.last_stable_offset if read_committed else log.high_watermark
    if timestamp == LATEST:
        return fetchable_end, -1
    if timestamp == EARLIEST:
        return log.log_start_offset, -1
    if timestamp == MAX_TIMESTAMP:
        largest = max((segment.max_timestamp for segment in log.segments), default=-1)
        if largest < 0:
            return -1, -1
        timestamp = largest
    found = log.offset_for_timestamp(timestamp)
    if found is None or found[0] >= fetchable_end:
        return -1, -1
    return found


def handle(context: RequestContext, request: Any) -> Any:
    read_committed = int(getattr(request, "isolation_level", 0)) == READ_COMMITTED
    topics = []
    for topic in request.topics:
        partitions = []
        for partition in topic.partitions:
            log = context.broker.logs.get(topic.name, partition.partition_index)
            if log is None or log.offline:
                code = ErrorCode.unknown_topic_or_partition if log is None else ErrorCode.kafka_storage_error
                partitions.append({"partition_index": partition.partition_index, "error_code": code})
                continue
            try:
                offset, timestamp = offset_for(log, int(partition.timestamp), read_committed)
            except KafkaError as error:  # the partition is offline
                partitions.append({"partition_index": partition.partition_index, "error_code": error.code})
                continue
            partitions.append({
                "partition_index": partition.partition_index,
                "error_code": ErrorCode.none,
                "timestamp": timestamp,
                "offset": offset,
                "leader_epoch": LEADER_EPOCH,
            })
        topics.append({"name": topic.name, "partitions": partitions})
    return build_response(API_KEY, context.api_version, {"throttle_time": 0, "topics": topics})


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return {"throttle_time": 0, "topics": [
        {"name": topic.name, "partitions": [
            {"partition_index": p.partition_index, "error_code": code, "timestamp": -1, "offset": -1,
             "leader_epoch": -1} for p in topic.partitions]}
        for topic in request.topics]}
