"""OffsetCommit (key 8), versions 2–8.

Behaviour (Kafka's `validateOffsetCommit`): a "simple" commit (generation -1, no member) is accepted for
an empty or unknown group, creating it; otherwise the member must exist (UNKNOWN_MEMBER_ID, or
FENCED_INSTANCE_ID for a replaced static member) with the group's generation (ILLEGAL_GENERATION); while
the group completes a rebalance → REBALANCE_IN_PROGRESS. Per partition: unknown partition →
UNKNOWN_TOPIC_OR_PARTITION, metadata over `offset.metadata.max.bytes` → OFFSET_METADATA_TOO_LARGE. The
records are appended to `__consumer_offsets` and the response waits until they are fsynced. v2–4's
retention time is ignored (Kafka ignores it since 2.1 too).
"""

from __future__ import annotations

from typing import Any

from oncelog.coordinator.group.coordinator import OffsetCommit
from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response
from oncelog.security.acl import Operation, ResourceType

from .base import AwaitCompletion, RequestContext

API_KEY = 8
VERSIONS = (2, 8)


def handle(context: RequestContext, request: Any) -> Any:
    # The group's READ is checked before (handlers/authorization.py); each topic needs READ too.
    denied = {topic.name for topic in request.topics
              if not context.allowed(Operation.READ, ResourceType.TOPIC, topic.name)}
    commits = [
        OffsetCommit(topic.name, p.partition_index, int(p.committed_offset),
                     int(getattr(p, "committed_leader_epoch", -1)), p.committed_metadata)
        for topic in request.topics for p in topic.partitions if topic.name not in denied
    ]
    completion = context.broker.groups.commit_offsets(
        request.group_id, request.member_id, getattr(request, "group_instance_id", None),
        int(request.generation_id_or_member_epoch), commits)

    def respond(errors: dict[tuple[str, int], Any]) -> Any:
        errors = {**errors, **{(topic.name, p.partition_index): ErrorCode.topic_authorization_failed
                               for topic in request.topics if topic.name in denied for p in topic.partitions}}
        topics = [{"name": topic.name, "partitions": [
            {"partition_index": p.partition_index, "error_code": errors[(topic.name, p.partition_index)]}
            for p in topic.partitions]} for topic in request.topics]
        return build_response(API_KEY, context.api_version, {"throttle_time": 0, "topics": topics})

    return AwaitCompletion(completion, respond)


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return {"throttle_time": 0, "topics": [
        {"name": topic.name, "partitions": [{"partition_index": p.partition_index, "error_code": code}
                                            for p in topic.partitions]}
        for topic in request.topics]}
