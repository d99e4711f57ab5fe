"""ListGroups (key 16), versions 0–5: every group with its protocol type (v4: state, and a state filter;
v5, KIP-848: the group type, and a type filter). Every group here is a "classic" one (the new consumer
protocol is not served), so a type filter without "classic" lists nothing."""

from __future__ import annotations

from typing import Any

from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response
from oncelog.security.acl import Operation, ResourceType

from .base import RequestContext

API_KEY = 16
VERSIONS = (0, 5)
GROUP_TYPE = "classic"


def handle(context: RequestContext, request: Any) -> Any:
    groups = [{**group, "group_type": GROUP_TYPE}
              for group in context.broker.groups.list_groups(getattr(request, "states_filter", ()))]
    types = {kind.lower() for kind in getattr(request, "types_filter", ())}
    if types and GROUP_TYPE not in types:
        groups = []
    if not context.allowed(Operation.DESCRIBE, ResourceType.CLUSTER):  # then only the groups it may describe
        groups = [g for g in groups if context.allowed(Operation.DESCRIBE, ResourceType.GROUP, g["group_id"])]
    return build_response(API_KEY, context.api_version,
                          {"throttle_time": 0, "error_code": ErrorCode.none, "groups": groups})
