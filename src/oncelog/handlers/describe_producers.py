"""DescribeProducers (key 61), version 0: the active producers of each requested partition.

Behaviour (Kafka's `ReplicaManager.activeProducerState`): per partition, every producer id this
partition remembers, with its epoch, last sequence (-1 if none), last timestamp, coordinator epoch and
the first offset of its open transaction (-1 if none). Unknown partitions → UNKNOWN_TOPIC_OR_PARTITION.
"""

from __future__ import annotations

from typing import Any

from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response
from oncelog.security.acl import Operation, ResourceType
from oncelog.storage.api import Producers

from .base import AwaitCompletion, RequestContext

API_KEY = 61
VERSIONS = (0, 0)


def handle(context: RequestContext, request: Any) -> Any:
    keys = [(topic.name, index) for topic in request.topics for index in topic.partition_indexes]
    denied = {topic.name for topic in request.topics
              if not context.allowed(Operation.READ, ResourceType.TOPIC, topic.name)}

    def respond(described: list[Producers]) -> Any:
        found = iter(described)
        topics = []
        for topic in request.topics:
            partitions = []
            for index in topic.partition_indexes:
                producers = next(found)
                refused = topic.name in denied
                partitions.append({
                    "partition_index": index,
                    "error_code": ErrorCode.topic_authorization_failed if refused else producers.error,
                    "error_message": None,
                    "active_producers": [
                        {
                            "producer_id": producer.producer_id,
                            "producer_epoch": producer.producer_epoch,
                            "last_sequence": producer.last_sequence,
                            "last_timestamp": producer.last_timestamp,
                            "coordinator_epoch": producer.coordinator_epoch,
                            "current_txn_start_offset": producer.current_txn_start_offset,
                        }
                        for producer in ([] if refused else producers.active)
                    ],
                })
            topics.append({"name": topic.name, "partitions": partitions})
        return build_response(API_KEY, context.api_version, {"throttle_time": 0, "topics": topics})

    completion = context.broker.storage.producers(keys)
    return respond(completion.value()) if completion.done else AwaitCompletion(completion, respond)


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return {"throttle_time": 0, "topics": [
        {"name": topic.name, "partitions": [
            {"partition_index": index, "error_code": code, "error_message": None, "active_producers": []}
            for index in topic.partition_indexes]}
        for topic in request.topics]}
