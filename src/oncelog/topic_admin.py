"""Creating and deleting topics with Kafka's rules, over whichever storage holds them.

Theory of operation: the rules are the broker's, not the backend's (Kafka's `ZkAdminManager` /
`ControllerApis.createTopics`): a legal name (`topic_name_problem`), not already there, not internal
(the broker creates those), no '.'/'_' collision, partitions > 0, replication factor 1 (one copy: the
backend is where durability comes from), `max.broker.partitions`, valid configs. The storage only
creates or deletes. Errors are KafkaError with the code Kafka answers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from oncelog.config import ConfigError
from oncelog.coordinator.runtime import Completion, resolved
from oncelog.errors import ErrorCode, KafkaError
from oncelog.log.manager import INTERNAL_TOPICS, topic_name_problem
from oncelog.storage.api import TopicInfo
from oncelog.topic_config import TOPIC_CONFIGS, TopicConfig, validate_topic_configs

if TYPE_CHECKING:
    from oncelog.broker import Broker


Created = tuple[int, int, TopicConfig]
"""(partitions, replication factor, config) of a topic created (or that would be)."""


def create_topic(broker: Broker, name: str, num_partitions: int = -1, replication_factor: int = -1,
                 configs: dict[str, str | None] | None = None, *,
                 validate_only: bool = False) -> Completion[Created | KafkaError]:
    """Validate and (unless `validate_only`) create a topic, as Kafka's CreateTopics does.

    A rule broken raises KafkaError with Kafka's code at once; the storage's refusal resolves as one.
    """
    storage = broker.storage
    problem = topic_name_problem(name)
    if problem is not None:
        raise KafkaError(ErrorCode.invalid_topic_exception, problem)
    if name in INTERNAL_TOPICS:  # before existence: refused the same way whether or not it exists yet
        raise KafkaError(ErrorCode.invalid_request, f"creation of internal topic {name} is prohibited: the broker "
                                                    "creates it")
    if storage.topic(name) is not None:
        raise KafkaError(ErrorCode.topic_already_exists, f"topic '{name}' already exists")
    colliding = storage.colliding_topic(name)
    if colliding is not None:
        raise KafkaError(ErrorCode.invalid_topic_exception,
                         f"topic '{name}' collides with existing topic '{colliding}' ('.' and '_' collide)")
    config = broker.config
    partitions = config.num_partitions if num_partitions == -1 else num_partitions
    if partitions <= 0:
        raise KafkaError(ErrorCode.invalid_partitions, "number of partitions must be larger than 0")
    existing = storage.partition_count()
    if existing + partitions > config.max_broker_partitions:
        raise KafkaError(ErrorCode.policy_violation,
                         f"creating {partitions} partitions would exceed max.broker.partitions="
                         f"{config.max_broker_partitions} ({existing} exist); raise it or delete topics")
    replicas = config.default_replication_factor if replication_factor == -1 else replication_factor
    if replicas != 1:
        raise KafkaError(ErrorCode.invalid_replication_factor,
                         f"replication factor {replicas} is not supported: every partition has one copy, "
                         "made durable by the storage backend")
    try:
        overrides = validate_topic_configs(configs or {})
    except ConfigError as error:
        raise KafkaError(ErrorCode.invalid_config, str(error)) from error
    topic_config = TopicConfig(overrides)
    created: Created = (partitions, replicas, topic_config)
    if validate_only:
        return resolved(created)
    result: Completion[Created | KafkaError] = Completion()
    storage.create_topic(name, partitions, topic_config, broker.now_ms()).on_done(
        lambda outcome: result.resolve(outcome if isinstance(outcome, KafkaError) else created))
    return result


def auto_create_topic(broker: Broker, name: str) -> Completion[TopicInfo | KafkaError] | None:
    """Create `name` with the defaults if auto-creation is on and the name is legal (an internal topic
    with its coordinator's settings, as Kafka's AutoTopicCreationManager); None if it may not be.
    Resolves as KafkaError when the topic cannot be created (a collision, the partition limit, the disk)."""
    storage = broker.storage
    try:
        if name in INTERNAL_TOPICS:
            broker.ensure_internal_topic(name)
        else:
            if not broker.config.auto_create_topics_enable or topic_name_problem(name) is not None:
                return None
            creating = create_topic(broker, name)
            if not creating.done:
                result: Completion[TopicInfo | KafkaError] = Completion()
                creating.on_done(lambda outcome: result.resolve(_created_info(broker, name, outcome)))
                return result
            return resolved(_created_info(broker, name, creating.value()))
    except KafkaError as error:
        return resolved(error)
    info = storage.topic(name)
    assert info is not None
    return resolved(info)


def _created_info(broker: Broker, name: str, outcome: Created | KafkaError) -> TopicInfo | KafkaError:
    if isinstance(outcome, KafkaError):
        return outcome
    info = broker.storage.topic(name)
    return info if info is not None else KafkaError(ErrorCode.unknown_topic_or_partition, f"topic '{name}' is gone")


def delete_topic(broker: Broker, name: str) -> Completion[KafkaError | None]:
    """Delete a topic; KafkaError raised at once for a rule broken, resolved for the storage's refusal."""
    if name in INTERNAL_TOPICS:  # whether or not it exists (on PostgreSQL __transaction_state never does)
        raise KafkaError(ErrorCode.invalid_topic_exception, f"internal topic {name} cannot be deleted")
    if broker.storage.topic(name) is None:
        raise KafkaError(ErrorCode.unknown_topic_or_partition, f"topic '{name}' does not exist")
    return broker.storage.delete_topic(name)


def create_partitions(broker: Broker, name: str, total: int, assignments: list[list[int]] | None, *,
                      validate_only: bool = False) -> Completion[KafkaError | None]:
    """Grow a topic to `total` partitions, as Kafka's CreatePartitions; KafkaError raised at once for a
    rule broken (Kafka's codes and messages), resolved for the storage's refusal."""
    if name in INTERNAL_TOPICS:  # their partition counts decide which coordinator owns what
        raise KafkaError(ErrorCode.invalid_request, f"the partitions of internal topic {name} cannot be changed")
    info = broker.storage.topic(name)
    if info is None:
        raise KafkaError(ErrorCode.unknown_topic_or_partition, f"topic '{name}' does not exist")
    if total == info.partitions:
        raise KafkaError(ErrorCode.invalid_partitions, f"Topic already has {total} partitions.")
    if total < info.partitions:
        raise KafkaError(ErrorCode.invalid_partitions, f"The topic {name} currently has {info.partitions} "
                                                       f"partition(s); {total} would not be an increase.")
    added = total - info.partitions
    if assignments is not None:
        live = {node.node_id for node in broker.cluster.brokers()}
        if len(assignments) != added:
            raise KafkaError(ErrorCode.invalid_replica_assignment,
                             f"Increasing the number of partitions by {added} but {len(assignments)} assignments "
                             "provided.")
        if any(len(replicas) != 1 or replicas[0] not in live for replicas in assignments):
            raise KafkaError(ErrorCode.invalid_replica_assignment,
                             "each new partition takes exactly one replica, a live broker (replication factor 1)")
    existing = broker.storage.partition_count()
    if existing + added > broker.config.max_broker_partitions:
        raise KafkaError(ErrorCode.policy_violation,
                         f"adding {added} partitions would exceed max.broker.partitions="
                         f"{broker.config.max_broker_partitions} ({existing} exist)")
    if validate_only:
        return resolved(None)
    result: Completion[KafkaError | None] = Completion()
    broker.storage.create_partitions(name, total, broker.now_ms()).on_done(
        lambda outcome: result.resolve(outcome if isinstance(outcome, KafkaError) else None))
    return result


SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3
"""IncrementalAlterConfigs operations (Kafka's AlterConfigOp.OpType)."""


def changed_overrides(current: dict[str, str], changes: list[tuple[str, int, str | None]],
                      effective: Callable[[str], str],
                      kind_of: Callable[[str], str | None] | None = None) -> dict[str, str | None]:
    """The topic's overrides after IncrementalAlterConfigs `changes` (name, operation, value), as Kafka's
    `ConfigAdminManager.prepareIncrementalConfigs`: SET, DELETE (back to the default), and APPEND /
    SUBTRACT on LIST configs, starting from the effective value (`effective(name)`: the override or
    the default). `kind_of(name)` is the config's Kafka type, None for a name that may not be changed
    (topic configs by default). Raises KafkaError(INVALID_CONFIG) for a wrong name or operation."""
    if kind_of is None:
        def kind_of(name: str) -> str | None:
            spec = TOPIC_CONFIGS.get(name)
            return None if spec is None else spec.kind

    names = [name for name, _operation, _value in changes]
    if len(set(names)) != len(names):
        raise KafkaError(ErrorCode.invalid_request, "Error due to duplicate config keys")
    overrides: dict[str, str | None] = dict(current)
    for name, operation, value in changes:
        kind = kind_of(name)
        if kind is None:
            raise KafkaError(ErrorCode.invalid_config, f"unknown or unchangeable config {name!r}")
        if value is None and operation != DELETE:  # Kafka's ConfigAdminManager: "Null value not supported"
            raise KafkaError(ErrorCode.invalid_request, f"Null value not supported for : {name}")
        if operation == SET:
            overrides[name] = value
        elif operation == DELETE:
            overrides.pop(name, None)
        elif operation in (APPEND, SUBTRACT):
            if kind != "LIST":
                raise KafkaError(ErrorCode.invalid_config, f"{name} is not a list: APPEND and SUBTRACT apply to "
                                                           "LIST configs only")
            start = overrides[name] if name in overrides else effective(name)
            present = [item for item in (start or "").split(",") if item]
            given = [item for item in (value or "").split(",") if item]
            items = present + [item for item in given if item not in present] if operation == APPEND else \
                [item for item in present if item not in given]
            overrides[name] = ",".join(items)
        else:
            raise KafkaError(ErrorCode.invalid_request, f"unknown config operation {operation}")
    return overrides


ConfigChange = Callable[[dict[str, str]], dict[str, str | None]]
"""From a topic's current overrides to its new ones (raising KafkaError for a bad change)."""


def alter_topic_configs(broker: Broker, name: str, change: ConfigChange, *,
                        validate_only: bool = False) -> Completion[KafkaError | None]:
    """Apply `change` to a topic's overrides, validated with Kafka's rules (None values drop out). The
    storage applies it to the overrides it holds at that moment, under its lock (on PostgreSQL a row
    lock), so two concurrent changes compose instead of one overwriting the other."""
    if name in INTERNAL_TOPICS:
        raise KafkaError(ErrorCode.invalid_request, f"the configs of internal topic {name} are the broker's")
    info = broker.storage.topic(name)
    if info is None:
        raise KafkaError(ErrorCode.unknown_topic_or_partition, f"topic '{name}' does not exist")

    def validated(current: Mapping[str, str]) -> TopicConfig:
        try:
            return TopicConfig(validate_topic_configs(change(dict(current))))
        except ConfigError as error:
            raise KafkaError(ErrorCode.invalid_config, str(error)) from error

    if validate_only:
        validated(info.config.overrides)
        return resolved(None)
    result: Completion[KafkaError | None] = Completion()
    broker.storage.alter_topic_config(name, validated).on_done(
        lambda outcome: result.resolve(outcome if isinstance(outcome, KafkaError) else None))
    return result
