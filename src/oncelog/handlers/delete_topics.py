"""DeleteTopics (key 20), versions 1–4.

Behaviour: each named topic is removed from the metadata (durably) and its partition directories are
deleted. Unknown topics → UNKNOWN_TOPIC_OR_PARTITION. Internal topics (`__*`) cannot be deleted by
clients → INVALID_TOPIC_EXCEPTION (Kafka refuses to delete them as well).
"""

from __future__ import annotations

from typing import Any

from oncelog.errors import ErrorCode, KafkaError
from oncelog.protocol.codec import build_response

from .base import RequestContext

API_KEY = 20
VERSIONS = (1, 4)


def handle(context: RequestContext, request: Any) -> Any:
    results = []
    for name in request.topic_names:
        code = ErrorCode.none
        try:
            context.broker.delete_topic(name)
        except KafkaError as error:
            code = error.code
        results.append({"name": name, "error_code": code})
    return build_response(API_KEY, context.api_version, {"throttle_time": 0, "responses": results})


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return {"throttle_time": 0, "responses": [{"name": name, "error_code": code} for name in request.topic_names]}
