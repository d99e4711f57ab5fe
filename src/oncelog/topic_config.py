"""Topic configs: every one Kafka's `LogConfig` accepts, with Kafka's validators and defaults.

A topic stores only its overrides; the rest default to their broker-level twins (`retention.ms` to
`log.retention.ms`, ...) or, where the broker has none, to Kafka's default. What they do here:

- honoured: `segment.bytes`, `segment.ms`, `retention.ms`, `retention.bytes`, `index.interval.bytes`,
  `max.message.bytes`, `message.timestamp.type`, `message.timestamp.before.max.ms` and
  `message.timestamp.after.max.ms` (records stamped outside the window get INVALID_TIMESTAMP),
  `cleanup.policy`, `delete.retention.ms`, `compression.type` (other than `producer`, client batches
  are re-compressed on append) with `compression.gzip.level`, `.lz4.level` and `.zstd.level`;
- accepted, validated and reported, without effect on one node that fsyncs its logs itself:
  `flush.messages`,
  `flush.ms`, `file.delete.delay.ms`, `preallocate`, `segment.jitter.ms`, `segment.index.bytes`,
  `min.insync.replicas`, `unclean.leader.election.enable`, the replication throttles,
  `min.cleanable.dirty.ratio`, `min.compaction.lag.ms`, `max.compaction.lag.ms`, and the tiered-storage
  ones (`remote.storage.enable` only `false`: there is no remote tier).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oncelog.config import BrokerConfig

INT_MAX = 2**31 - 1
LONG_MAX = 2**63 - 1


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _kafka_bool(value: str) -> str:
    """A topic BOOLEAN as Kafka writes it back: true or false (Kafka accepts only those two)."""
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise ValueError("expected true or false")
    return lowered


def _parse_timestamp_type(value: str) -> str:
    if value not in ("CreateTime", "LogAppendTime"):
        raise ValueError("expected CreateTime or LogAppendTime")
    return value


def _parse_cleanup_policy(value: str) -> str:
    parts = sorted(part.strip() for part in value.split(","))
    if not parts or any(part not in ("delete", "compact") for part in parts):
        raise ValueError("expected delete, compact or compact,delete")
    return ",".join(parts)


COMPRESSION_TYPES = ("producer", "uncompressed", "gzip", "snappy", "lz4", "zstd")


def _parse_compression_type(value: str) -> str:
    if value not in COMPRESSION_TYPES:
        raise ValueError(f"expected one of {', '.join(COMPRESSION_TYPES)}")
    return value


def _int_in(low: int, high: int) -> Callable[[str], int]:
    """A parser for an integer config with Kafka's range validator (`atLeast`, `between`)."""

    def parse(value: str) -> int:
        number = int(value)
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}" if high < LONG_MAX else f"must be at least {low}")
        return number

    return parse


def _ratio(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError("must be between 0 and 1")
    return number


def _replica_list(value: str) -> str:
    """Kafka's ThrottledReplicaListValidator: empty, `*`, or partition:broker pairs."""
    text = value.strip()
    if text in ("", "*"):
        return text
    for item in text.split(","):
        partition, sep, broker = item.strip().partition(":")
        if not sep or not partition.strip().isdigit() or not broker.strip().isdigit():
            raise ValueError("expected *, or a list of partition:broker pairs")
    return text


def _only_false(value: str) -> str:
    if _kafka_bool(value) != "false":
        raise ValueError("there is no remote storage tier here: only false")
    return "false"


@dataclass(frozen=True, slots=True)
class TopicConfigSpec:
    name: str
    broker_field: str | None
    parse: Callable[[str], Any]
    kind: str = "LONG"
    """Kafka's ConfigType name, for DescribeConfigs."""
    default: str | None = None
    """Kafka's default, for configs without a broker-level twin here."""


TOPIC_CONFIGS: dict[str, TopicConfigSpec] = {
    spec.name: spec
    for spec in (
        # Ranges are Kafka's LogConfig validators (segment.bytes at least LegacyRecord.RECORD_OVERHEAD_V0).
        TopicConfigSpec("segment.bytes", "log_segment_bytes", _int_in(14, INT_MAX), "INT"),
        TopicConfigSpec("segment.ms", "log_roll_ms", _int_in(1, LONG_MAX)),
        TopicConfigSpec("retention.ms", "log_retention_ms", _int_in(-1, LONG_MAX)),
        TopicConfigSpec("retention.bytes", "log_retention_bytes", _int_in(-(2**63), LONG_MAX)),
        TopicConfigSpec("index.interval.bytes", "log_index_interval_bytes", _int_in(0, INT_MAX), "INT"),
        TopicConfigSpec("max.message.bytes", "message_max_bytes", _int_in(0, INT_MAX), "INT"),
        TopicConfigSpec("message.timestamp.type", "log_message_timestamp_type", _parse_timestamp_type, "STRING"),
        TopicConfigSpec("message.timestamp.before.max.ms", None, _int_in(0, LONG_MAX), default=str(LONG_MAX)),
        TopicConfigSpec("message.timestamp.after.max.ms", None, _int_in(0, LONG_MAX), default=str(LONG_MAX)),
        TopicConfigSpec("cleanup.policy", "log_cleanup_policy", _parse_cleanup_policy, "LIST"),
        TopicConfigSpec("delete.retention.ms", "log_cleaner_delete_retention_ms", _int_in(0, LONG_MAX)),
        TopicConfigSpec("compression.type", None, _parse_compression_type, "STRING", "producer"),
        TopicConfigSpec("compression.gzip.level", None, _int_in(-1, 9), "INT", "-1"),
        TopicConfigSpec("compression.lz4.level", None, _int_in(1, 17), "INT", "9"),
        TopicConfigSpec("compression.zstd.level", None, _int_in(-131072, 22), "INT", "3"),
        TopicConfigSpec("min.insync.replicas", None, _int_in(1, INT_MAX), "INT", "1"),
        TopicConfigSpec("file.delete.delay.ms", None, _int_in(0, LONG_MAX), default="60000"),
        TopicConfigSpec("flush.messages", None, _int_in(1, LONG_MAX), default=str(LONG_MAX)),
        TopicConfigSpec("flush.ms", None, _int_in(0, LONG_MAX), default=str(LONG_MAX)),
        TopicConfigSpec("preallocate", None, _kafka_bool, "BOOLEAN", "false"),
        TopicConfigSpec("segment.jitter.ms", None, _int_in(0, LONG_MAX), default="0"),
        TopicConfigSpec("segment.index.bytes", None, _int_in(4, INT_MAX), "INT", "10485760"),
        TopicConfigSpec("unclean.leader.election.enable", None, _kafka_bool, "BOOLEAN", "false"),
        TopicConfigSpec("leader.replication.throttled.replicas", None, _replica_list, "LIST", ""),
        TopicConfigSpec("follower.replication.throttled.replicas", None, _replica_list, "LIST", ""),
        TopicConfigSpec("min.cleanable.dirty.ratio", None, _ratio, "DOUBLE", "0.5"),
        TopicConfigSpec("min.compaction.lag.ms", None, _int_in(0, LONG_MAX), default="0"),
        TopicConfigSpec("max.compaction.lag.ms", None, _int_in(1, LONG_MAX), default=str(LONG_MAX)),
        TopicConfigSpec("local.retention.ms", None, _int_in(-2, LONG_MAX), default="-2"),
        TopicConfigSpec("local.retention.bytes", None, _int_in(-2, LONG_MAX), default="-2"),
        TopicConfigSpec("remote.storage.enable", None, _only_false, "BOOLEAN", "false"),
        TopicConfigSpec("remote.log.copy.disable", None, _kafka_bool, "BOOLEAN", "false"),
        TopicConfigSpec("remote.log.delete.on.disable", None, _kafka_bool, "BOOLEAN", "false"),
    )
}


def validate_topic_configs(configs: Mapping[str, str | None]) -> dict[str, str]:
    """Check topic overrides; returns the normalised ones. Raises ConfigError naming the bad entry."""
    from oncelog.config import ConfigError

    normalised: dict[str, str] = {}
    for name, value in configs.items():
        spec = TOPIC_CONFIGS.get(name)
        if spec is None:
            raise ConfigError(f"unknown topic config {name!r}")
        if value is None:
            continue
        try:
            parsed = spec.parse(value)
        except ValueError as error:
            raise ConfigError(f"invalid value {value!r} for topic config {name}: {error}") from error
        normalised[name] = str(parsed)
    return normalised


@dataclass(frozen=True, slots=True)
class TopicConfig:
    """The effective config of one topic: its overrides over the broker defaults."""

    overrides: Mapping[str, str] = field(default_factory=dict)

    def value(self, name: str, broker: BrokerConfig) -> str:
        if name in self.overrides:
            return self.overrides[name]
        spec = TOPIC_CONFIGS[name]
        if spec.broker_field is None:
            assert spec.default is not None
            return spec.default
        return str(getattr(broker, spec.broker_field))

    def int_value(self, name: str, broker: BrokerConfig) -> int:
        return int(self.value(name, broker))

    def is_default(self, name: str) -> bool:
        return name not in self.overrides
