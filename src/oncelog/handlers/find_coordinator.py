"""FindCoordinator (key 10), versions 0–4.

Behaviour: this node coordinates every group (key type 0). The first group lookup creates
`__consumer_offsets` (Kafka auto-creates it the same way), with replication factor 1 so it never waits
for replicas that do not exist; likewise every transactional id (key type 1) and `__transaction_state`.
v4 answers a batch of `coordinator_keys`. Other key types → INVALID_REQUEST; an empty key →
INVALID_REQUEST.
"""

from __future__ import annotations

from typing import Any

from oncelog.cluster import group_partition_key
from oncelog.coordinator.group.coordinator import OFFSETS_TOPIC
from oncelog.coordinator.transaction.coordinator import TRANSACTION_STATE_TOPIC
from oncelog.errors import ErrorCode, KafkaError
from oncelog.protocol.codec import build_response
from oncelog.security.acl import Operation, ResourceType

from .base import RequestContext

API_KEY = 10
VERSIONS = (0, 4)

KEY_TYPE_GROUP = 0
KEY_TYPE_TRANSACTION = 1


def coordinator_for(context: RequestContext, key: str, key_type: int) -> dict[str, Any]:
    broker = context.broker
    missing = {"key": key, "node_id": -1, "host": "", "port": -1}
    if not key:
        return {**missing, "error_code": ErrorCode.invalid_request, "error_message": "empty coordinator key"}
    if key_type == KEY_TYPE_GROUP and not context.allowed(Operation.DESCRIBE, ResourceType.GROUP, key):
        return {**missing, "error_code": ErrorCode.group_authorization_failed, "error_message": None}
    if key_type == KEY_TYPE_TRANSACTION and not context.allowed(Operation.DESCRIBE, ResourceType.TRANSACTIONAL_ID,
                                                                key):
        return {**missing, "error_code": ErrorCode.transactional_id_authorization_failed, "error_message": None}
    if key_type == KEY_TYPE_GROUP:  # the broker that wins the group's __consumer_offsets partition
        node_id = broker.cluster.coordinator(group_partition_key(broker.groups.partition_of(key)))
    else:  # any broker serves any transactional id; the hash only spreads them
        node_id = broker.cluster.coordinator(f"{key_type}:{key}")
    address = broker.broker_address(node_id, context.listener)
    if address is None:
        return {**missing, "error_code": ErrorCode.coordinator_not_available, "error_message": None}
    found = {"key": key, "node_id": node_id, "host": address[0], "port": address[1],
             "error_code": ErrorCode.none, "error_message": None}
    if broker.shared is not None:  # the database holds the state: the coordinator is any live broker
        return found if key_type in (KEY_TYPE_GROUP, KEY_TYPE_TRANSACTION) else {
            **missing, "error_code": ErrorCode.invalid_request, "error_message": f"unknown key type {key_type}"}
    try:
        if key_type == KEY_TYPE_GROUP:
            broker.ensure_coordinator_partition(OFFSETS_TOPIC, broker.groups.partition_of(key))
            return found
        if key_type == KEY_TYPE_TRANSACTION:
            broker.ensure_coordinator_partition(TRANSACTION_STATE_TOPIC, broker.transactions.partition_of(key))
            return found
    except KafkaError as error:  # the coordinator's partition cannot be created or is offline
        return {**missing, "error_code": ErrorCode.coordinator_not_available, "error_message": error.message}
    return {**missing, "error_code": ErrorCode.invalid_request, "error_message": f"unknown key type {key_type}"}


def handle(context: RequestContext, request: Any) -> Any:
    key_type = int(getattr(request, "key_type", KEY_TYPE_GROUP))
    if context.api_version >= 4:
        coordinators = [coordinator_for(context, key, key_type) for key in request.coordinator_keys]
        return build_response(API_KEY, context.api_version, {"throttle_time": 0, "coordinators": coordinators})
    result = coordinator_for(context, request.key, key_type)
    return build_response(API_KEY, context.api_version, {"throttle_time": 0, **result})


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    missing = {"node_id": -1, "host": "", "port": -1, "error_code": code, "error_message": None}
    keys = getattr(request, "coordinator_keys", None)
    if keys is not None:
        return {"throttle_time": 0, "coordinators": [{"key": key, **missing} for key in keys]}
    return {"throttle_time": 0, **missing}
