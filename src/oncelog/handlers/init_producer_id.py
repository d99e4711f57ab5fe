"""InitProducerId (key 22), versions 0–4.

Behaviour (Kafka's `TransactionCoordinator.handleInitProducerId` for `transactional_id = null`):
- An idempotent, non-transactional producer always gets a *new* producer id with epoch 0, whatever
  producer id, epoch (the KIP-360 form, v3+) or timeout it sends; ids come from an allocator that never
  reuses an id across restarts. Nothing else is persisted.
- An empty transactional id → INVALID_REQUEST; exactly one of producer id / epoch set → INVALID_REQUEST.
- A non-empty transactional id needs the transaction coordinator, which this broker does not have yet:
  COORDINATOR_NOT_AVAILABLE (FindCoordinator for transactions is not advertised either).
"""

from __future__ import annotations

from typing import Any

from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response

from .base import RequestContext

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
    if transactional_id is not None:
        if transactional_id == "":
            return _respond(context, ErrorCode.invalid_request)
        return _respond(context, ErrorCode.coordinator_not_available)
    return _respond(context, ErrorCode.none, context.broker.producer_ids.allocate(), 0)
