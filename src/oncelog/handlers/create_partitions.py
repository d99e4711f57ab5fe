"""CreatePartitions (key 37), versions 0–3: grow topics (`kafka-topics.sh --alter --partitions`).

Behaviour, per topic as Kafka's: ALTER on the topic or TOPIC_AUTHORIZATION_FAILED; unknown →
UNKNOWN_TOPIC_OR_PARTITION; the same or a smaller count → INVALID_PARTITIONS; assignments, when given,
one per new partition, each one live broker (replication factor 1) → else INVALID_REPLICA_ASSIGNMENT;
internal topics → INVALID_REQUEST; over max.broker.partitions → POLICY_VIOLATION; a topic named twice
in one request → INVALID_REQUEST (one result for the name); `validate_only` checks and changes nothing. Existing
partitions keep their data; keyed producers start hashing over the new count, as in Kafka.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from oncelog.coordinator.runtime import Completion, gather, resolved
from oncelog.errors import ErrorCode, KafkaError
from oncelog.protocol.codec import build_response
from oncelog.security.acl import Operation, ResourceType
from oncelog.topic_admin import create_partitions

from .base import AwaitCompletion, RequestContext

API_KEY = 37
VERSIONS = (0, 3)


def _result(name: str, code: ErrorCode, message: str | None = None) -> dict[str, Any]:
    return {"name": name, "error_code": code, "error_message": message}


def _grow(context: RequestContext, topic: Any, validate_only: bool, duplicated: bool) -> Completion[dict[str, Any]]:
    name = topic.name
    if duplicated:
        return resolved(_result(name, ErrorCode.invalid_request, "Duplicate topic in request."))
    if not context.allowed(Operation.ALTER, ResourceType.TOPIC, name):
        return resolved(_result(name, ErrorCode.topic_authorization_failed))
    assignments = None if topic.assignments is None else [[int(b) for b in a.broker_ids] for a in topic.assignments]
    try:
        growing = create_partitions(context.broker, name, int(topic.count), assignments, validate_only=validate_only)
    except KafkaError as error:
        return resolved(_result(name, error.code, error.message))
    done: Completion[dict[str, Any]] = Completion()
    growing.on_done(lambda error: done.resolve(
        _result(name, ErrorCode.none) if error is None else _result(name, error.code, error.message)))
    return done


def handle(context: RequestContext, request: Any) -> Any:
    counts = Counter(topic.name for topic in request.topics)
    unique = {topic.name: topic for topic in request.topics}  # one result per name, as Kafka's map
    grown = gather([_grow(context, topic, bool(request.validate_only), counts[topic.name] > 1)
                    for topic in unique.values()])

    def respond(results: list[dict[str, Any]]) -> Any:
        return build_response(API_KEY, context.api_version, {"throttle_time": 0, "results": results})

    return respond(grown.value()) if grown.done else AwaitCompletion(grown, respond)


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return {"throttle_time": 0, "results": [_result(topic.name, code) for topic in request.topics]}
