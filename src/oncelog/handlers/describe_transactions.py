"""DescribeTransactions (key 65), version 0: state, timeout, start time, producer id/epoch and partitions
of each transactional id; unknown → TRANSACTIONAL_ID_NOT_FOUND; empty id → INVALID_REQUEST."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from oncelog.coordinator.runtime import gather, resolved_or
from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response
from oncelog.security.acl import Operation, ResourceType

from .base import RequestContext, answer

API_KEY = 65
VERSIONS = (0, 0)


def _entry(context: RequestContext, result: dict[str, Any]) -> dict[str, Any]:
    by_topic: dict[str, list[int]] = defaultdict(list)
    for topic, partition in result.pop("partitions"):
        if context.allowed(Operation.DESCRIBE, ResourceType.TOPIC, topic):  # others are left out, as Kafka does
            by_topic[topic].append(partition)
    result["topics"] = [{"topic": topic, "partitions": partitions} for topic, partitions in sorted(by_topic.items())]
    return result


def handle(context: RequestContext, request: Any) -> Any:
    transactions = context.broker.transactions
    described = gather([resolved_or(transactions.describe(transactional_id))
                        for transactional_id in request.transactional_ids])

    refused = error_response(request, ErrorCode.transactional_id_authorization_failed)["transaction_states"]

    def respond(results: list[dict[str, Any]]) -> Any:
        states = []
        for index, (transactional_id, result) in enumerate(zip(request.transactional_ids, results, strict=True)):
            allowed = context.allowed(Operation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, transactional_id)
            states.append(_entry(context, result) if allowed else refused[index])
        return build_response(API_KEY, context.api_version, {"throttle_time": 0, "transaction_states": states})

    return answer(described, respond)


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    # Kafka's TransactionCoordinator.handleDescribeTransactions sets only the error code: the start time
    # keeps the schema's default 0 (a negative timestamp is not a valid one for strict decoders).
    return {"throttle_time": 0, "transaction_states": [
        {"error_code": code, "transactional_id": transactional_id, "transaction_state": "",
         "transaction_timeout": 0, "transaction_start_time": 0, "producer_id": -1, "producer_epoch": -1,
         "topics": []} for transactional_id in request.transactional_ids]}
