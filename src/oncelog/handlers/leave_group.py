"""LeaveGroup (key 13), versions 0–5: v0–2 one member id; v3+ a batch of members (by id or instance id)
with an error each. The group rebalances without them."""

from __future__ import annotations

from typing import Any

from oncelog.protocol.codec import build_response

from .base import RequestContext

API_KEY = 13
VERSIONS = (0, 5)


def handle(context: RequestContext, request: Any) -> Any:
    if context.api_version >= 3:
        members = [(m.member_id, m.group_instance_id) for m in request.members]
    else:
        members = [(request.member_id, None)]
    result = context.broker.groups.leave(request.group_id, members)
    if context.api_version < 3 and result["error_code"] == 0 and result["members"]:
        result["error_code"] = result["members"][0]["error_code"]  # one member, no per-member array
    return build_response(API_KEY, context.api_version, {"throttle_time": 0, **result})
