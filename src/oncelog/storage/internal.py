"""Coordinator persistence on the local backend: internal topics, markers and their replay.

Theory of operation: the group and transaction coordinators are state machines over a log (Kafka's
`__consumer_offsets` and `__transaction_state`). On the local backend those logs are partitions in the
data directory like any other:

- `InternalTopics` creates an internal topic on first use (like Kafka's auto-created
  `__consumer_offsets`) with the partition count its coordinator places keys by, and reports a partition
  it cannot use (disk refused, offline) as KafkaError, which coordinators answer as
  COORDINATOR_NOT_AVAILABLE.
- `InternalTopicStorage` is the coordinators' `CoordinatorStorage`: it appends an uncompressed batch of
  (key, value) records and reports durability through the flusher. An append the disk refuses is
  reported as a failed write (the coordinator answers a retriable error and changes nothing).
- `LocalMarkerWriter` writes transaction markers straight into the partition logs (no WriteTxnMarkers
  RPC on one node, docs/protocol.md).
- `replay_*` rebuild the coordinators from those topics at start, before any connection is accepted:
  the same code path as normal operation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from oncelog.config import BrokerConfig
from oncelog.coordinator.group.coordinator import OFFSETS_TOPIC, GroupCoordinator
from oncelog.coordinator.runtime import StoredBatch
from oncelog.coordinator.transaction.coordinator import TRANSACTION_STATE_TOPIC, TransactionCoordinator
from oncelog.errors import ErrorCode, KafkaError
from oncelog.fs import FileSystem, write_atomically
from oncelog.log.manager import INTERNAL_TOPICS, Topic
from oncelog.log.partition import PartitionLog
from oncelog.protocol.records import CONTROL_COMMIT, build_batch, iter_records, parse_header, read_marker
from oncelog.topic_config import TopicConfig

from .api import Marker
from .local import AllDurable, LocalStorage

logger = logging.getLogger(__name__)

FAILED_WRITE = object()
"""The durability token of an append the disk refused: `when_durable` reports it failed at once."""


class InternalTopics:
    """The internal topics of the local backend, created on first use."""

    def __init__(self, storage: LocalStorage, config: BrokerConfig, clock: Callable[[], int]) -> None:
        self._storage = storage
        self._config = config
        self._clock = clock
        self.partitions = {
            OFFSETS_TOPIC: self._partitions_of(OFFSETS_TOPIC, config.offsets_topic_num_partitions),
            TRANSACTION_STATE_TOPIC: self._partitions_of(TRANSACTION_STATE_TOPIC,
                                                         config.transaction_state_log_num_partitions),
        }
        """Per internal topic, the partition count its coordinator places keys by."""

    def _partitions_of(self, name: str, configured: int) -> int:
        """The topic's own count if it exists (Kafka reads it from the topic's metadata), else the
        configured one it will be created with."""
        topic = self._storage.logs.topic(name)
        if topic is None:
            return configured
        if len(topic.partitions) != configured:
            logger.warning("topic=%s has %d partitions, not the configured %d: coordinators use %d", name,
                           len(topic.partitions), configured, len(topic.partitions))
        return len(topic.partitions)

    def topic(self, name: str) -> Topic:
        """An internal topic, created on first use; KafkaError(KAFKA_STORAGE_ERROR) if the disk refuses."""
        logs = self._storage.logs
        existing = logs.topic(name)
        if existing is not None:
            return existing
        assert name in INTERNAL_TOPICS
        config = self._config
        segment_bytes = (config.transaction_state_log_segment_bytes if name == TRANSACTION_STATE_TOPIC
                         else config.offsets_topic_segment_bytes)
        # Kafka's internal topic configs: compacted, with their own segment size.
        configs = {"cleanup.policy": "compact", "segment.bytes": str(segment_bytes)}
        return logs.create_topic(name, self.partitions[name], TopicConfig(configs), self._clock())

    def log(self, name: str, partition: int) -> PartitionLog:
        """A partition of an internal topic, creating the topic on first use; KafkaError if the disk
        refuses or the partition is offline."""
        log = self.topic(name).partitions[partition]
        if log.offline:
            raise KafkaError(ErrorCode.kafka_storage_error, f"partition {log.name} is offline")
        return log


class InternalTopicStorage:
    """`CoordinatorStorage` over the broker's own logs (coordinator records as plain batches)."""

    def __init__(self, topics: InternalTopics, storage: LocalStorage, clock: Callable[[], int]) -> None:
        self._topics = topics
        self._storage = storage
        self._clock = clock

    def append(self, topic: str, partition: int, records: list[tuple[bytes, bytes | None]], *,
               producer_id: int = -1, producer_epoch: int = -1, transactional: bool = False) -> StoredBatch:
        now_ms = self._clock()
        # Coordinator batches carry no sequence: like Kafka's COORDINATOR origin they skip sequence checks.
        batch = build_batch(records, timestamp_ms=now_ms, producer_id=producer_id, producer_epoch=producer_epoch,
                            transactional=transactional)
        try:
            log = self._topics.log(topic, partition)
            result = log.append_coordinator_batch(batch, parse_header(batch), now_ms)
        except KafkaError as error:
            logger.warning("partition=%s-%d coordinator write failed: %s", topic, partition, error)
            return StoredBatch(FAILED_WRITE, -1)
        self._storage.log_changed(log)
        return StoredBatch((log, result + len(records)), result)

    def when_durable(self, token: Any, callback: Callable[[bool], None]) -> None:
        """`token` is one (log, offset) of an append, or the list `LocalMarkerWriter` returns."""
        targets = token if isinstance(token, list) else [token]
        if any(target is FAILED_WRITE for target in targets):
            callback(False)
            return
        AllDurable(self._storage.durability, targets, callback)


class LocalMarkerWriter:
    """Writes transaction markers into this broker's partition logs. A partition that no longer exists is
    skipped (Kafka drops deleted topics from the pending set); a marker refused for a stale epoch or
    coordinator epoch is skipped too (the transaction was already superseded there); a partition that
    cannot take it now is retried by the coordinator (Kafka retries markers until the partition is back).
    A marker on `__consumer_offsets` also completes the pending transactional offsets of the producer."""

    def __init__(self, storage: LocalStorage, groups: Callable[[], GroupCoordinator], clock: Callable[[], int]):
        self._storage = storage
        self._groups = groups
        self._clock = clock

    def write_markers(self, producer_id: int, producer_epoch: int, coordinator_epoch: int, commit: bool,
                      partitions: frozenset[tuple[str, int]]) -> dict[tuple[str, int], Any]:
        written: dict[tuple[str, int], Any] = {}
        for topic, partition in sorted(partitions):
            marker = Marker(topic, partition, producer_id, producer_epoch, coordinator_epoch, commit)
            codes, targets = self._storage.append_markers([marker], self._clock())
            code = codes[0]
            if code == ErrorCode.kafka_storage_error:
                written[(topic, partition)] = FAILED_WRITE
            elif code == ErrorCode.none:
                if topic == OFFSETS_TOPIC:
                    self._groups().complete_transaction(producer_id, commit, partition)
                written[(topic, partition)] = targets[0]
            elif code != ErrorCode.unknown_topic_or_partition:
                logger.warning("partition=%s-%d producer_id=%d marker skipped: %s", topic, partition, producer_id,
                               code.name)
        return written


def read_internal_records(log: PartitionLog) -> Iterator[tuple[str, int, bytes | None, bytes | None, int]]:
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


def replay_offsets_topic(storage: LocalStorage, groups: GroupCoordinator) -> None:
    topic = storage.logs.topic(OFFSETS_TOPIC)
    if topic is None:
        return
    records = 0
    for log in topic.partitions:
        for kind, producer_id, key, value, offset in read_internal_records(log):
            if kind == "marker":
                groups.complete_transaction(producer_id, value == b"commit", log.partition)
            elif kind == "transactional":
                assert key is not None
                groups.replay_transactional(producer_id, key, value, offset)
            else:
                assert key is not None
                groups.replay(key, value, loading=True, record_offset=offset)
            records += 1
    groups.finish_loading()
    logger.info("loaded %d %s records: %d groups", records, OFFSETS_TOPIC, len(groups.groups))


def replay_transaction_state(storage: LocalStorage, transactions: TransactionCoordinator) -> None:
    topic = storage.logs.topic(TRANSACTION_STATE_TOPIC)
    if topic is None:
        return
    for log in topic.partitions:
        for kind, _producer_id, key, value, _offset in read_internal_records(log):
            if kind == "record" and key is not None:
                transactions.replay(key, value)
    transactions.finish_loading()
    logger.info("loaded %d transactional ids", len(transactions.transactions))


def bump_coordinator_epoch(fs: FileSystem, data_dir: Path) -> int:
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
