"""DescribeProducers (key 61), version 0: the active producers of each requested partition.

Behaviour (Kafka's `ReplicaManager.activeProducerState`): per partition, every producer id this
partition remembers, with its epoch, last sequence (-1 if none), last timestamp, coordinator epoch and
the first offset of its open transaction (-1 if none). Unknown partitions → UNKNOWN_TOPIC_OR_PARTITION.
"""

from __future__ import annotations

from typing import Any

from oncelog.errors import ErrorCode
from oncelog.log.producer_state import iter_entries
from oncelog.protocol.codec import build_response

from .base import RequestContext

API_KEY = 61
VERSIONS = (0, 0)


def handle(context: RequestContext, request: Any) -> Any:
    topics = []
    for topic in request.topics:
        partitions = []
        for index in topic.partition_indexes:
            log = context.broker.logs.get(topic.name, index)
            if log is None:
                partitions.append({"partition_index": index, "error_code": ErrorCode.unknown_topic_or_partition,
                                   "error_message": None, "active_producers": []})
                continue
            partitions.append({
                "partition_index": index,
                "error_code": ErrorCode.none,
                "error_message": None,
                "active_producers": [
                    {
                        "producer_id": entry.producer_id,
                        "producer_epoch": entry.producer_epoch,
                        "last_sequence": entry.last_sequence,
                        "last_timestamp": entry.last_timestamp,
                        "coordinator_epoch": entry.coordinator_epoch,
                        "current_txn_start_offset": entry.current_txn_first_offset,
                    }
                    for entry in iter_entries(log.producer_state)
                ],
            })
        topics.append({"name": topic.name, "partitions": partitions})
    return build_response(API_KEY, context.api_version, {"throttle_time": 0, "topics": topics})


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return {"throttle_time": 0, "topics": [
        {"name": topic.name, "partitions": [
            {"partition_index": index, "error_code": code, "error_message": None, "active_producers": []}
            for index in topic.partition_indexes]}
        for topic in request.topics]}
