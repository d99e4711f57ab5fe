"""InitProducerId (key 22), versions 0–4.

Behaviour (Kafka's `TransactionCoordinator.handleInitProducerId` for `transactional_id = null`):
- An idempotent, non-transactional producer always gets a *new* producer id with epoch 0, whatever
  producer id, epoch (the KIP-360 form, v3+) or timeout it sends; ids come from an allocator that never
  reuses an id across restarts. Nothing else is persisted.
- An empty transactional id → INVALID_REQUEST; exactly one of producer id / epoch set → INVALID_REQUEST.
- A transactional id goes to the transaction coordinator (`coordinator/transaction`): epoch bump, fencing
  and aborting of the previous instance's open transaction (answered CONCURRENT_TRANSACTIONS; the client
  retries), the KIP-360 retry form, timeout validation against `transaction.max.timeout.ms`.
  PRODUCER_FENCED becomes INVALID_PRODUCER_EPOCH for v0–3, as Kafka maps it.
"""

from __future__ import annotations

from typing import Any

from oncelog.coordinator.transaction.coordinator import TRANSACTION_STATE_TOPIC
from oncelog.errors import ErrorCode, KafkaError
from oncelog.protocol.codec import build_response, duration_ms

from .base import AwaitCompletion, RequestContext

API_KEY = 22
VERSIONS = (0, 4)


def _respond(context: RequestContext, code: ErrorCode, producer_id: int = -1, epoch: int = -1) -> Any:
    return build_response(API_KEY, context.api_version, {
        "throttle_time": 0, "error_code": code, "producer_id": producer_id, "producer_epoch": epoch})


def handle(context: RequestContext, request: Any) -> Any:
    transactional_id = request.transactional_id
    producer_id = int(getattr(request, "producer_id", -1))
    producer_epoch = int(getattr(request, "producer_epoch", -1))
    if (producer_id == -1) != (producer_epoch == -1):
        return _respond(context, ErrorCode.invalid_request)
    broker = context.broker
    try:
        if transactional_id is None:
            return _respond(context, ErrorCode.none, broker.producer_ids.allocate(), 0)
        if broker.shared is None:  # the local coordinator's __transaction_state partition must be usable
            partition = broker.transactions.partition_of(transactional_id or "x")
            broker.ensure_coordinator_partition(TRANSACTION_STATE_TOPIC, partition)
    except (OSError, KafkaError):
        # The producer-id block or the coordinator's partition cannot be written: retriable, as Kafka's
        # COORDINATOR_NOT_AVAILABLE while its log is unavailable.
        return _respond(context, ErrorCode.coordinator_not_available)
    completion = broker.transactions.init_producer_id(
        transactional_id, duration_ms(request.transaction_timeout), producer_id, producer_epoch)

    def respond(result: dict[str, Any]) -> Any:
        code = result["error_code"]
        if code == ErrorCode.producer_fenced and context.api_version < 4:
            code = ErrorCode.invalid_producer_epoch
        return _respond(context, code, result["producer_id"], result["producer_epoch"])

    return AwaitCompletion(completion, respond)
