"""DescribeGroups (key 15), versions 0–5: state, protocol and members (with their subscription and
assignment once Stable) of each group; an unknown group is reported as state "Dead", as Kafka does."""

from __future__ import annotations

from typing import Any

from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response
from oncelog.security.acl import Operation, ResourceType

from .base import RequestContext

API_KEY = 15
VERSIONS = (0, 5)


def handle(context: RequestContext, request: Any) -> Any:
    wanted = bool(getattr(request, "include_authorized_operations", False))
    groups = [{**context.broker.groups.describe(group_id),
               "authorized_operations": context.authorized_operations(wanted, ResourceType.GROUP, group_id)}
              if context.allowed(Operation.DESCRIBE, ResourceType.GROUP, group_id)
              else error_response(request, ErrorCode.group_authorization_failed)["groups"][index]
              for index, group_id in enumerate(request.groups)]
    return build_response(API_KEY, context.api_version, {"throttle_time": 0, "groups": groups})


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return {"throttle_time": 0, "groups": [
        {"error_code": code, "group_id": group_id, "group_state": "", "protocol_type": "", "protocol_data": "",
         "members": [], "authorized_operations": -2147483648} for group_id in request.groups]}
