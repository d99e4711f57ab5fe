"""ListTransactions (key 66), versions 0–2: transactional ids with producer id and state, filtered by
state names, producer ids, (v1) minimum running time and (v2, KIP-1152) a regular expression the whole
id must match (`kafka-transactions.sh list --transactional-id-pattern`); unknown state names are echoed
back, a pattern that does not compile gets INVALID_REGULAR_EXPRESSION. The pattern comes from a client
and runs on the event loop, so it is RE2's (as Kafka's own RE2J for regular expressions from clients):
compiled within PATTERN_MEMORY_BYTES and matched in linear time, where a backtracking engine could be
made to spend seconds, or gigabytes, on a few characters."""

from __future__ import annotations

from typing import Any

import re2

from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response
from oncelog.security.acl import Operation, ResourceType

from .base import RequestContext, answer

API_KEY = 66
VERSIONS = (0, 2)
PATTERN_MEMORY_BYTES = 1 << 20
PATTERN_CHARS_MAX = 1000


def _refused(context: RequestContext) -> Any:
    return build_response(API_KEY, context.api_version, {
        "throttle_time": 0, "error_code": ErrorCode.invalid_regular_expression, "unknown_state_filters": [],
        "transaction_states": []})


def handle(context: RequestContext, request: Any) -> Any:
    pattern_text = getattr(request, "transactional_id_pattern", None)
    pattern = None
    if pattern_text:
        options = re2.Options()
        options.max_mem = PATTERN_MEMORY_BYTES
        options.log_errors = False
        try:
            if len(pattern_text) > PATTERN_CHARS_MAX:
                raise ValueError("pattern too long")
            pattern = re2.compile(pattern_text, options=options)
        except (re2.error, ValueError, TypeError):
            return _refused(context)
    result = context.broker.transactions.list(
        list(request.state_filters), [int(p) for p in request.producer_id_filters],
        int(getattr(request, "duration_filter", -1)))

    def respond(found: tuple[list[str], list[dict[str, Any]]]) -> Any:
        unknown, listed = found
        listed = [entry for entry in listed  # only the transactional ids the principal may describe
                  if context.allowed(Operation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, entry["transactional_id"])]
        if pattern is not None:
            listed = [entry for entry in listed if pattern.fullmatch(entry["transactional_id"])]
        return build_response(API_KEY, context.api_version, {"throttle_time": 0, "error_code": ErrorCode.none,
                                                             "unknown_state_filters": unknown,
                                                             "transaction_states": listed})

    return answer(result, respond)
