"""OffsetFetch (key 9), versions 1–7.

Behaviour: committed offsets of the requested partitions (v2+: `topics = null` means every partition the
group committed), -1 with empty metadata where none is committed, also for unknown groups. v5+ carry the
committed leader epoch. Pending transactional offsets are invisible; with v7 `require_stable` a partition
that has some answers UNSTABLE_OFFSET_COMMIT (retriable: the client asks again after the transaction
ends). v8+ (batched groups) is not advertised.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response
from oncelog.security.acl import Operation, ResourceType

from .base import RequestContext

API_KEY = 9
VERSIONS = (1, 7)


def handle(context: RequestContext, request: Any) -> Any:
    requested = None
    if request.topics is not None:
        requested = [(topic.name, int(index)) for topic in request.topics for index in topic.partition_indexes]
    groups = context.broker.groups
    offsets = groups.fetch_offsets(request.group_id, requested)
    require_stable = bool(getattr(request, "require_stable", False))
    by_topic: dict[str, list[dict[str, Any]]] = defaultdict(list)
    # The group's DESCRIBE is checked before (handlers/authorization.py); topics need DESCRIBE too: a
    # named one is refused, and listing all leaves the others out (KafkaApis.handleOffsetFetchRequest).
    describable: dict[str, bool] = {}
    for (topic, partition), value in offsets.items():
        if topic not in describable:
            describable[topic] = context.allowed(Operation.DESCRIBE, ResourceType.TOPIC, topic)
        if not describable[topic]:
            if requested is not None:
                by_topic[topic].append({"partition_index": partition, "committed_offset": -1,
                                        "committed_leader_epoch": -1, "metadata": "",
                                        "error_code": ErrorCode.topic_authorization_failed})
            continue
        if require_stable and groups.has_pending_offsets(request.group_id, topic, partition):
            by_topic[topic].append({"partition_index": partition, "committed_offset": -1,
                                    "committed_leader_epoch": -1, "metadata": "",
                                    "error_code": ErrorCode.unstable_offset_commit})
            continue
        by_topic[topic].append({
            "partition_index": partition,
            "committed_offset": value.offset if value else -1,
            "committed_leader_epoch": value.leader_epoch if value else -1,
            "metadata": value.metadata if value else "",
            "error_code": ErrorCode.none,
        })
    topics = [{"name": name, "partitions": partitions} for name, partitions in by_topic.items()]
    return build_response(API_KEY, context.api_version,
                          {"throttle_time": 0, "topics": topics, "error_code": ErrorCode.none})


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    """v2+ carry a top-level error; v1 only per partition (Kafka's `OffsetFetchRequest.getErrorResponse`)."""
    return {"throttle_time": 0, "error_code": code, "topics": [
        {"name": topic.name, "partitions": [
            {"partition_index": index, "committed_offset": -1, "committed_leader_epoch": -1, "metadata": "",
             "error_code": code} for index in topic.partition_indexes]}
        for topic in request.topics or []]}
