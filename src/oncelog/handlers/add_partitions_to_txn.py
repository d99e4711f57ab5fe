"""AddPartitionsToTxn (key 24), versions 0–3 (the client form; v4+ is broker-to-broker verification).

Behaviour (Kafka's `handleAddPartitionsToTransaction`): an unknown partition gets
UNKNOWN_TOPIC_OR_PARTITION and every other OPERATION_NOT_ATTEMPTED, nothing persisted; unknown
transactional id or producer id mismatch → INVALID_PRODUCER_ID_MAPPING; stale epoch → PRODUCER_FENCED
(INVALID_PRODUCER_EPOCH before v2); a pending change or a transaction still completing →
CONCURRENT_TRANSACTIONS. Otherwise the partitions join the transaction (Ongoing, durable) → NONE.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response
from oncelog.security.acl import Operation, ResourceType

from .base import AwaitCompletion, RequestContext

API_KEY = 24
VERSIONS = (0, 3)


def fenced_code(api_version: int) -> ErrorCode:
    """PRODUCER_FENCED exists for these APIs from v2; older versions get INVALID_PRODUCER_EPOCH."""
    return ErrorCode.producer_fenced if api_version >= 2 else ErrorCode.invalid_producer_epoch


def handle(context: RequestContext, request: Any) -> Any:
    partitions = [(topic.name, int(p)) for topic in request.v3_and_below_topics for p in topic.partitions]
    denied = {topic.name for topic in request.v3_and_below_topics
              if not context.allowed(Operation.WRITE, ResourceType.TOPIC, topic.name)}
    if denied:  # Kafka adds nothing then: the others are OPERATION_NOT_ATTEMPTED
        errors = {(topic, partition): ErrorCode.topic_authorization_failed if topic in denied
                  else ErrorCode.operation_not_attempted for topic, partition in partitions}
        return _respond(context, errors)
    completion = context.broker.transactions.add_partitions(
        request.v3_and_below_transactional_id, int(request.v3_and_below_producer_id),
        int(request.v3_and_below_producer_epoch), partitions, fenced_code(context.api_version))

    return AwaitCompletion(completion, lambda errors: _respond(context, errors))


def _respond(context: RequestContext, errors: dict[tuple[str, int], ErrorCode]) -> Any:
    by_topic: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (topic, partition), code in errors.items():
        by_topic[topic].append({"partition_index": partition, "partition_error_code": code})
    results = [{"name": topic, "results_by_partition": results} for topic, results in by_topic.items()]
    return build_response(API_KEY, context.api_version, {"throttle_time": 0, "results_by_topic_v3_and_below": results})


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return {"throttle_time": 0, "results_by_topic_v3_and_below": [
        {"name": topic.name, "results_by_partition": [
            {"partition_index": partition, "partition_error_code": code} for partition in topic.partitions]}
        for topic in request.v3_and_below_topics]}
