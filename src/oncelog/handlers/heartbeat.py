"""Heartbeat (key 12), versions 0–4: keeps a member's session alive; REBALANCE_IN_PROGRESS tells it to
rejoin; UNKNOWN_MEMBER_ID / ILLEGAL_GENERATION / FENCED_INSTANCE_ID as Kafka's classic coordinator."""

from __future__ import annotations

from typing import Any

from oncelog.protocol.codec import build_response

from .base import RequestContext

API_KEY = 12
VERSIONS = (0, 4)


def handle(context: RequestContext, request: Any) -> Any:
    result = context.broker.groups.heartbeat(request.group_id, int(request.generation_id), request.member_id,
                                             getattr(request, "group_instance_id", None))
    return build_response(API_KEY, context.api_version, {"throttle_time": 0, **result})
