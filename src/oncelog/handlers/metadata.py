"""Metadata (key 3), versions 1–12.

Behaviour:
- Brokers are the live brokers of the cluster (just this one on local storage); the controller is the
  lowest live id (librdkafka's admin client needs one). Each partition's leader is the cluster's choice
  (rendezvous hash over live brokers, `oncelog.cluster`), with a constant leader epoch and itself as
  the only replica and ISR; every broker serves every partition, so a stale choice is never wrong.
- `topics = null` lists every topic; an empty list lists none.
- Unknown topics are created with the broker defaults when `auto.create.topics.enable` is on and the
  request allows it (v4+ `allow_auto_topic_creation`; always for v1–3), else UNKNOWN_TOPIC_OR_PARTITION.
  Creation is synchronous here, so the response already carries the new partitions (Kafka first answers
  LEADER_NOT_AVAILABLE while its controller works).
- Illegal names get INVALID_TOPIC_EXCEPTION; an auto-creation refused (a name collision, the partition
  limit, the disk) gets the creation's error code.
- Topic ids are real (stored in topics.json); Fetch stays ≤ 12 so librdkafka keeps fetching by name.
  From v12 a topic can be asked for by id (unknown: UNKNOWN_TOPIC_ID); v10 and v11 carry the field but,
  as in Kafka, asking by id there is INVALID_REQUEST.
- A partition taken offline by a disk error has no leader: LEADER_NOT_AVAILABLE, leader -1, this broker
  in `offline_replicas`.
- With an authorizer (KafkaApis.handleTopicMetadataRequest): listing every topic lists only those the
  principal may DESCRIBE; a named topic it may not describe is TOPIC_AUTHORIZATION_FAILED (so are topic
  ids); auto-creation also needs CREATE on the cluster or the topic.
"""

from __future__ import annotations

import uuid
from typing import Any

from oncelog.coordinator.runtime import Completion, gather, resolved
from oncelog.errors import ErrorCode, KafkaError
from oncelog.log.manager import topic_name_problem
from oncelog.protocol.codec import build_response
from oncelog.security.acl import Operation, ResourceType
from oncelog.storage.api import LEADER_EPOCH, TopicInfo
from oncelog.topic_admin import auto_create_topic

from .base import AwaitCompletion, RequestContext

API_KEY = 3
VERSIONS = (1, 12)

_UNKNOWN_TOPIC_ID = None


def _partition_entry(node: int, index: int, offline: bool) -> dict[str, Any]:
    """`node` leads the partition (any broker serves it correctly; the leader only spreads clients)."""
    if offline:
        # The only replica's log is offline after a disk error: no leader, as Kafka reports a partition
        # whose leader's log directory failed.
        return {"error_code": ErrorCode.leader_not_available, "partition_index": index, "leader_id": -1,
                "leader_epoch": LEADER_EPOCH, "replica_nodes": [node], "isr_nodes": [], "offline_replicas": [node]}
    return {"error_code": ErrorCode.none, "partition_index": index, "leader_id": node, "leader_epoch": LEADER_EPOCH,
            "replica_nodes": [node], "isr_nodes": [node], "offline_replicas": []}


def topic_entry(context: RequestContext, topic: TopicInfo) -> dict[str, Any]:
    storage = context.broker.storage
    leader = context.broker.cluster.leader
    return {
        "error_code": ErrorCode.none,
        "name": topic.name,
        "topic_id": topic.topic_id,
        "is_internal": topic.internal,
        "partitions": [_partition_entry(leader(topic.name, index), index, storage.offline(topic.name, index))
                       for index in range(topic.partitions)],
    }


def _error_entry(name: str | None, code: ErrorCode, topic_id: uuid.UUID | None = _UNKNOWN_TOPIC_ID) -> dict[str, Any]:
    return {"error_code": code, "name": name, "topic_id": topic_id, "partitions": []}


def _by_topic_id(context: RequestContext, name: str | None, topic_id: uuid.UUID | None) -> dict[str, Any]:
    """Kafka's rules: ids only from v12 (v10 and v11 have the field but no lookup: INVALID_REQUEST), a
    name or an id but not both, an unknown id gets UNKNOWN_TOPIC_ID."""
    if context.api_version < 12 or topic_id is None or name is not None:
        # Response names are nullable only from v12.
        return _error_entry(name if context.api_version >= 12 else name or "", ErrorCode.invalid_request, topic_id)
    topic = context.broker.storage.topic_by_id(topic_id)
    if topic is None:
        return _error_entry(None, ErrorCode.unknown_topic_id, topic_id)
    if not context.allowed(Operation.DESCRIBE, ResourceType.TOPIC, topic.name):
        return _error_entry(None, ErrorCode.topic_authorization_failed, topic_id)
    return topic_entry(context, topic)


def handle(context: RequestContext, request: Any) -> Any:
    broker = context.broker
    entries: list[Completion[dict[str, Any]]] = []
    if request.topics is None:
        entries = [resolved(topic_entry(context, topic)) for topic in broker.storage.topics()
                   if context.allowed(Operation.DESCRIBE, ResourceType.TOPIC, topic.name)]
    else:
        allow_auto_create = context.api_version < 4 or bool(request.allow_auto_topic_creation)
        for requested in request.topics:
            entries.append(_requested_entry(context, requested, allow_auto_create))
    listed = gather(entries)
    if listed.done:
        return _respond(context, request, listed.value())
    return AwaitCompletion(listed, lambda topics: _respond(context, request, topics))


def _requested_entry(context: RequestContext, requested: Any, allow_auto_create: bool) -> Completion[dict[str, Any]]:
    name = requested.name
    topic_id = getattr(requested, "topic_id", None)
    if name is None or topic_id is not None:
        return resolved(_by_topic_id(context, name, topic_id))
    if not context.allowed(Operation.DESCRIBE, ResourceType.TOPIC, name):
        return resolved(_error_entry(name, ErrorCode.topic_authorization_failed))
    topic = context.broker.storage.topic(name)
    if topic is not None:
        return resolved(topic_entry(context, topic))
    if topic_name_problem(name) is not None:
        return resolved(_error_entry(name, ErrorCode.invalid_topic_exception))
    if allow_auto_create and context.broker.config.auto_create_topics_enable and not (
            context.allowed(Operation.CREATE, ResourceType.CLUSTER)
            or context.allowed(Operation.CREATE, ResourceType.TOPIC, name)):
        return resolved(_error_entry(name, ErrorCode.topic_authorization_failed))
    creating = auto_create_topic(context.broker, name) if allow_auto_create else None
    if creating is None:
        return resolved(_error_entry(name, ErrorCode.unknown_topic_or_partition))
    entry: Completion[dict[str, Any]] = Completion()
    creating.on_done(lambda created: entry.resolve(
        _error_entry(name, created.code) if isinstance(created, KafkaError) else topic_entry(context, created)))
    return entry


def _respond(context: RequestContext, request: Any, topics: list[dict[str, Any]]) -> Any:
    broker = context.broker
    topic_operations = bool(getattr(request, "include_topic_authorized_operations", False))
    for entry in topics:
        if entry["error_code"] == ErrorCode.none:
            entry["topic_authorized_operations"] = context.authorized_operations(
                topic_operations, ResourceType.TOPIC, entry["name"])
    return build_response(
        API_KEY,
        context.api_version,
        {
            "throttle_time": 0,
            "brokers": [{"node_id": node_id, "host": host, "port": port}
                        for node_id, host, port in broker.live_brokers(context.listener)],
            "cluster_id": broker.cluster_id,
            "controller_id": broker.cluster.controller(),
            "topics": topics,
            "cluster_authorized_operations": context.authorized_operations(
                bool(getattr(request, "include_cluster_authorized_operations", False)), ResourceType.CLUSTER),
        },
    )


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    """Every requested topic with the error and no brokers (Kafka's `MetadataRequest.getErrorResponse`)."""
    return {"throttle_time": 0, "brokers": [], "cluster_id": None, "controller_id": -1,
            "topics": [_error_entry(topic.name or "", code, getattr(topic, "topic_id", None))
                       for topic in request.topics or []]}
