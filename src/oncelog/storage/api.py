"""The storage seam: the broker's partition data behind one interface of domain verbs.

Theory of operation: handlers never touch segment files, indexes or database rows. They validate what
the client sent (backend-independent: batch CRC, sizes, acks) and then ask a `Storage` to *append these
batches*, *read from these offsets*, *list these offsets*, *write these markers*. Every verb returns a
`Completion`, because one backend answers at once (local files: the append is done when the call returns,
and only acks=all waits for the flusher) while another answers after a database round trip (PostgreSQL:
one transaction per group commit). A completion already resolved is answered synchronously by the
handler, so the local backend pays no extra scheduling.

Both backends keep Kafka's rules (docs/protocol.md): the producer-state check runs where the append is
serialised (under the partition's lock), offsets are assigned by the log and never reused, a retried
batch is answered with its original offsets, a read_committed read stops at the last stable offset and
carries the exact aborted-transaction list. What differs is only where the bytes and the state live.

Hot-path value types (Append, Appended, AppendError, Read, PartitionData) are plain slotted dataclasses,
not frozen ones: a frozen dataclass pays for `object.__setattr__` per field on every produce. They are
never mutated after construction all the same.

The verbs take many partitions at once so a backend can do one round trip per request (or per group of
requests), never one per partition. `on_change(topic, partition)` is how a backend tells the server a
partition's log grew (long-poll fetches wake on it), whichever broker wrote it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from oncelog.coordinator.runtime import Completion
from oncelog.errors import ErrorCode, KafkaError
from oncelog.log.manager import INTERNAL_TOPICS
from oncelog.protocol.records import BatchHeader
from oncelog.topic_config import TopicConfig

LEADER_EPOCH = 0
"""Partition leader epochs never change (no replicas to diverge), so there is no KIP-320 truncation."""

PartitionKey = tuple[str, int]
"""(topic name, partition index)."""


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    topic_id: uuid.UUID
    partitions: int
    config: TopicConfig

    @property
    def internal(self) -> bool:
        return self.name in INTERNAL_TOPICS


@dataclass(slots=True)
class Append:
    """One validated client batch for one partition (the handler already checked CRC, sizes, counts)."""

    topic: str
    partition: int
    records: bytes
    header: BatchHeader


@dataclass(slots=True)
class Appended:
    """Where one batch landed; a retried duplicate reports the original's offset and timestamp."""

    base_offset: int
    log_start_offset: int
    duplicate: bool = False
    timestamp: int = -1
    """The stored batch's max timestamp when `duplicate` (what LogAppendTime answers)."""


@dataclass(slots=True)
class AppendError:
    code: ErrorCode
    message: str | None = None
    log_start_offset: int = -1


AppendResult = Appended | AppendError


@dataclass(slots=True)
class Read:
    topic: str
    partition: int
    fetch_offset: int
    max_bytes: int


@dataclass(slots=True)
class PartitionData:
    """One partition of a fetch: offsets known at read time, whole stored batches, aborted list."""

    error: ErrorCode
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    records: bytes | None = None
    aborted: list[tuple[int, int]] | None = None
    """(producer id, first offset) of aborted transactions overlapping the records, by first offset;
    None for read_uncommitted, as Kafka answers."""


@dataclass(frozen=True, slots=True)
class OffsetQuery:
    topic: str
    partition: int
    timestamp: int
    """A timestamp, or LATEST (-1), EARLIEST (-2), MAX_TIMESTAMP (-3) as ListOffsets defines them."""


@dataclass(frozen=True, slots=True)
class FoundOffset:
    error: ErrorCode
    offset: int = -1
    timestamp: int = -1


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    error: ErrorCode
    log_start_offset: int = -1
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_end_offset: int = -1


@dataclass(frozen=True, slots=True)
class ActiveProducer:
    producer_id: int
    producer_epoch: int
    last_sequence: int
    last_timestamp: int
    coordinator_epoch: int
    current_txn_start_offset: int


@dataclass(frozen=True, slots=True)
class Producers:
    error: ErrorCode
    active: list[ActiveProducer] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Marker:
    """A transaction marker for one partition (WriteTxnMarkers, or the coordinator's own)."""

    topic: str
    partition: int
    producer_id: int
    producer_epoch: int
    coordinator_epoch: int
    commit: bool


ACKS_NONE = 0
ACKS_LEADER = 1
ACKS_ALL = -1

PRODUCE_VERIFICATION_ERRORS = {
    ErrorCode.producer_fenced: ErrorCode.invalid_producer_epoch,
    ErrorCode.transaction_abortable: ErrorCode.invalid_txn_state,
    ErrorCode.concurrent_transactions: ErrorCode.not_enough_replicas,
}
"""KIP-890 verification answers as Kafka translates them for Produce below v11."""

Verifier = Callable[[str | None, BatchHeader, PartitionKey], ErrorCode | None]
"""KIP-890 part 1: is this producer's first transactional batch on the partition part of its ongoing
transaction? None if yes, else the error to answer (Produce's translation already applied)."""


class Storage(Protocol):
    """What handlers and the server need from where partitions live."""

    on_change: Callable[[str, int], None]
    """Set by the server: called when a partition's log grew (or was deleted)."""

    # --- topics -----------------------------------------------------------------------------------

    def topic(self, name: str) -> TopicInfo | None: ...

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicInfo | None: ...

    def topics(self) -> list[TopicInfo]: ...

    def partition_count(self) -> int:
        """Partitions of every topic together (for `max.broker.partitions`)."""
        ...

    def colliding_topic(self, name: str) -> str | None:
        """An existing topic whose name collides with `name` once '.' and '_' are the same."""
        ...

    def offline(self, topic: str, partition: int) -> bool:
        """True if this partition cannot be served now (a disk error took it offline)."""
        ...

    def create_topic(self, name: str, partitions: int, config: TopicConfig,
                     now_ms: int) -> Completion[TopicInfo | KafkaError]:
        """Create a validated topic (the broker applied Kafka's rules); KafkaError if storage refused."""
        ...

    def delete_topic(self, name: str) -> Completion[KafkaError | None]: ...

    def partition_sizes(self, keys: list[PartitionKey]) -> Completion[list[int]]:
        """Bytes each partition's log holds (-1: unknown partition), for DescribeLogDirs."""
        ...

    def delete_records(self, targets: list[tuple[str, int, int]]) -> Completion[list[tuple[ErrorCode, int]]]:
        """DeleteRecords: per (topic, partition, offset; -1 the high watermark), move the log start offset
        up to the offset; (error, new low watermark) each. OFFSET_OUT_OF_RANGE past the high watermark."""
        ...

    def alter_topic_config(self, name: str,
                           change: Callable[[Mapping[str, str]], TopicConfig]) -> Completion[TopicInfo | KafkaError]:
        """Replace a topic's overrides with `change(current overrides)`, computed from what storage holds at
        that moment (under its lock); KafkaError if `change` raises one or storage refused."""
        ...

    def create_partitions(self, name: str, total: int, now_ms: int) -> Completion[TopicInfo | KafkaError]:
        """Grow a topic to `total` partitions (validated by the broker); KafkaError if storage refused."""
        ...

    # --- the data plane ---------------------------------------------------------------------------

    def append(self, transactional_id: str | None, appends: list[Append], acks: int, now_ms: int,
               verify: Verifier) -> Completion[list[AppendResult]]:
        """Append each batch after its producer-state check; resolved once acks is met (acks=all: durable).
        A write that could not be confirmed resolves as a retriable error, never as a definite one.
        `verify` answers KIP-890 for the local backend's in-memory coordinator; a backend that keeps the
        transaction state itself (PostgreSQL) checks it in the append's own transaction instead."""
        ...

    def fetch(self, reads: list[Read], max_bytes: int, read_committed: bool) -> Completion[list[PartitionData]]:
        """Whole stored batches from each fetch offset up to the HW (or LSO when `read_committed`), at most
        each read's max_bytes and `max_bytes` in all; the first partition with data gets at least one
        whole batch (KIP-74)."""
        ...

    def list_offsets(self, queries: list[OffsetQuery], read_committed: bool) -> Completion[list[FoundOffset]]: ...

    def partition_offsets(self, keys: list[PartitionKey]) -> Completion[list[PartitionOffsets]]: ...

    def producers(self, keys: list[PartitionKey]) -> Completion[list[Producers]]: ...

    def write_markers(self, markers: list[Marker], now_ms: int) -> Completion[list[ErrorCode]]:
        """Append each marker (fenced by producer and coordinator epoch); resolved once durable."""
        ...

    # --- life cycle -------------------------------------------------------------------------------

    def close(self) -> None: ...
