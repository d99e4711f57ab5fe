"""CreateTopics (key 19), versions 2–5.

Behaviour (Kafka's `ControllerApis.createTopics` on one node):
- Illegal name → INVALID_TOPIC_EXCEPTION; existing → TOPIC_ALREADY_EXISTS; a name twice in one request →
  INVALID_REQUEST for both; partitions ≤ 0 (other than -1 = default) → INVALID_PARTITIONS; replication
  factor other than 1 or -1 → INVALID_REPLICATION_FACTOR; manual assignments other than this node →
  INVALID_REPLICA_ASSIGNMENT; unknown or invalid config → INVALID_CONFIG.
- `validate_only` checks everything and creates nothing.
- v5+ responses carry the partition count, replication factor and the topic's effective configs.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from oncelog.coordinator.runtime import Completion, gather, resolved
from oncelog.errors import ErrorCode, KafkaError
from oncelog.protocol.codec import build_response
from oncelog.security.acl import Operation, ResourceType
from oncelog.topic_admin import Created, create_topic
from oncelog.topic_config import TOPIC_CONFIGS

from .base import AwaitCompletion, RequestContext

API_KEY = 19
VERSIONS = (2, 5)

CONFIG_SOURCE_TOPIC = 1
CONFIG_SOURCE_DEFAULT = 5


def _create_one(context: RequestContext, topic: Any, validate_only: bool) -> Completion[dict[str, Any]]:
    broker = context.broker
    node = broker.config.node_id
    result: dict[str, Any] = {"name": topic.name, "error_code": ErrorCode.none, "error_message": None,
                              "configs": None}
    try:
        num_partitions = int(topic.num_partitions)
        replication_factor = int(topic.replication_factor)
        if topic.assignments:
            if num_partitions != -1 or replication_factor != -1:
                raise KafkaError(ErrorCode.invalid_request,
                                 "both assignments and a partition count or replication factor were given")
            indexes = sorted(a.partition_index for a in topic.assignments)
            if indexes != list(range(len(indexes))) or any(list(a.broker_ids) != [node]
                                                           for a in topic.assignments):
                raise KafkaError(ErrorCode.invalid_replica_assignment,
                                 f"every partition must be assigned to the single broker {node}")
            num_partitions, replication_factor = len(indexes), 1
        configs = {config.name: config.value for config in topic.configs}
        creating = create_topic(broker, topic.name, num_partitions, replication_factor, configs,
                                validate_only=validate_only)
    except KafkaError as error:
        result.update(error_code=error.code, error_message=error.message)
        return resolved(result)
    done: Completion[dict[str, Any]] = Completion()
    creating.on_done(lambda outcome: done.resolve(_result(context, result, outcome)))
    return done


def _result(context: RequestContext, result: dict[str, Any], outcome: Created | KafkaError) -> dict[str, Any]:
    if isinstance(outcome, KafkaError):
        result.update(error_code=outcome.code, error_message=outcome.message)
        return result
    partitions, replicas, topic_config = outcome
    broker = context.broker
    result.update(
        num_partitions=partitions,
        replication_factor=replicas,
        configs=[
            {
                "name": name,
                "value": topic_config.value(name, broker.config),
                "read_only": False,
                "config_source": CONFIG_SOURCE_DEFAULT if topic_config.is_default(name) else CONFIG_SOURCE_TOPIC,
                "is_sensitive": False,
            }
            for name in sorted(TOPIC_CONFIGS)
        ],
    )
    return result


def handle(context: RequestContext, request: Any) -> Any:
    counts = Counter(topic.name for topic in request.topics)
    results: list[Completion[dict[str, Any]]] = []
    cluster_create = context.allowed(Operation.CREATE, ResourceType.CLUSTER)
    for topic in request.topics:
        if counts[topic.name] > 1:
            results.append(resolved({"name": topic.name, "error_code": ErrorCode.invalid_request,
                                     "error_message": "topic named more than once in the request", "configs": None}))
        elif not (cluster_create or context.allowed(Operation.CREATE, ResourceType.TOPIC, topic.name)):
            results.append(resolved({"name": topic.name, "error_code": ErrorCode.topic_authorization_failed,
                                     "error_message": "Authorization failed.", "configs": None}))
        else:
            results.append(_create_one(context, topic, bool(request.validate_only)))

    def respond(topics: list[dict[str, Any]]) -> Any:
        return build_response(API_KEY, context.api_version, {"throttle_time": 0, "topics": topics})

    created = gather(results)
    return respond(created.value()) if created.done else AwaitCompletion(created, respond)


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return {"throttle_time": 0, "topics": [
        {"name": topic.name, "error_code": code, "error_message": None, "configs": None} for topic in request.topics]}
