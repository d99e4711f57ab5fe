"""ListTransactions (key 66), versions 0–2: transactional ids with producer id and state, filtered by
state names, producer ids, (v1) minimum running time and (v2, KIP-1152) a regular expression the whole
id must match (`kafka-transactions.sh list --transactional-id-pattern`); unknown state names are echoed
back, a pattern that does not compile gets INVALID_REGULAR_EXPRESSION. The pattern comes from a client
and runs on the event loop, so it is matched with the `regex` module under a time budget
(PATTERN_BUDGET_S for the whole listing); a pattern that needs more is refused the same way, so a
catastrophically backtracking one costs everybody else at most that long."""

from __future__ import annotations

import time
from typing import Any

import regex

from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response
from oncelog.security.acl import Operation, ResourceType

from .base import RequestContext, answer

API_KEY = 66
VERSIONS = (0, 2)
PATTERN_BUDGET_S = 0.1


def _refused(context: RequestContext) -> Any:
    return build_response(API_KEY, context.api_version, {
        "throttle_time": 0, "error_code": ErrorCode.invalid_regular_expression, "unknown_state_filters": [],
        "transaction_states": []})


def handle(context: RequestContext, request: Any) -> Any:
    pattern_text = getattr(request, "transactional_id_pattern", None)
    try:
        pattern = regex.compile(pattern_text) if pattern_text else None
    except (regex.error, RecursionError, OverflowError):
        return _refused(context)
    result = context.broker.transactions.list(
        list(request.state_filters), [int(p) for p in request.producer_id_filters],
        int(getattr(request, "duration_filter", -1)))

    def respond(found: tuple[list[str], list[dict[str, Any]]]) -> Any:
        unknown, listed = found
        listed = [entry for entry in listed  # only the transactional ids the principal may describe
                  if context.allowed(Operation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, entry["transactional_id"])]
        if pattern is not None:
            deadline = time.monotonic() + PATTERN_BUDGET_S
            try:
                listed = [entry for entry in listed if pattern.fullmatch(
                    entry["transactional_id"], timeout=max(0.001, deadline - time.monotonic()))]
            except TimeoutError:
                return _refused(context)
        return build_response(API_KEY, context.api_version, {"throttle_time": 0, "error_code": ErrorCode.none,
                                                             "unknown_state_filters": unknown,
                                                             "transaction_states": listed})

    return answer(result, respond)
