"""DeleteGroups (key 42), versions 0–2: only empty groups (NON_EMPTY_GROUP otherwise; unknown →
GROUP_ID_NOT_FOUND); their offsets and metadata are tombstoned in `__consumer_offsets`."""

from __future__ import annotations

from typing import Any

from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response
from oncelog.security.acl import Operation, ResourceType

from .base import AwaitCompletion, RequestContext

API_KEY = 42
VERSIONS = (0, 2)


def handle(context: RequestContext, request: Any) -> Any:
    denied = {g for g in request.groups_names if not context.allowed(Operation.DELETE, ResourceType.GROUP, g)}
    completion = context.broker.groups.delete_groups([g for g in request.groups_names if g not in denied])

    def respond(errors: dict[str, Any]) -> Any:
        errors = {**errors, **dict.fromkeys(denied, ErrorCode.group_authorization_failed)}
        results = [{"group_id": group_id, "error_code": errors[group_id]} for group_id in request.groups_names]
        return build_response(API_KEY, context.api_version, {"throttle_time": 0, "results": results})

    return AwaitCompletion(completion, respond)


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return {"throttle_time": 0, "results": [{"group_id": group_id, "error_code": code}
                                            for group_id in request.groups_names]}
