"""DeleteRecords (key 21), versions 0–2: move partitions' log start offsets up (Kafka Streams purges
its repartition topics with it; `kafka-delete-records.sh`).

Behaviour, per partition as Kafka's `deleteRecordsOnLocalLog`: DELETE on the topic or
TOPIC_AUTHORIZATION_FAILED; unknown → UNKNOWN_TOPIC_OR_PARTITION; offset -1 means the high watermark;
past the high watermark (or below -1) → OFFSET_OUT_OF_RANGE; internal topics → INVALID_TOPIC_EXCEPTION;
a topic whose cleanup.policy lacks `delete` → POLICY_VIOLATION; else the log start offset becomes
max(its own, offset), whole segments below it are deleted, and the answer carries the new low
watermark once that is durable (local storage checkpoints it when it moved; PostgreSQL commits it).
"""

from __future__ import annotations

from typing import Any

from oncelog.errors import ErrorCode
from oncelog.log.manager import INTERNAL_TOPICS
from oncelog.protocol.codec import build_response
from oncelog.security.acl import Operation, ResourceType

from .base import AwaitCompletion, RequestContext

API_KEY = 21
VERSIONS = (0, 2)


def _deletable(context: RequestContext, topic: str) -> bool:
    info = context.broker.storage.topic(topic)
    return info is None or "delete" in info.config.value("cleanup.policy", context.broker.config).split(",")


def handle(context: RequestContext, request: Any) -> Any:
    answers: dict[tuple[str, int], tuple[ErrorCode, int]] = {}
    targets: list[tuple[str, int, int]] = []
    for topic in request.topics:
        allowed = context.allowed(Operation.DELETE, ResourceType.TOPIC, topic.name)
        for partition in topic.partitions:
            key = (topic.name, int(partition.partition_index))
            if not allowed:
                answers[key] = (ErrorCode.topic_authorization_failed, -1)
            elif topic.name in INTERNAL_TOPICS:  # Kafka's ReplicaManager.deleteRecordsOnLocalLog
                answers[key] = (ErrorCode.invalid_topic_exception, -1)
            elif not _deletable(context, topic.name):  # Partition.deleteRecordsOnLeader: compact-only
                answers[key] = (ErrorCode.policy_violation, -1)
            elif int(partition.offset) < -1:
                answers[key] = (ErrorCode.offset_out_of_range, -1)
            else:
                targets.append((topic.name, key[1], int(partition.offset)))

    def respond(results: list[tuple[ErrorCode, int]]) -> Any:
        for (topic_name, index, _offset), result in zip(targets, results, strict=True):
            answers[(topic_name, index)] = result

        def entry(topic_name: str, index: int) -> dict[str, Any]:
            code, low_watermark = answers[(topic_name, index)]
            return {"partition_index": index, "low_watermark": low_watermark, "error_code": code}

        return build_response(API_KEY, context.api_version, {"throttle_time": 0, "topics": [
            {"name": topic.name, "partitions": [entry(topic.name, int(p.partition_index)) for p in topic.partitions]}
            for topic in request.topics]})

    if not targets:
        return respond([])
    deleting = context.broker.storage.delete_records(targets)
    return respond(deleting.value()) if deleting.done else AwaitCompletion(deleting, respond)


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return {"throttle_time": 0, "topics": [
        {"name": topic.name, "partitions": [{"partition_index": p.partition_index, "low_watermark": -1,
                                             "error_code": code} for p in topic.partitions]}
        for topic in request.topics]}
