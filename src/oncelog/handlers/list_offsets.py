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

from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response
from oncelog.security.acl import Operation, ResourceType
from oncelog.storage.api import LEADER_EPOCH, FoundOffset, OffsetQuery

from .base import AwaitCompletion, RequestContext

API_KEY = 2
VERSIONS = (1, 7)

READ_COMMITTED = 1


def handle(context: RequestContext, request: Any) -> Any:
    read_committed = int(getattr(request, "isolation_level", 0)) == READ_COMMITTED
    queries = [OffsetQuery(topic.name, partition.partition_index, int(partition.timestamp))
               for topic in request.topics for partition in topic.partitions]
    denied = {topic.name for topic in request.topics
              if not context.allowed(Operation.DESCRIBE, ResourceType.TOPIC, topic.name)}

    def respond(found: list[FoundOffset]) -> Any:
        results = iter(found)
        topics = []
        for topic in request.topics:
            partitions = []
            for partition in topic.partitions:
                result = next(results)
                if topic.name in denied:
                    partitions.append({"partition_index": partition.partition_index,
                                       "error_code": ErrorCode.topic_authorization_failed})
                    continue
                if result.error != ErrorCode.none:
                    partitions.append({"partition_index": partition.partition_index, "error_code": result.error})
                    continue
                partitions.append({
                    "partition_index": partition.partition_index,
                    "error_code": ErrorCode.none,
                    "timestamp": result.timestamp,
                    "offset": result.offset,
                    "leader_epoch": LEADER_EPOCH,
                })
            topics.append({"name": topic.name, "partitions": partitions})
        return build_response(API_KEY, context.api_version, {"throttle_time": 0, "topics": topics})

    completion = context.broker.storage.list_offsets(queries, read_committed)
    return respond(completion.value()) if completion.done else AwaitCompletion(completion, respond)


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return {"throttle_time": 0, "topics": [
        {"name": topic.name, "partitions": [
            {"partition_index": p.partition_index, "error_code": code, "timestamp": -1, "offset": -1,
             "leader_epoch": -1} for p in topic.partitions]}
        for topic in request.topics]}
