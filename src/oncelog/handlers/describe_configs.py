"""DescribeConfigs (key 32), versions 1–4.

Behaviour:
- TOPIC resources (type 2): every topic config with its effective value; source TOPIC_CONFIG for
  overrides, DEFAULT_CONFIG otherwise; synonyms (v1+ `include_synonyms`) name the broker property behind
  each default. Unknown topic → UNKNOWN_TOPIC_OR_PARTITION.
- BROKER resources (type 4) named by our node id (or "" for the default): the broker's properties by
  Kafka's names in Kafka's syntax, read only, source DEFAULT_CONFIG when at the default, else
  STATIC_BROKER_CONFIG. Another id → INVALID_REQUEST.
- GROUP resources (type 32, Kafka 4's group configs): each with the group's override (source
  GROUP_CONFIG) or its default; DESCRIBE_CONFIGS on the group.
- `configuration_keys` filters the list; other resource types → INVALID_REQUEST.
"""

from __future__ import annotations

from typing import Any

from oncelog.config import broker_property_of, broker_property_values, redacted_url
from oncelog.dynamic_config import CLUSTER_DEFAULT, DYNAMIC_PROPERTIES
from oncelog.dynamic_config import source as dynamic_source
from oncelog.errors import ErrorCode
from oncelog.group_config import ENTITY_PREFIX as GROUP_ENTITY_PREFIX
from oncelog.group_config import GROUP_CONFIGS
from oncelog.protocol.codec import build_response
from oncelog.security import settings as security_settings
from oncelog.security.acl import Operation, ResourceType
from oncelog.topic_config import TOPIC_CONFIGS

from .base import RequestContext

API_KEY = 32
VERSIONS = (1, 4)

RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
SOURCE_TOPIC_CONFIG = 1
RESOURCE_GROUP = 32
SOURCE_GROUP_CONFIG = 8
SOURCE_DYNAMIC_BROKER_CONFIG = 2
SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG = 3
SOURCE_STATIC_BROKER_CONFIG = 4
SOURCE_DEFAULT_CONFIG = 5
_CONFIG_TYPES = {"BOOLEAN": 1, "STRING": 2, "INT": 3, "SHORT": 4, "LONG": 5, "DOUBLE": 6, "LIST": 7}


def _topic_configs(context: RequestContext, name: str, include_synonyms: bool) -> list[dict[str, Any]]:
    topic = context.broker.storage.topic(name)
    assert topic is not None
    broker = context.broker.config
    entries = []
    for config_name, spec in sorted(TOPIC_CONFIGS.items()):
        default = topic.config.is_default(config_name)
        synonyms = []
        if include_synonyms and spec.broker_field is not None:
            synonyms.append({"name": broker_property_of(spec.broker_field),
                             "value": str(getattr(broker, spec.broker_field)),
                             "source": SOURCE_STATIC_BROKER_CONFIG})
        entries.append({
            "name": config_name,
            "value": topic.config.value(config_name, broker),
            "read_only": False,
            "config_source": SOURCE_DEFAULT_CONFIG if default else SOURCE_TOPIC_CONFIG,
            "is_default": default,
            "is_sensitive": False,
            "synonyms": synonyms,
            "config_type": _CONFIG_TYPES.get(spec.kind, 0),
            "documentation": None,
        })
    return entries


def _broker_configs(context: RequestContext, entity: str) -> list[dict[str, Any]]:
    """The broker's properties (entity: this broker's id), or only the cluster-wide dynamic defaults
    (entity ""), as Kafka describes them, each with its source."""
    broker = context.broker
    dynamic = broker.dynamic_configs.entries()
    if entity == CLUSTER_DEFAULT:
        return [_entry(name, value, SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG, read_only=False)
                for name, value in sorted(dynamic.get(CLUSTER_DEFAULT, {}).items())]
    entries: list[dict[str, Any]] = []
    for name, value in broker.config.security:
        # Kafka's PASSWORD-type configs (keys, passwords, JAAS) are described without their value.
        sensitive = security_settings.is_sensitive(name)
        entries.append({**_entry(name, None if sensitive else value, SOURCE_STATIC_BROKER_CONFIG),
                        "is_sensitive": sensitive})
    for name, shown, is_default in broker_property_values(broker.config):
        # a database URL may carry a password: never shown
        described = redacted_url(shown) if name == "storage" and shown is not None else shown
        origin = dynamic_source(dynamic, broker.config.node_id, name)
        source = {"broker": SOURCE_DYNAMIC_BROKER_CONFIG, "default": SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG}.get(
            origin or "", SOURCE_DEFAULT_CONFIG if is_default else SOURCE_STATIC_BROKER_CONFIG)
        entries.append(_entry(name, described, source, read_only=name not in DYNAMIC_PROPERTIES))
    return entries


def _group_configs(context: RequestContext, group_id: str) -> list[dict[str, Any]]:
    """Kafka 4's group configs: the group's overrides (GROUP_CONFIG) or the defaults (group_config.py)."""
    overrides = context.broker.dynamic_configs.entries().get(GROUP_ENTITY_PREFIX + group_id, {})
    return [{**_entry(name, overrides.get(name, spec.default),
                      SOURCE_GROUP_CONFIG if name in overrides else SOURCE_DEFAULT_CONFIG, read_only=False),
             "config_type": _CONFIG_TYPES.get(spec.kind, 0)}
            for name, spec in sorted(GROUP_CONFIGS.items())]


def _entry(name: str, value: str | None, source: int, read_only: bool = True) -> dict[str, Any]:
    return {"name": name, "value": value, "read_only": read_only, "config_source": source,
            "is_default": source == SOURCE_DEFAULT_CONFIG, "is_sensitive": False, "synonyms": [],
            "documentation": None}


def handle(context: RequestContext, request: Any) -> Any:
    results = []
    include_synonyms = bool(getattr(request, "include_synonyms", False))
    for resource in request.resources:
        result: dict[str, Any] = {"error_code": ErrorCode.none, "error_message": None,
                                  "resource_type": resource.resource_type,
                                  "resource_name": resource.resource_name, "configs": []}
        resource_type = int(resource.resource_type)
        if resource_type == RESOURCE_TOPIC and not context.allowed(Operation.DESCRIBE_CONFIGS, ResourceType.TOPIC,
                                                                   resource.resource_name):
            result.update(error_code=ErrorCode.topic_authorization_failed, error_message="Authorization failed.")
        elif resource_type == RESOURCE_BROKER and not context.allowed(Operation.DESCRIBE_CONFIGS,
                                                                      ResourceType.CLUSTER):
            result.update(error_code=ErrorCode.cluster_authorization_failed, error_message="Authorization failed.")
        elif resource_type == RESOURCE_TOPIC:
            if context.broker.storage.topic(resource.resource_name) is None:
                result.update(error_code=ErrorCode.unknown_topic_or_partition,
                              error_message=f"topic '{resource.resource_name}' does not exist")
            else:
                result["configs"] = _topic_configs(context, resource.resource_name, include_synonyms)
        elif resource_type == RESOURCE_BROKER and resource.resource_name in ("", str(context.broker.config.node_id)):
            result["configs"] = _broker_configs(context, resource.resource_name)
        elif resource_type == RESOURCE_GROUP:
            if not context.allowed(Operation.DESCRIBE_CONFIGS, ResourceType.GROUP, resource.resource_name):
                result.update(error_code=ErrorCode.group_authorization_failed, error_message="Authorization failed.")
            else:
                result["configs"] = _group_configs(context, resource.resource_name)
        else:
            result.update(error_code=ErrorCode.invalid_request,
                          error_message=f"unsupported resource {resource_type}:{resource.resource_name}")
        keys = resource.configuration_keys
        if keys is not None:
            result["configs"] = [c for c in result["configs"] if c["name"] in keys]
        results.append(result)
    return build_response(API_KEY, context.api_version, {"throttle_time": 0, "results": results})


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return {"throttle_time": 0, "results": [
        {"error_code": code, "error_message": None, "resource_type": r.resource_type,
         "resource_name": r.resource_name, "configs": []} for r in request.resources]}
