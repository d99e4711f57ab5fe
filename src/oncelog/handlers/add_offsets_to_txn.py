"""AddOffsetsToTxn (key 25), versions 0–3: adds the group's `__consumer_offsets` partition
(`abs(hash(group)) % offsets.topic.num.partitions`) to the transaction, with AddPartitionsToTxn's rules
and a single error code."""

from __future__ import annotations

from typing import Any

from oncelog.coordinator.group.coordinator import OFFSETS_TOPIC
from oncelog.errors import ErrorCode, KafkaError
from oncelog.protocol.codec import build_response

from .add_partitions_to_txn import fenced_code
from .base import AwaitCompletion, RequestContext

API_KEY = 25
VERSIONS = (0, 3)


def handle(context: RequestContext, request: Any) -> Any:
    broker = context.broker
    partition = broker.groups.partition_of(request.group_id)
    try:
        broker.ensure_coordinator_partition(OFFSETS_TOPIC, partition)
    except KafkaError:
        return build_response(API_KEY, context.api_version,
                              {"throttle_time": 0, "error_code": ErrorCode.coordinator_not_available})
    completion = broker.transactions.add_partitions(
        request.transactional_id, int(request.producer_id), int(request.producer_epoch),
        [(OFFSETS_TOPIC, partition)], fenced_code(context.api_version))

    def respond(errors: dict[tuple[str, int], ErrorCode]) -> Any:
        return build_response(API_KEY, context.api_version,
                              {"throttle_time": 0, "error_code": errors[(OFFSETS_TOPIC, partition)]})

    return AwaitCompletion(completion, respond)
