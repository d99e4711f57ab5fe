"""DeleteTopics (key 20), versions 1–4.

Behaviour: each named topic is removed from the metadata (durably) and its partition directories are
deleted. Unknown topics → UNKNOWN_TOPIC_OR_PARTITION. Internal topics (`__*`) cannot be deleted by
clients → INVALID_TOPIC_EXCEPTION (Kafka refuses to delete them as well).
"""

from __future__ import annotations

from typing import Any

from oncelog.coordinator.runtime import Completion, gather, resolved
from oncelog.errors import ErrorCode, KafkaError
from oncelog.protocol.codec import build_response
from oncelog.security.acl import Operation, ResourceType
from oncelog.topic_admin import delete_topic

from .base import AwaitCompletion, RequestContext

API_KEY = 20
VERSIONS = (1, 4)


def _delete_one(context: RequestContext, name: str) -> Completion[dict[str, Any]]:
    if not context.allowed(Operation.DELETE, ResourceType.TOPIC, name):
        return resolved({"name": name, "error_code": ErrorCode.topic_authorization_failed})
    try:
        deleting = delete_topic(context.broker, name)
    except KafkaError as error:
        return resolved({"name": name, "error_code": error.code})
    done: Completion[dict[str, Any]] = Completion()
    deleting.on_done(lambda error: done.resolve({"name": name,
                                                 "error_code": ErrorCode.none if error is None else error.code}))
    return done


def handle(context: RequestContext, request: Any) -> Any:
    deleted = gather([_delete_one(context, name) for name in request.topic_names])

    def respond(results: list[dict[str, Any]]) -> Any:
        return build_response(API_KEY, context.api_version, {"throttle_time": 0, "responses": results})

    return respond(deleted.value()) if deleted.done else AwaitCompletion(deleted, respond)


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return {"throttle_time": 0, "responses": [{"name": name, "error_code": code} for name in request.topic_names]}
