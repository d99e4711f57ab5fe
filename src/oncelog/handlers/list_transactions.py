"""ListTransactions (key 66), versions 0–1: transactional ids with producer id and state, filtered by
state names, producer ids and (v1) minimum running time; unknown state names are echoed back."""

from __future__ import annotations

from typing import Any

from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response
from oncelog.security.acl import Operation, ResourceType

from .base import RequestContext, answer

API_KEY = 66
VERSIONS = (0, 1)


def handle(context: RequestContext, request: Any) -> Any:
    result = context.broker.transactions.list(
        list(request.state_filters), [int(p) for p in request.producer_id_filters],
        int(getattr(request, "duration_filter", -1)))

    def respond(found: tuple[list[str], list[dict[str, Any]]]) -> Any:
        unknown, listed = found
        listed = [entry for entry in listed  # only the transactional ids the principal may describe
                  if context.allowed(Operation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, entry["transactional_id"])]
        return build_response(API_KEY, context.api_version, {"throttle_time": 0, "error_code": ErrorCode.none,
                                                             "unknown_state_filters": unknown,
                                                             "transaction_states": listed})

    return answer(result, respond)
