"""The broker: composes configuration, clock, log manager and coordinators; what every handler receives.

Theory of operation: `Broker` holds all broker state and is only touched from the event loop (its methods
never await). Time comes from an injected clock, timers from an injected scheduler and "tell me when this
is on disk" from an injected `durability` hook, so the whole core runs without an event loop in tests.
The server layer registers `on_log_changed` to wake long-poll fetches when a partition's log grows.

Coordinators write to internal topics through `InternalTopicStorage`: it creates the topic on first use
(like Kafka's auto-created `__consumer_offsets`), appends an uncompressed batch of (key, value) records
and reports durability through the flusher. An append the disk refuses is reported as a failed write
(the coordinator answers a retriable error and changes nothing). On start, the broker replays the
internal topics into the coordinators before it accepts connections. Coordinators place keys by the
partition count the internal topic really has (Kafka reads it from the topic's metadata), so a data
directory whose internal topic was created with another count keeps working.
"""

from __future__ import annotations

import base64
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oncelog.config import BrokerConfig, ConfigError, TopicConfig, validate_topic_configs
from oncelog.coordinator.group.coordinator import OFFSETS_TOPIC, GroupConfig, GroupCoordinator
from oncelog.coordinator.producer_ids import ProducerIdAllocator
from oncelog.coordinator.runtime import Scheduler, StoredBatch
from oncelog.coordinator.transaction.coordinator import (
    TRANSACTION_STATE_TOPIC,
    TransactionConfig,
    TransactionCoordinator,
)
from oncelog.errors import ErrorCode, KafkaError
from oncelog.fs import OS_FILE_SYSTEM, FileSystem, write_atomically
from oncelog.log.manager import INTERNAL_TOPICS, LogManager, Topic, topic_name_problem
from oncelog.log.partition import PartitionLog
from oncelog.protocol.records import (
    CONTROL_COMMIT,
    build_batch,
    iter_records,
    parse_header,
    read_marker,
)

logger = logging.getLogger(__name__)

LEADER_EPOCH = 0
"""One node leads every partition forever, so the leader epoch never changes (no KIP-320 truncation)."""

Clock = Callable[[], int]
Durability = Callable[[PartitionLog, int, Callable[[bool], None]], None]



def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _load_cluster_id(fs: FileSystem, data_dir: Path, node_id: int) -> str:
    """Kafka's `meta.properties`: the cluster id is made once and kept with the data."""
    path = data_dir / "meta.properties"
    if fs.exists(path):
        for line in fs.read_bytes(path).decode("utf-8", "replace").splitlines():
            if line.startswith("cluster.id="):
                return line.split("=", 1)[1].strip()
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    write_atomically(fs, path, f"version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n".encode())
    return cluster_id


FAULT_INJECTION_ENV = "ONCELOG_FAULT_INJECTION"
"""For crash tests only: the name of a commit-protocol point at which the process dies (os._exit)."""


def _crash_at(point: str, wanted: str) -> None:
    if point == wanted:
        logger.error("fault injection: dying at %s", point)
        os._exit(137)


def _bump_coordinator_epoch(fs: FileSystem, data_dir: Path) -> int:
    """The transaction coordinator's epoch: one more than at the last start, kept in a file, so markers of
    this run fence any of an earlier run (Kafka uses the partition leader epoch of __transaction_state)."""
    path = data_dir / "transaction-coordinator-epoch"
    epoch = 0
    if fs.exists(path):
        text = fs.read_bytes(path).decode("ascii", "replace").strip()
        if not text.isdigit():
            raise ValueError(f"{path} does not hold a coordinator epoch: {text[:40]!r}")
        epoch = int(text) + 1
    write_atomically(fs, path, f"{epoch}\n".encode())
    return epoch


FAILED_WRITE = object()
"""The durability token of an append the disk refused: `when_durable` reports it failed at once."""


class InternalTopicStorage:
    """`CoordinatorStorage` over the broker's own logs (coordinator records as plain batches)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    def append(self, topic: str, partition: int, records: list[tuple[bytes, bytes | None]], *,
               producer_id: int = -1, producer_epoch: int = -1, transactional: bool = False) -> StoredBatch:
        now_ms = self._broker.now_ms()
        # Coordinator batches carry no sequence: like Kafka's COORDINATOR origin they skip sequence checks.
        batch = build_batch(records, timestamp_ms=now_ms, producer_id=producer_id, producer_epoch=producer_epoch,
                            transactional=transactional)
        try:
            log = self._broker.internal_log(topic, partition)
            result = log.append_coordinator_batch(batch, parse_header(batch), now_ms)
        except KafkaError as error:
            logger.warning("partition=%s-%d coordinator write failed: %s", topic, partition, error)
            return StoredBatch(FAILED_WRITE, -1)
        self._broker.log_changed(log)
        return StoredBatch((log, result + len(records)), result)

    def when_durable(self, token: Any, callback: Callable[[bool], None]) -> None:
        """`token` is one (log, offset) of an append, or the list `LocalMarkerWriter` returns."""
        targets = token if isinstance(token, list) else [token]
        if any(target is FAILED_WRITE for target in targets):
            callback(False)
            return
        _AllDurable(self._broker, targets, callback)


class LocalMarkerWriter:
    """Writes transaction markers straight into this broker's partition logs (no WriteTxnMarkers RPC on
    one node, docs/protocol.md). A partition that no longer exists is skipped (Kafka drops deleted topics
    from the pending set); a marker refused for a stale epoch or coordinator epoch is skipped too (the
    transaction was already superseded there). A marker on `__consumer_offsets` also completes the
    pending transactional offsets of the producer there."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    def write_markers(self, producer_id: int, producer_epoch: int, coordinator_epoch: int, commit: bool,
                      partitions: frozenset[tuple[str, int]]) -> dict[tuple[str, int], Any]:
        broker = self._broker
        now_ms = broker.now_ms()
        written: dict[tuple[str, int], Any] = {}
        for topic, partition in sorted(partitions):
            log = broker.logs.get(topic, partition)
            if log is None:
                continue
            try:
                offset = log.append_marker(producer_id, producer_epoch, coordinator_epoch, commit, now_ms)
            except KafkaError as error:
                if error.code == ErrorCode.kafka_storage_error:
                    # The partition cannot take the marker now: the coordinator retries it (Kafka retries
                    # markers until the partition is back), and a restart resumes from Prepare*.
                    written[(topic, partition)] = FAILED_WRITE
                    continue
                logger.warning("partition=%s producer_id=%d marker skipped: %s", log.name, producer_id, error)
                continue
            if topic == OFFSETS_TOPIC:
                broker.groups.complete_transaction(producer_id, commit, partition)
            broker.log_changed(log)
            written[(topic, partition)] = (log, offset + 1)
        return written


class _AllDurable:
    """Combines durability of several (log, offset) targets into one callback."""

    def __init__(self, broker: Broker, targets: list[tuple[PartitionLog, int]], callback: Callable[[bool], None]):
        self._remaining = len(targets)
        self._ok = True
        self._callback = callback
        if not targets:
            callback(True)
        for log, offset in targets:
            broker.durability(log, offset, self._one)

    def _one(self, ok: bool) -> None:
        self._ok &= ok
        self._remaining -= 1
        if self._remaining == 0:
            self._callback(self._ok)


class Broker:
    def __init__(self, config: BrokerConfig, clock: Clock = wall_clock_ms, fs: FileSystem = OS_FILE_SYSTEM) -> None:
        self.config = config
        self.clock = clock
        self.fs = fs
        self.logs = LogManager(config, fs)
        self.cluster_id = ""
        self.producer_ids: ProducerIdAllocator
        self.advertised: dict[str, tuple[str, int]] = {}
        """Per listener name, the (host, port) clients are told (set by the server once it is bound)."""
        self.on_log_changed: Callable[[PartitionLog], None] = lambda log: None
        self.scheduler: Scheduler
        self.durability: Durability
        self.groups: GroupCoordinator
        self.transactions: TransactionCoordinator

    def start(self, scheduler: Scheduler, durability: Durability) -> None:
        """Load logs and coordinator state; `scheduler` and `durability` come from the server layer."""
        self.scheduler = scheduler
        self.durability = durability
        self.logs.start(self.clock())
        self.cluster_id = _load_cluster_id(self.fs, self.config.data_dir, self.config.node_id)
        self.producer_ids = ProducerIdAllocator(self.fs, self.config.data_dir)
        config = self.config
        self.groups = GroupCoordinator(
            InternalTopicStorage(self),
            scheduler,
            self.clock,
            GroupConfig(
                session_timeout_ms_min=config.group_min_session_timeout_ms,
                session_timeout_ms_max=config.group_max_session_timeout_ms,
                initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
                offsets_topic_partitions=self._internal_partitions(OFFSETS_TOPIC, config.offsets_topic_num_partitions),
                offsets_retention_ms=config.offsets_retention_ms,
                offset_metadata_bytes_max=config.offset_metadata_max_bytes,
            ),
            lambda topic, partition: self.logs.get(topic, partition) is not None,
        )
        storage = InternalTopicStorage(self)
        self.transactions = TransactionCoordinator(
            storage, LocalMarkerWriter(self), scheduler, self.clock, self.producer_ids.allocate,
            TransactionConfig(config.transaction_max_timeout_ms, config.transactional_id_expiration_ms,
                              self._internal_partitions(TRANSACTION_STATE_TOPIC,
                                                        config.transaction_state_log_num_partitions)),
            lambda topic, partition: self.logs.get(topic, partition) is not None,
            _bump_coordinator_epoch(self.fs, config.data_dir),
        )
        fault = os.environ.get(FAULT_INJECTION_ENV)
        if fault:
            self.transactions.fault_hook = lambda point: _crash_at(point, fault)
        self._load_offsets_topic()
        self._load_transaction_state()

    def _internal_partitions(self, name: str, configured: int) -> int:
        """The partition count coordinators place keys by: the topic's own if it exists (Kafka reads it
        from the topic's metadata), else the configured one it will be created with."""
        topic = self.logs.topic(name)
        if topic is None:
            return configured
        if len(topic.partitions) != configured:
            logger.warning("topic=%s has %d partitions, not the configured %d: coordinators use %d", name,
                           len(topic.partitions), configured, len(topic.partitions))
        return len(topic.partitions)

    def _load_offsets_topic(self) -> None:
        topic = self.logs.topic(OFFSETS_TOPIC)
        if topic is None:
            return
        records = 0
        for log in topic.partitions:
            for event in self.read_internal_records(log):
                kind, producer_id, key, value, offset = event
                if kind == "marker":
                    self.groups.complete_transaction(producer_id, value == b"commit", log.partition)
                elif kind == "transactional":
                    assert key is not None
                    self.groups.replay_transactional(producer_id, key, value, offset)
                else:
                    assert key is not None
                    self.groups.replay(key, value, loading=True, record_offset=offset)
                records += 1
        self.groups.finish_loading()
        logger.info("loaded %d %s records: %d groups", records, OFFSETS_TOPIC, len(self.groups.groups))

    def _load_transaction_state(self) -> None:
        topic = self.logs.topic(TRANSACTION_STATE_TOPIC)
        if topic is None:
            return
        for log in topic.partitions:
            for kind, _producer_id, key, value, _offset in self.read_internal_records(log):
                if kind == "record" and key is not None:
                    self.transactions.replay(key, value)
        self.transactions.finish_loading()
        logger.info("loaded %d transactional ids", len(self.transactions.transactions))

    def read_internal_records(self, log: PartitionLog) -> Any:
        """Events of an internal topic partition in offset order: ("record" | "transactional", producer id,
        key, value, offset) per record, and ("marker", producer id, None, b"commit" | b"abort", offset)."""
        for data, position, header in log.iter_batches(log.log_start_offset):
            if header.is_control:
                marker = read_marker(data, position)
                if marker is not None:
                    result = b"commit" if marker[0] == CONTROL_COMMIT else b"abort"
                    yield "marker", header.producer_id, None, result, header.base_offset
            else:
                kind = "transactional" if header.is_transactional else "record"
                for record in iter_records(data, position):
                    if record.key is not None and record.offset >= log.log_start_offset:
                        yield kind, header.producer_id, record.key, record.value, record.offset

    def internal_topic(self, topic: str) -> Topic:
        """An internal topic, created on first use with the partition count its coordinator places keys by.
        Raises KafkaError(KAFKA_STORAGE_ERROR) if the disk refuses."""
        existing = self.logs.topic(topic)
        if existing is not None:
            return existing
        assert topic in INTERNAL_TOPICS
        config = self.config
        if topic == TRANSACTION_STATE_TOPIC:
            partitions = self.transactions.config.state_topic_partitions
            segment_bytes = config.transaction_state_log_segment_bytes
        else:
            partitions = self.groups.config.offsets_topic_partitions
            segment_bytes = config.offsets_topic_segment_bytes
        # Kafka's internal topic configs: compacted, with their own segment size.
        configs = {"cleanup.policy": "compact", "segment.bytes": str(segment_bytes)}
        return self.logs.create_topic(topic, partitions, TopicConfig(configs), self.clock())

    def internal_log(self, topic: str, partition: int) -> PartitionLog:
        """A partition of an internal topic, creating the topic on first use; KafkaError if the disk
        refuses or the partition is offline (coordinators answer COORDINATOR_NOT_AVAILABLE then)."""
        log = self.internal_topic(topic).partitions[partition]
        if log.offline:
            raise KafkaError(ErrorCode.kafka_storage_error, f"partition {log.name} is offline")
        return log

    def close(self) -> None:
        self.logs.close()

    def now_ms(self) -> int:
        return self.clock()

    def advertised_address(self, listener: str) -> tuple[str, int]:
        """Where clients of `listener` should connect (the listener they used, as Kafka answers)."""
        address = self.advertised.get(listener)
        if address is None:  # a core driven without a server (tests): the first listener as configured
            first = self.config.listeners[0]
            return first.host, first.port
        return address

    def log_changed(self, log: PartitionLog) -> None:
        self.on_log_changed(log)

    # --- topics ------------------------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        num_partitions: int = -1,
        replication_factor: int = -1,
        configs: dict[str, str | None] | None = None,
        *,
        validate_only: bool = False,
    ) -> tuple[int, int, TopicConfig]:
        """Validate and (unless `validate_only`) create a topic, as Kafka's CreateTopics does.

        Returns (partitions, replication factor, config). Raises KafkaError with Kafka's code.
        """
        problem = topic_name_problem(name)
        if problem is not None:
            raise KafkaError(ErrorCode.invalid_topic_exception, problem)
        if self.logs.topic(name) is not None:
            raise KafkaError(ErrorCode.topic_already_exists, f"topic '{name}' already exists")
        if name in INTERNAL_TOPICS:
            raise KafkaError(ErrorCode.invalid_request,
                             f"creation of internal topic {name} is prohibited: the broker creates it")
        colliding = self.logs.colliding_topic(name)
        if colliding is not None:
            raise KafkaError(ErrorCode.invalid_topic_exception,
                             f"topic '{name}' collides with existing topic '{colliding}' ('.' and '_' collide)")
        partitions = self.config.num_partitions if num_partitions == -1 else num_partitions
        if partitions <= 0:
            raise KafkaError(ErrorCode.invalid_partitions, "number of partitions must be larger than 0")
        limit = self.config.max_broker_partitions
        if self.logs.partition_count + partitions > limit:
            raise KafkaError(ErrorCode.policy_violation,
                             f"creating {partitions} partitions would exceed max.broker.partitions={limit} "
                             f"({self.logs.partition_count} exist); raise it or delete topics")
        replicas = self.config.default_replication_factor if replication_factor == -1 else replication_factor
        if replicas != 1:
            raise KafkaError(
                ErrorCode.invalid_replication_factor,
                f"replication factor {replicas} is larger than the 1 available broker",
            )
        try:
            overrides = validate_topic_configs(configs or {})
        except ConfigError as error:
            raise KafkaError(ErrorCode.invalid_config, str(error)) from error
        topic_config = TopicConfig(overrides)
        if not validate_only:
            self.logs.create_topic(name, partitions, topic_config, self.clock())
        return partitions, replicas, topic_config

    def auto_create_topic(self, name: str) -> Topic | None:
        """Create `name` with the defaults if auto-creation is on and the name is legal (an internal topic
        with its coordinator's settings, as Kafka's AutoTopicCreationManager). Raises KafkaError when the
        topic cannot be created (a collision, the partition limit, the disk)."""
        if name in INTERNAL_TOPICS:
            return self.internal_topic(name)
        if not self.config.auto_create_topics_enable or topic_name_problem(name) is not None:
            return None
        self.create_topic(name)
        return self.logs.topic(name)

    def delete_topic(self, name: str) -> None:
        if self.logs.topic(name) is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"topic '{name}' does not exist")
        if name in INTERNAL_TOPICS:
            raise KafkaError(ErrorCode.invalid_topic_exception, f"internal topic {name} cannot be deleted")
        self.logs.delete_topic(name)
