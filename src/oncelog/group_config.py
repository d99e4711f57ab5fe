"""Group configs (Kafka 4's GroupConfig, resource type GROUP in DescribeConfigs and the AlterConfigs APIs):
per-group overrides of the session, heartbeat and share/streams settings of the new group protocols.

Stored with the dynamic broker configs (`dynamic_config.py`, entity `group:<id>`: the data directory or
the database) and described with Kafka's defaults and ranges. The groups served here use the classic
protocol, which reads none of them, so they change nothing yet; they are kept so that tools and
clients that set them (`kafka-configs --entity-type groups`) work, and for the new protocols.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

ENTITY_PREFIX = "group:"


def _int_between(low: int, high: int) -> Callable[[str], str]:
    def parse(value: str) -> str:
        number = int(value)
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return str(number)

    return parse


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


def _offset_reset(value: str) -> str:
    if value in ("latest", "earliest") or value.startswith("by_duration:"):
        return value
    raise ValueError("expected latest, earliest or by_duration:<ISO-8601 duration>")


@dataclass(frozen=True, slots=True)
class GroupConfigSpec:
    name: str
    default: str
    parse: Callable[[str], str]
    kind: str


# Defaults and ranges are Kafka 4's broker settings for them (group.consumer.session.timeout.ms 45000 in
# [45000, 60000], heartbeat 5000 in [5000, 15000], ...).
GROUP_CONFIGS: dict[str, GroupConfigSpec] = {spec.name: spec for spec in (
    GroupConfigSpec("consumer.session.timeout.ms", "45000", _int_between(45000, 60000), "INT"),
    GroupConfigSpec("consumer.heartbeat.interval.ms", "5000", _int_between(5000, 15000), "INT"),
    GroupConfigSpec("share.session.timeout.ms", "45000", _int_between(45000, 60000), "INT"),
    GroupConfigSpec("share.heartbeat.interval.ms", "5000", _int_between(5000, 15000), "INT"),
    GroupConfigSpec("share.record.lock.duration.ms", "30000", _int_between(15000, 60000), "INT"),
    GroupConfigSpec("share.auto.offset.reset", "latest", _offset_reset, "STRING"),
    GroupConfigSpec("share.isolation.level", "read_uncommitted", _one_of("read_uncommitted", "read_committed"),
                    "STRING"),
    GroupConfigSpec("streams.session.timeout.ms", "45000", _int_between(45000, 60000), "INT"),
    GroupConfigSpec("streams.heartbeat.interval.ms", "5000", _int_between(5000, 15000), "INT"),
    GroupConfigSpec("streams.num.standby.replicas", "0", _int_between(0, 2), "INT"),
)}


def validate(overrides: dict[str, str | None]) -> dict[str, str]:
    """A group's new overrides, checked as Kafka's GroupConfig does; ValueError naming the bad one."""
    checked = {}
    for name, value in overrides.items():
        spec = GROUP_CONFIGS.get(name)
        if spec is None:
            raise ValueError(f"unknown group config {name!r}")
        if value is None:
            continue
        try:
            checked[name] = spec.parse(value)
        except ValueError as error:
            raise ValueError(f"invalid value {value!r} for {name}: {error}") from error
    return checked
