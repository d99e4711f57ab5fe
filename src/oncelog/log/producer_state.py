"""Per-partition producer state: epochs, the last five batches, duplicate detection, snapshots.

Theory of operation (Kafka's `ProducerStateManager`, `ProducerAppendInfo`, `ProducerStateEntry`):
for each producer id that wrote to this partition we keep its epoch and the metadata of its last
`BATCHES_RETAINED` (5) batches. A client append is *validated first* (`check`), written to the log, and
only then *applied* (`apply`), so a rejected or failed write never changes state.

`check` answers, in Kafka's order:
1. a batch with the entry's epoch whose first and last sequence equal a cached batch's is a duplicate:
   it is not written again and is answered with the cached batch's original offsets;
2. an epoch below the entry's → INVALID_PRODUCER_EPOCH;
3. sequence: a new (higher) epoch must start at 0 unless we know no epoch for the producer; the same
   epoch must continue at last sequence + 1 (wrapping from 2^31-1 to 0); a producer we know nothing
   about (no entry, or one whose epoch is unknown) is accepted with any sequence → else
   OUT_OF_ORDER_SEQUENCE_NUMBER.
Recovery replays the log through `apply` without checks (Kafka's REPLICATION origin).

Snapshots use Kafka's `ProducerSnapshot` v1 format (`{offset:020d}.snapshot`: int16 version, uint32
CRC-32C of the rest, int32 count, then per producer id, epoch, last sequence, last offset, offset delta,
timestamp, coordinator epoch, current transaction first offset). Like Kafka they keep only each
producer's last batch, so right after a restart the duplicate window is that one batch.
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from oncelog.errors import ErrorCode, KafkaError
from oncelog.fs import FileSystem, write_atomically
from oncelog.protocol.records import BatchHeader, crc32c

logger = logging.getLogger(__name__)

BATCHES_RETAINED = 5
SEQUENCE_MODULUS = 1 << 31
NO_EPOCH = -1
SNAPSHOT_VERSION = 1
SNAPSHOT_SUFFIX = ".snapshot"

_SNAPSHOT_HEADER = struct.Struct(">hI")
_SNAPSHOT_COUNT = struct.Struct(">i")
_SNAPSHOT_ENTRY = struct.Struct(">qhiqiqiq")


def decrement_sequence(sequence: int, delta: int) -> int:
    return (sequence - delta) % SEQUENCE_MODULUS


def in_sequence(last_sequence: int, next_sequence: int) -> bool:
    return next_sequence == last_sequence + 1 or (next_sequence == 0 and last_sequence == SEQUENCE_MODULUS - 1)


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    """What we remember of one appended batch (Kafka's `BatchMetadata`)."""

    last_sequence: int
    last_offset: int
    offset_delta: int
    timestamp: int

    @property
    def first_sequence(self) -> int:
        return decrement_sequence(self.last_sequence, self.offset_delta)

    @property
    def first_offset(self) -> int:
        return self.last_offset - self.offset_delta


@dataclass(slots=True)
class ProducerStateEntry:
    producer_id: int
    producer_epoch: int = NO_EPOCH
    batches: deque[BatchMetadata] = field(default_factory=lambda: deque(maxlen=BATCHES_RETAINED))
    coordinator_epoch: int = -1
    last_timestamp: int = -1
    current_txn_first_offset: int = -1
    """First offset of this producer's open transaction on this partition, or -1."""

    @property
    def last_sequence(self) -> int:
        return self.batches[-1].last_sequence if self.batches else -1

    @property
    def last_offset(self) -> int:
        return self.batches[-1].last_offset if self.batches else -1

    def find_duplicate(self, header: BatchHeader) -> BatchMetadata | None:
        if header.producer_epoch != self.producer_epoch:
            return None
        for batch in self.batches:
            if batch.first_sequence == header.base_sequence and batch.last_sequence == header.last_sequence:
                return batch
        return None


@dataclass(frozen=True, slots=True)
class CompletedTxn:
    producer_id: int
    first_offset: int
    last_offset: int
    """The marker's offset."""
    aborted: bool


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A retried batch already in the log: answer with its original offset, write nothing."""

    base_offset: int
    timestamp: int


class ProducerStateManager:
    """The producer state of one partition. Plain data; the partition log calls it around appends."""

    def __init__(self) -> None:
        self.entries: dict[int, ProducerStateEntry] = {}
        self.last_map_offset = 0
        """Offset after the last batch applied: a snapshot taken now covers the log up to here."""

    # --- client appends: check, then apply -----------------------------------------------------------

    def check(self, header: BatchHeader) -> Duplicate | None:
        """Validate a client batch of an idempotent producer; raises KafkaError with Kafka's code."""
        entry = self.entries.get(header.producer_id)
        if entry is None:
            return None  # unknown producer: any sequence is accepted
        duplicate = entry.find_duplicate(header)
        if duplicate is not None:
            return Duplicate(duplicate.first_offset, duplicate.timestamp)
        if header.producer_epoch < entry.producer_epoch:
            raise KafkaError(
                ErrorCode.invalid_producer_epoch,
                f"producer {header.producer_id} epoch {header.producer_epoch} is older than {entry.producer_epoch}",
            )
        if header.producer_epoch != entry.producer_epoch:
            if header.base_sequence != 0 and entry.producer_epoch != NO_EPOCH:
                raise KafkaError(
                    ErrorCode.out_of_order_sequence_number,
                    f"producer {header.producer_id} new epoch {header.producer_epoch} "
                    f"starts at sequence {header.base_sequence}, not 0",
                )
        elif entry.producer_epoch != NO_EPOCH and not in_sequence(entry.last_sequence, header.base_sequence):
            raise KafkaError(
                ErrorCode.out_of_order_sequence_number,
                f"producer {header.producer_id} epoch {header.producer_epoch} sequence {header.base_sequence} "
                f"does not follow {entry.last_sequence}",
            )
        if not header.is_transactional and entry.current_txn_first_offset >= 0:
            # Kafka's `checkOngoingTransaction`: no plain writes in the middle of a transaction.
            raise KafkaError(
                ErrorCode.invalid_txn_state,
                f"producer {header.producer_id} wrote a non-transactional batch during its open transaction",
            )
        return None

    def open_transaction_first_offset(self, producer_id: int) -> int | None:
        """First offset of the producer's open transaction on this partition, or None."""
        entry = self.entries.get(producer_id)
        if entry is None or entry.current_txn_first_offset < 0:
            return None
        return entry.current_txn_first_offset

    def has_open_transaction(self, producer_id: int) -> bool:
        entry = self.entries.get(producer_id)
        return entry is not None and entry.current_txn_first_offset >= 0

    def check_marker(self, producer_id: int, producer_epoch: int, coordinator_epoch: int) -> None:
        """Kafka's `ProducerAppendInfo.appendEndTxnMarker` checks for a coordinator's marker."""
        entry = self.entries.get(producer_id)
        if entry is None:
            return
        if producer_epoch < entry.producer_epoch:
            raise KafkaError(ErrorCode.invalid_producer_epoch,
                             f"marker epoch {producer_epoch} is older than {entry.producer_epoch}")
        if coordinator_epoch < entry.coordinator_epoch:
            raise KafkaError(ErrorCode.transaction_coordinator_fenced,
                             f"marker coordinator epoch {coordinator_epoch} is older than {entry.coordinator_epoch}")

    def apply_marker(self, producer_id: int, producer_epoch: int, coordinator_epoch: int, marker_offset: int,
                     aborted: bool, timestamp: int) -> CompletedTxn | None:
        """Close the producer's open transaction on this partition (a marker for none is a no-op)."""
        self.last_map_offset = max(self.last_map_offset, marker_offset + 1)
        entry = self.entries.get(producer_id)
        if entry is None:
            entry = self.entries[producer_id] = ProducerStateEntry(producer_id)
        completed = None
        if entry.current_txn_first_offset >= 0:
            completed = CompletedTxn(producer_id, entry.current_txn_first_offset, marker_offset, aborted)
        if producer_epoch != entry.producer_epoch:
            entry.producer_epoch = producer_epoch
            entry.batches.clear()  # a bumped epoch restarts sequences at 0
        entry.coordinator_epoch = coordinator_epoch
        entry.current_txn_first_offset = -1
        entry.last_timestamp = max(entry.last_timestamp, timestamp)
        return completed

    def first_unstable_offset(self) -> int | None:
        """The first offset of the oldest open transaction on this partition (bounds the LSO)."""
        offsets = [e.current_txn_first_offset for e in self.entries.values() if e.current_txn_first_offset >= 0]
        return min(offsets) if offsets else None

    def apply(self, header: BatchHeader, base_offset: int, timestamp: int) -> None:
        """Record a batch that is now in the log (client append or recovery replay)."""
        last_offset = base_offset + header.last_offset_delta
        self.last_map_offset = max(self.last_map_offset, last_offset + 1)
        if header.producer_id < 0:
            return
        entry = self.entries.get(header.producer_id)
        if entry is None:
            entry = self.entries[header.producer_id] = ProducerStateEntry(header.producer_id)
        if header.producer_epoch != entry.producer_epoch:
            entry.producer_epoch = header.producer_epoch
            entry.batches.clear()
        entry.last_timestamp = max(entry.last_timestamp, timestamp)
        if header.is_control:
            return  # markers carry no sequence; `apply_marker` handles them
        if header.is_transactional and entry.current_txn_first_offset < 0:
            entry.current_txn_first_offset = base_offset
        entry.batches.append(
            BatchMetadata(header.last_sequence, last_offset, header.last_offset_delta, timestamp)
        )

    def advance(self, next_offset: int) -> None:
        """Non-idempotent batches move the map offset too, so snapshots cover them."""
        self.last_map_offset = max(self.last_map_offset, next_offset)

    # --- expiry -----------------------------------------------------------------------------------

    def remove_expired(self, now_ms: int, expiration_ms: int) -> int:
        """Forget producers idle for `producer.id.expiration.ms` without an open transaction."""
        expired = [
            producer_id
            for producer_id, entry in self.entries.items()
            if entry.current_txn_first_offset < 0 and now_ms - entry.last_timestamp >= expiration_ms
        ]
        for producer_id in expired:
            del self.entries[producer_id]
        return len(expired)

    # --- snapshots --------------------------------------------------------------------------------

    def snapshot_bytes(self) -> bytes:
        body = bytearray(_SNAPSHOT_COUNT.pack(len(self.entries)))
        for entry in self.entries.values():
            last = entry.batches[-1] if entry.batches else None
            body += _SNAPSHOT_ENTRY.pack(
                entry.producer_id,
                entry.producer_epoch,
                last.last_sequence if last else -1,
                last.last_offset if last else -1,
                last.offset_delta if last else 0,
                entry.last_timestamp,
                entry.coordinator_epoch,
                entry.current_txn_first_offset,
            )
        return _SNAPSHOT_HEADER.pack(SNAPSHOT_VERSION, crc32c(bytes(body))) + bytes(body)

    @classmethod
    def from_snapshot(cls, data: bytes, offset: int) -> ProducerStateManager:
        """Parse a snapshot; raises ValueError if it is torn, corrupt or of another version."""
        if len(data) < _SNAPSHOT_HEADER.size + _SNAPSHOT_COUNT.size:
            raise ValueError("snapshot is shorter than its header")
        version, crc = _SNAPSHOT_HEADER.unpack_from(data)
        if version != SNAPSHOT_VERSION:
            raise ValueError(f"snapshot version {version} is not {SNAPSHOT_VERSION}")
        body = data[_SNAPSHOT_HEADER.size :]
        if crc32c(body) != crc:
            raise ValueError("snapshot CRC-32C mismatch")
        (count,) = _SNAPSHOT_COUNT.unpack_from(body)
        if count < 0 or len(body) != _SNAPSHOT_COUNT.size + count * _SNAPSHOT_ENTRY.size:
            raise ValueError("snapshot entry count does not match its size")
        state = cls()
        for index in range(count):
            fields = _SNAPSHOT_ENTRY.unpack_from(body, _SNAPSHOT_COUNT.size + index * _SNAPSHOT_ENTRY.size)
            producer_id, epoch, last_sequence, last_offset, offset_delta, timestamp, coordinator_epoch, txn = fields
            entry = ProducerStateEntry(producer_id, epoch, coordinator_epoch=coordinator_epoch,
                                       last_timestamp=timestamp, current_txn_first_offset=txn)
            if last_offset >= 0:
                entry.batches.append(BatchMetadata(last_sequence, last_offset, offset_delta, timestamp))
            state.entries[producer_id] = entry
        state.last_map_offset = offset
        return state


# --- snapshot files ------------------------------------------------------------------------------------


def snapshot_path(directory: Path, offset: int) -> Path:
    return directory / f"{offset:020d}{SNAPSHOT_SUFFIX}"


def list_snapshots(fs: FileSystem, directory: Path) -> list[int]:
    """Offsets of the snapshot files in a partition directory, ascending."""
    offsets = []
    for name in fs.list_dir(directory):
        stem = name[: -len(SNAPSHOT_SUFFIX)]
        if name.endswith(SNAPSHOT_SUFFIX) and stem.isdigit():
            offsets.append(int(stem))
    return sorted(offsets)


def write_snapshot(fs: FileSystem, directory: Path, state: ProducerStateManager) -> Path:
    """Write `{last_map_offset}.snapshot` durably (temp file, fsync, rename)."""
    path = snapshot_path(directory, state.last_map_offset)
    write_atomically(fs, path, state.snapshot_bytes())
    return path


def load_latest_snapshot(fs: FileSystem, directory: Path, at_most: int, name: str) -> ProducerStateManager | None:
    """The newest readable snapshot at or below `at_most`; corrupt ones are logged and deleted."""
    for offset in reversed(list_snapshots(fs, directory)):
        path = snapshot_path(directory, offset)
        if offset > at_most:
            fs.unlink(path)
            continue
        try:
            return ProducerStateManager.from_snapshot(fs.read_bytes(path), offset)
        except ValueError as error:
            logger.warning("partition=%s ignoring producer snapshot %s: %s", name, path.name, error)
            fs.unlink(path)
    return None


def delete_snapshots_below(fs: FileSystem, directory: Path, offset: int, keep: Iterable[int] = ()) -> None:
    kept = set(keep)
    for snapshot_offset in list_snapshots(fs, directory):
        if snapshot_offset < offset and snapshot_offset not in kept:
            fs.unlink(snapshot_path(directory, snapshot_offset))


def drop_producers_below(state: ProducerStateManager, log_start_offset: int) -> int:
    """Forget producers whose last batch lies below the log start offset; how many went."""
    doomed = [producer_id for producer_id, entry in state.entries.items() if entry.last_offset < log_start_offset]
    for producer_id in doomed:
        del state.entries[producer_id]
    return len(doomed)


def iter_entries(state: ProducerStateManager) -> Iterator[ProducerStateEntry]:
    return iter(sorted(state.entries.values(), key=lambda entry: entry.producer_id))
