"""Dynamic broker configs: the log defaults an operator may change on a running cluster, as Kafka's
`DynamicLogConfig` (`kafka-configs --entity-type brokers [--entity-name N | --entity-default] --alter`).

Theory of operation: the broker's static config (file and --override) stays as it was read; dynamic
entries, per entity ("" for the cluster-wide default, or a broker id), are kept durably by the storage
backend (a JSON file in the data directory; a table on PostgreSQL, where a NOTIFY tells every broker)
and laid over it — the cluster default first, then this broker's own — into the effective BrokerConfig
the broker uses from then on. Only the broker properties that are defaults of topic configs can change
this way (the topic-level synonyms: a topic without an override follows them at once); any other is
refused with INVALID_CONFIG, as Kafka refuses non-dynamic ones.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oncelog.config import BrokerConfig, ConfigError, broker_property_of, parse_broker_property
from oncelog.coordinator.runtime import Completion, resolved
from oncelog.fs import FileSystem, write_atomically
from oncelog.topic_config import TOPIC_CONFIGS

DYNAMIC_PROPERTIES: dict[str, str] = {
    broker_property_of(spec.broker_field): topic_name
    for topic_name, spec in TOPIC_CONFIGS.items() if spec.broker_field is not None
}
"""Dynamically updatable broker property → the topic config it is the default of."""

CLUSTER_DEFAULT = ""
Entries = dict[str, dict[str, str]]
"""entity ("" or a broker id) → property → value."""


def validate(overrides: dict[str, str | None]) -> dict[str, str]:
    """The entity's new dynamic properties, checked as their topic-level twins are; ConfigError else."""
    checked = {}
    for name, value in overrides.items():
        if name not in DYNAMIC_PROPERTIES:
            raise ConfigError(f"{name} cannot be changed on a running broker (dynamic: "
                              f"{', '.join(sorted(DYNAMIC_PROPERTIES))}); set it in server.properties")
        if value is None:
            continue
        try:
            TOPIC_CONFIGS[DYNAMIC_PROPERTIES[name]].parse(value)
            parse_broker_property(name, value)
        except (ValueError, ConfigError) as error:
            raise ConfigError(f"invalid value {value!r} for {name}: {error}") from error
        checked[name] = value
    return checked


def effective(static: BrokerConfig, entries: Entries) -> BrokerConfig:
    """`static` with the cluster default's dynamic entries, then this broker's, laid over it."""
    changes: dict[str, Any] = {}
    for entity in (CLUSTER_DEFAULT, str(static.node_id)):
        for name, value in entries.get(entity, {}).items():
            field, parsed = parse_broker_property(name, value)
            changes[field] = parsed
    return dataclasses.replace(static, **changes) if changes else static


def source(entries: Entries, node_id: int, name: str) -> str | None:
    """Where a dynamic value comes from: "broker", "default" (cluster-wide), or None (not dynamic)."""
    if name in entries.get(str(node_id), {}):
        return "broker"
    if name in entries.get(CLUSTER_DEFAULT, {}):
        return "default"
    return None


def encode(entries: Entries) -> bytes:
    return json.dumps({entity: dict(sorted(values.items())) for entity, values in sorted(entries.items()) if values},
                      indent=1).encode()


def decode(data: bytes) -> Entries:
    loaded = json.loads(data)
    if not isinstance(loaded, dict):
        raise ValueError("not an object")
    return {str(entity): {str(k): str(v) for k, v in values.items()} for entity, values in loaded.items()}


class LocalDynamicConfigs:
    """The data directory's `dynamic-broker-configs.json`, replaced atomically on every change."""

    FILE = "dynamic-broker-configs.json"

    def __init__(self, fs: FileSystem, directory: Path) -> None:
        self._fs = fs
        self._path = directory / self.FILE
        self._entries: Entries = {}
        self.on_change: Callable[[], None] = lambda: None

    def load(self) -> None:
        if self._fs.exists(self._path):
            self._entries = decode(self._fs.read_bytes(self._path))

    def entries(self) -> Entries:
        return {entity: dict(values) for entity, values in self._entries.items()}

    def replace(self, entity: str, values: dict[str, str]) -> Completion[OSError | None]:
        changed = {**self.entries(), entity: dict(values)}
        try:
            write_atomically(self._fs, self._path, encode(changed))
        except OSError as error:
            return resolved(error)
        self._entries = {name: found for name, found in changed.items() if found}
        self.on_change()
        return resolved(None)
