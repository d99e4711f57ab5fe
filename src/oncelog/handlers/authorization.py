"""Whole-request ACL checks: the ones with which Kafka's `KafkaApis` refuses a request as a whole.

Checked by the connection before the handler runs, only when an authorizer is configured; a refusal is
answered through the API's own error response with Kafka's code. Checks that refuse single topics or
partitions of a request live in the handlers (Produce, Fetch, Metadata, ...), because the other parts
are still served.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from oncelog.errors import ErrorCode
from oncelog.security.acl import Operation, ResourceType

from .base import RequestContext

Check = Callable[[RequestContext, Any], ErrorCode | None]

GROUP_DENIED = ErrorCode.group_authorization_failed
TXN_DENIED = ErrorCode.transactional_id_authorization_failed
CLUSTER_DENIED = ErrorCode.cluster_authorization_failed


def _group(operation: Operation, field: str = "group_id") -> Check:
    def check(context: RequestContext, request: Any) -> ErrorCode | None:
        return None if context.allowed(operation, ResourceType.GROUP, str(getattr(request, field))) else GROUP_DENIED

    return check


def _cluster(operation: Operation) -> Check:
    def check(context: RequestContext, request: Any) -> ErrorCode | None:
        return None if context.allowed(operation, ResourceType.CLUSTER) else CLUSTER_DENIED

    return check


def _transaction(field: str = "transactional_id", then: Check | None = None) -> Check:
    def check(context: RequestContext, request: Any) -> ErrorCode | None:
        if not context.allowed(Operation.WRITE, ResourceType.TRANSACTIONAL_ID, str(getattr(request, field))):
            return TXN_DENIED
        return then(context, request) if then is not None else None

    return check


def _init_producer_id(context: RequestContext, request: Any) -> ErrorCode | None:
    if request.transactional_id is not None:
        return _transaction()(context, request)
    # KIP-679: an idempotent producer needs IDEMPOTENT_WRITE on the cluster or WRITE on some topic.
    if context.allowed(Operation.IDEMPOTENT_WRITE, ResourceType.CLUSTER) or context.broker.authorizer.authorize_any(
            context.principal, context.client_host, Operation.WRITE, ResourceType.TOPIC):
        return None
    return CLUSTER_DENIED


def _add_partitions_to_txn(context: RequestContext, request: Any) -> ErrorCode | None:
    transactional_id = request.v3_and_below_transactional_id
    if transactional_id is None:  # v4+: batched by brokers (CLUSTER_ACTION), not served here
        return None if context.allowed(Operation.CLUSTER_ACTION, ResourceType.CLUSTER) else CLUSTER_DENIED
    return _transaction("v3_and_below_transactional_id")(context, request)


REQUEST_CHECKS: dict[int, Check] = {
    8: _group(Operation.READ),                                        # OffsetCommit (topics: in the handler)
    9: _group(Operation.DESCRIBE),                                    # OffsetFetch (topics: in the handler)
    11: _group(Operation.READ),                                       # JoinGroup
    47: _group(Operation.DELETE),                                     # OffsetDelete (topics: in the handler)
    12: _group(Operation.READ),                                       # Heartbeat
    13: _group(Operation.READ),                                       # LeaveGroup
    14: _group(Operation.READ),                                       # SyncGroup
    22: _init_producer_id,                                            # InitProducerId
    24: _add_partitions_to_txn,                                       # AddPartitionsToTxn (topics: handler)
    25: _transaction(then=_group(Operation.READ)),                    # AddOffsetsToTxn
    26: _transaction(),                                               # EndTxn
    27: _cluster(Operation.CLUSTER_ACTION),                           # WriteTxnMarkers
    28: _transaction(then=_group(Operation.READ)),                    # TxnOffsetCommit (topics: handler)
    29: _cluster(Operation.DESCRIBE),                                 # DescribeAcls
    30: _cluster(Operation.ALTER),                                    # CreateAcls
    31: _cluster(Operation.ALTER),                                    # DeleteAcls
    50: _cluster(Operation.DESCRIBE),                                 # DescribeUserScramCredentials
    51: _cluster(Operation.ALTER),                                    # AlterUserScramCredentials
}
