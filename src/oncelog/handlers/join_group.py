"""JoinGroup (key 11), versions 0–7.

Behaviour: the classic protocol of `coordinator/group/coordinator.py`. v4+ members joining without an id
get MEMBER_ID_REQUIRED with their new id (KIP-394); v5+ carry `group.instance.id` (static membership);
v0 has no rebalance timeout, so the session timeout stands in for it, as in Kafka. The response waits
until the rebalance completes; the leader gets every member's protocol metadata, followers none.
"""

from __future__ import annotations

from typing import Any

from oncelog.protocol.codec import build_response, duration_ms

from .base import AwaitCompletion, RequestContext

API_KEY = 11
VERSIONS = (0, 7)


def handle(context: RequestContext, request: Any) -> Any:
    session_timeout_ms = duration_ms(request.session_timeout)
    rebalance_timeout_ms = duration_ms(getattr(request, "rebalance_timeout", None)) or session_timeout_ms
    client_host = context.peer.rsplit(":", 1)[0]
    completion = context.broker.groups.join(
        request.group_id, request.member_id, getattr(request, "group_instance_id", None),
        context.client_id or "", f"/{client_host}", session_timeout_ms, rebalance_timeout_ms,
        request.protocol_type, [(p.name, p.metadata) for p in request.protocols],
        require_known_member_id=context.api_version >= 4,
    )

    def respond(result: dict[str, Any]) -> Any:
        fields = {"throttle_time": 0, "generation_id": -1, "leader": "", "member_id": request.member_id,
                  "members": [], "protocol_type": None, "protocol_name": None, **result}
        if context.api_version < 7 and fields["protocol_name"] is None:
            fields["protocol_name"] = ""  # not nullable before v7
        return build_response(API_KEY, context.api_version, fields)

    return AwaitCompletion(completion, respond)
