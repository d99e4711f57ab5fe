"""SyncGroup (key 14), versions 0–5.

Behaviour: followers wait for the leader; the leader's assignment is written to `__consumer_offsets`
(GroupMetadata record) and every member is answered once it is durable. v5 checks the protocol type and
name against the group's (INCONSISTENT_GROUP_PROTOCOL) and echoes them.
"""

from __future__ import annotations

from typing import Any

from oncelog.protocol.codec import build_response

from .base import AwaitCompletion, RequestContext

API_KEY = 14
VERSIONS = (0, 5)


def handle(context: RequestContext, request: Any) -> Any:
    completion = context.broker.groups.sync(
        request.group_id, int(request.generation_id), request.member_id,
        getattr(request, "group_instance_id", None), getattr(request, "protocol_type", None),
        getattr(request, "protocol_name", None), {a.member_id: a.assignment for a in request.assignments},
    )

    def respond(result: dict[str, Any]) -> Any:
        fields = {"throttle_time": 0, "assignment": b"", "protocol_type": None, "protocol_name": None, **result}
        return build_response(API_KEY, context.api_version, fields)

    return AwaitCompletion(completion, respond)
