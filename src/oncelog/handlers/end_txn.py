"""EndTxn (key 26), versions 0–3.

Behaviour: commit or abort as Kafka's `endTransaction` table (docs/protocol.md, Transactions): from Ongoing the decision
is made durable (Prepare*), the markers are written to every partition of the transaction (the
`__consumer_offsets` one included) and Complete* is written before the answer NONE; a retried EndTxn
after completion gets NONE again; the opposite result → INVALID_TXN_STATE; Prepare* of the same result →
CONCURRENT_TRANSACTIONS. Stale epoch → PRODUCER_FENCED (INVALID_PRODUCER_EPOCH before v2).
"""

from __future__ import annotations

from typing import Any

from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response

from .add_partitions_to_txn import fenced_code
from .base import AwaitCompletion, RequestContext

API_KEY = 26
VERSIONS = (0, 3)


def handle(context: RequestContext, request: Any) -> Any:
    completion = context.broker.transactions.end_transaction(
        request.transactional_id, int(request.producer_id), int(request.producer_epoch), bool(request.committed),
        fenced_code(context.api_version))

    def respond(code: ErrorCode) -> Any:
        return build_response(API_KEY, context.api_version, {"throttle_time": 0, "error_code": code})

    return AwaitCompletion(completion, respond)
