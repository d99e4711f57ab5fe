"""AlterConfigs (key 33, versions 0–2) and IncrementalAlterConfigs (key 44, versions 0–1) for topics.

Behaviour, per resource as Kafka's ConfigAdminManager: ALTER_CONFIGS on the topic or
TOPIC_AUTHORIZATION_FAILED; unknown topic → UNKNOWN_TOPIC_OR_PARTITION; a resource named twice →
INVALID_REQUEST; an unknown config or a bad value → INVALID_CONFIG (nothing of that resource changes);
`validate_only` checks only. AlterConfigs replaces the whole override set (what is not named returns to
its default); IncrementalAlterConfigs applies SET / DELETE / APPEND / SUBTRACT (topic_admin). The new
overrides are durable (topics.json, or the database) before the answer, and apply to the partitions at
once (segment size and age, retention, max.message.bytes, timestamps, cleanup policy). Broker
resources are dynamic broker configs (dynamic_config.py): ALTER_CONFIGS on the cluster; the entity is
"" (the cluster-wide default) or a broker id; only the log defaults that topic configs inherit may
change (else INVALID_CONFIG); durable before the answer, applied at once by every broker. Group
resources (type 32) are Kafka 4's group configs (group_config.py): ALTER_CONFIGS on the group.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from oncelog.config import BrokerConfig, ConfigError, broker_property_values
from oncelog.coordinator.runtime import Completion, gather, resolved
from oncelog.dynamic_config import CLUSTER_DEFAULT, DYNAMIC_PROPERTIES
from oncelog.dynamic_config import validate as validate_dynamic
from oncelog.errors import ErrorCode, KafkaError
from oncelog.group_config import ENTITY_PREFIX as GROUP_ENTITY_PREFIX
from oncelog.group_config import GROUP_CONFIGS
from oncelog.group_config import validate as validate_group_configs
from oncelog.protocol.codec import build_response
from oncelog.security.acl import Operation, ResourceType
from oncelog.topic_admin import alter_topic_configs, changed_overrides
from oncelog.topic_config import TOPIC_CONFIGS, TopicConfig

from .base import AwaitCompletion, RequestContext

API_KEY = 33
VERSIONS = (0, 2)
INCREMENTAL_API_KEY = 44
INCREMENTAL_VERSIONS = (0, 1)
RESOURCE_TOPIC, RESOURCE_BROKER, RESOURCE_GROUP = 2, 4, 32
BUILT_IN, DEFAULTS = TopicConfig(), BrokerConfig()
"""Kafka's built-in defaults (no override, no configured broker default)."""


def _answer(resource: Any, code: ErrorCode, message: str | None = None) -> dict[str, Any]:
    return {"error_code": code, "error_message": message, "resource_type": resource.resource_type,
            "resource_name": resource.resource_name}


def _alter(context: RequestContext, resource: Any, incremental: bool, validate_only: bool,
           duplicated: bool) -> Completion[dict[str, Any]]:
    name = resource.resource_name
    kind = int(resource.resource_type)
    if duplicated:
        return resolved(_answer(resource, ErrorCode.invalid_request, f"resource {name} appears twice"))
    if kind == RESOURCE_BROKER:
        if not context.allowed(Operation.ALTER_CONFIGS, ResourceType.CLUSTER):
            return resolved(_answer(resource, ErrorCode.cluster_authorization_failed))
        return _alter_broker(context, resource, incremental, validate_only)
    if kind == RESOURCE_GROUP:
        if not context.allowed(Operation.ALTER_CONFIGS, ResourceType.GROUP, name):
            return resolved(_answer(resource, ErrorCode.group_authorization_failed))
        return _alter_group(context, resource, incremental, validate_only)
    if kind != RESOURCE_TOPIC:
        return resolved(_answer(resource, ErrorCode.invalid_request, f"unsupported resource type {kind}"))
    if not context.allowed(Operation.ALTER_CONFIGS, ResourceType.TOPIC, name):
        return resolved(_answer(resource, ErrorCode.topic_authorization_failed))
    changes = [(c.name, int(c.config_operation), c.value) for c in resource.configs] if incremental else []
    whole = {c.name: c.value for c in resource.configs} if not incremental else {}

    def change(current: dict[str, str]) -> dict[str, str | None]:
        if incremental:  # APPEND / SUBTRACT start from Kafka's built-in default where nothing is set
            return changed_overrides(current, changes, lambda config_name: BUILT_IN.value(config_name, DEFAULTS))
        missing = [config_name for config_name, value in whole.items() if value is None]
        if missing:
            raise KafkaError(ErrorCode.invalid_request, f"Null value not supported for : {missing[0]}")
        return dict(whole)

    try:
        altering = alter_topic_configs(context.broker, name, change, validate_only=validate_only)
    except KafkaError as error:
        return resolved(_answer(resource, error.code, error.message))
    done: Completion[dict[str, Any]] = Completion()
    altering.on_done(lambda error: done.resolve(
        _answer(resource, ErrorCode.none) if error is None else _answer(resource, error.code, error.message)))
    return done


def _alter_broker(context: RequestContext, resource: Any, incremental: bool,
                  validate_only: bool) -> Completion[dict[str, Any]]:
    """Dynamic broker configs for one entity: "" (every broker's default) or a broker's id."""
    broker = context.broker
    entity = resource.resource_name
    known = {str(node.node_id) for node in broker.cluster.brokers()} | {str(broker.config.node_id)}
    if entity != CLUSTER_DEFAULT and entity not in known:
        return resolved(_answer(resource, ErrorCode.invalid_request, f"no broker {entity!r}"))
    return _alter_stored(context, resource, entity, incremental, validate_only,
                         lambda name: broker_property_values_by_name(DEFAULTS).get(name) or "",
                         lambda name: TOPIC_CONFIGS[DYNAMIC_PROPERTIES[name]].kind if name in DYNAMIC_PROPERTIES
                         else None, validate_dynamic)


def _alter_group(context: RequestContext, resource: Any, incremental: bool,
                 validate_only: bool) -> Completion[dict[str, Any]]:
    """Kafka 4's group configs (group_config.py), kept with the dynamic configs under `group:<id>`."""
    return _alter_stored(context, resource, GROUP_ENTITY_PREFIX + resource.resource_name, incremental, validate_only,
                         lambda name: GROUP_CONFIGS[name].default,
                         lambda name: GROUP_CONFIGS[name].kind if name in GROUP_CONFIGS else None,
                         validate_group_configs)


def _alter_stored(context: RequestContext, resource: Any, entity: str, incremental: bool, validate_only: bool,
                  default_of: Callable[[str], str], kind_of: Callable[[str], str | None],
                  validate: Callable[[dict[str, str | None]], dict[str, str]]) -> Completion[dict[str, Any]]:
    """Change one entity of the dynamic config store: the whole set (AlterConfigs) or by operations
    (IncrementalAlterConfigs, APPEND/SUBTRACT starting from `default_of`), checked by `validate`."""
    store = context.broker.dynamic_configs
    current = store.entries().get(entity, {})
    try:
        if incremental:
            overrides = changed_overrides(
                current, [(c.name, int(c.config_operation), c.value) for c in resource.configs], default_of, kind_of)
        else:
            overrides = {c.name: c.value for c in resource.configs}
            missing = [name for name, value in overrides.items() if value is None]
            if missing:
                raise KafkaError(ErrorCode.invalid_request, f"Null value not supported for : {missing[0]}")
        values = validate(overrides)
    except KafkaError as error:
        return resolved(_answer(resource, error.code, error.message))
    except (ConfigError, ValueError) as error:
        return resolved(_answer(resource, ErrorCode.invalid_config, str(error)))
    if validate_only:
        return resolved(_answer(resource, ErrorCode.none))
    done: Completion[dict[str, Any]] = Completion()
    store.replace(entity, values).on_done(lambda error: done.resolve(
        _answer(resource, ErrorCode.none) if error is None else
        _answer(resource, ErrorCode.kafka_storage_error, str(error))))
    return done


def broker_property_values_by_name(config: Any) -> dict[str, str | None]:
    return {name: value for name, value, _default in broker_property_values(config)}


def respond_to(context: RequestContext, request: Any, api_key: int, incremental: bool) -> Any:
    counts = Counter((int(r.resource_type), r.resource_name) for r in request.resources)
    altered = gather([_alter(context, resource, incremental, bool(request.validate_only),
                             counts[(int(resource.resource_type), resource.resource_name)] > 1)
                      for resource in request.resources])

    def respond(results: list[dict[str, Any]]) -> Any:
        return build_response(api_key, context.api_version, {"throttle_time": 0, "responses": results})

    return respond(altered.value()) if altered.done else AwaitCompletion(altered, respond)


def handle(context: RequestContext, request: Any) -> Any:
    return respond_to(context, request, API_KEY, incremental=False)


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return {"throttle_time": 0, "responses": [_answer(resource, code) for resource in request.resources]}
