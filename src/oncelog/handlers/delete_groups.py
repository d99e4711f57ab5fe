"""DeleteGroups (key 42), versions 0–2: only empty groups (NON_EMPTY_GROUP otherwise; unknown →
GROUP_ID_NOT_FOUND); their offsets and metadata are tombstoned in `__consumer_offsets`."""

from __future__ import annotations

from typing import Any

from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response

from .base import AwaitCompletion, RequestContext

API_KEY = 42
VERSIONS = (0, 2)


def handle(context: RequestContext, request: Any) -> Any:
    completion = context.broker.groups.delete_groups(list(request.groups_names))

    def respond(errors: dict[str, Any]) -> Any:
        results = [{"group_id": group_id, "error_code": errors[group_id]} for group_id in request.groups_names]
        return build_response(API_KEY, context.api_version, {"throttle_time": 0, "results": results})

    return AwaitCompletion(completion, respond)


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return {"throttle_time": 0, "results": [{"group_id": group_id, "error_code": code}
                                            for group_id in request.groups_names]}
