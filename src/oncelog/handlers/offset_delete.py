"""OffsetDelete (key 47), version 0: delete a group's committed offsets for some partitions. Unknown
group → GROUP_ID_NOT_FOUND; a partition of a topic the (non-empty) group subscribes to →
GROUP_SUBSCRIBED_TO_TOPIC."""

from __future__ import annotations

from typing import Any

from oncelog.protocol.codec import build_response

from .base import AwaitCompletion, RequestContext

API_KEY = 47
VERSIONS = (0, 0)


def handle(context: RequestContext, request: Any) -> Any:
    partitions = [(topic.name, int(p.partition_index)) for topic in request.topics for p in topic.partitions]
    completion = context.broker.groups.delete_offsets(request.group_id, partitions)

    def respond(result: dict[str, Any]) -> Any:
        errors = result["partitions"]
        topics = [{"name": topic.name, "partitions": [
            {"partition_index": p.partition_index, "error_code": errors.get((topic.name, int(p.partition_index)), 0)}
            for p in topic.partitions]} for topic in request.topics]
        return build_response(API_KEY, context.api_version,
                              {"throttle_time": 0, "error_code": result["error_code"], "topics": topics})

    return AwaitCompletion(completion, respond)
