"""OffsetDelete (key 47), version 0: delete a group's committed offsets for some partitions. Unknown
group → GROUP_ID_NOT_FOUND; a partition of a topic the (non-empty) group subscribes to →
GROUP_SUBSCRIBED_TO_TOPIC."""

from __future__ import annotations

from typing import Any

from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response
from oncelog.security.acl import Operation, ResourceType

from .base import AwaitCompletion, RequestContext

API_KEY = 47
VERSIONS = (0, 0)


def handle(context: RequestContext, request: Any) -> Any:
    # The group's DELETE is checked before (handlers/authorization.py); each topic needs READ.
    denied = {topic.name for topic in request.topics
              if not context.allowed(Operation.READ, ResourceType.TOPIC, topic.name)}
    partitions = [(topic.name, int(p.partition_index)) for topic in request.topics for p in topic.partitions
                  if topic.name not in denied]
    completion = context.broker.groups.delete_offsets(request.group_id, partitions)

    def respond(result: dict[str, Any]) -> Any:
        errors = {**result["partitions"], **{(topic.name, int(p.partition_index)): ErrorCode.topic_authorization_failed
                                             for topic in request.topics if topic.name in denied
                                             for p in topic.partitions}}
        topics = [{"name": topic.name, "partitions": [
            {"partition_index": p.partition_index, "error_code": errors.get((topic.name, int(p.partition_index)), 0)}
            for p in topic.partitions]} for topic in request.topics]
        return build_response(API_KEY, context.api_version,
                              {"throttle_time": 0, "error_code": result["error_code"], "topics": topics})

    return AwaitCompletion(completion, respond)
