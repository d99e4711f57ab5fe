"""One partition's log: ordered segments with offset assignment, reads, roll, retention and recovery.

Theory of operation (Kafka's `UnifiedLog`/`LocalLog`/`LogLoader`, single node): the partition directory
(`{topic}-{partition}`) holds segments named by base offset. The last segment is the active one and the
only one written; the log end offset is its next offset. An append assigns offsets by rewriting the
batch's first 16 bytes (base offset, length, partition leader epoch, all outside the CRC) and writes the
rest of the producer's bytes untouched. The active segment rolls before an append that would pass
`segment_bytes`, when `segment_ms` has passed since its first append, or when a relative offset would no
longer fit the int32 index fields.

On one node an offset is committed once it is durable, so the high watermark is the recovery point
(Kafka's is what every in-sync replica has): consumers never see what a crash could take back. Reads
return whole batches only and may start inside a batch (consumers skip the records below the offset they
asked for); `max_offset_exclusive` lets the caller stop at the high watermark or the last stable offset.

Durability: appends go to the page cache. A flusher (owned by the server layer) takes `flush_snapshot()`,
fsyncs the segments it names in a worker thread, then calls `mark_flushed(offset)`, which advances the
recovery point. Everything below the recovery point is on disk; the recovery point is checkpointed by the
log manager. On open after an unclean shutdown every segment from the one holding the recovery point on
is recovered (each batch validated, torn or corrupt tail cut, later segments deleted) and the cut is
logged with its size. After a clean shutdown the files are trusted, but each segment still checks its
tail cheaply on open and is recovered if that fails.

Retention (Kafka's `deleteOldSegments`) deletes whole segments from the oldest, never the active one,
and moves the log start offset to the first remaining segment. Deletion is immediate rather than Kafka's
rename to `.deleted` and delete later: nothing else reads segment files behind our back.

Producer state (idempotence, `producer_state.py`) lives here too, because it must move in step with the
log: a client batch of an idempotent producer is checked before it is written (a retried duplicate is
answered with its original offset and not written), applied after. A snapshot is written at every roll
(at the new segment's base offset) and on close (at the log end offset); opening loads the newest
snapshot at or below the log end offset and replays the batch headers after it (Kafka's
`rebuildProducerState`). Retention keeps the in-memory state and deletes only snapshots below the log
start offset, the newest excepted.

Transactions: markers close a producer's open transaction here; the last stable offset is the first
offset of the oldest open one (a transaction whose marker is not durable yet still counts, Kafka's
`unreplicatedTxns`); aborted transactions go to the `.txnindex` (transaction_index.py).
Opening and recovery live in loader.py (Kafka's `LogLoader`); compaction in cleaner.py.

Why this module is long (~700 lines): appends, rolls, the recovery point, the producer state and the
last stable offset share one set of invariants (log start ≤ LSO ≤ high watermark ≤ log end, producer
state in step with the segments) that every mutating method must keep together; what could leave
without splitting an invariant across files already has (loading, cleaning, indexes, the txnindex).

Disk errors (Kafka's rule: a log never serves from files it cannot trust). Every change to the
partition's files runs inside `_changing`: if it fails with an I/O error, the log is rolled back to
its state before the change (the segment cuts a failed append back itself; a change that got further,
such as a marker whose aborted-transaction entry failed, is undone with `truncate_to`, which also
rebuilds producer state), and the caller gets KAFKA_STORAGE_ERROR with nothing changed, so an offset is
never handed out twice. If the rollback fails too, or an fsync or a read fails, the partition goes
offline: every later request for it gets KAFKA_STORAGE_ERROR until the broker restarts and recovers it
from what is on disk. Nothing acknowledged is lost either way: acks=all waits for an fsync that
succeeded, and recovery keeps every whole batch.

Why one module of ~700 lines: every operation that changes the segment list (append, roll, marker,
retention, segment replacement by the cleaner, truncation) must run inside the same `_changing` rollback
over the same private state (segments, log start, producer state, recovery point); splitting them would
expose that state to several modules and spread the rollback rule over them. What stands apart already
lives apart: opening and recovery in loader.py, compaction in cleaner.py, the segment in segment.py.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from oncelog.errors import ErrorCode, KafkaError
from oncelog.fs import DataDir, RollbackFailed
from oncelog.logs import RateLimited
from oncelog.protocol.records import (
    MAGIC_POSITION,
    BatchHeader,
    assigned_prefix,
    build_marker,
    iter_batches,
    parse_header,
)

from .index import INT32_MAX
from .loader import (
    INDEX_SUFFIXES,
    REPLAY_CHUNK_BYTES,
    new_segment,
    rebuild_producer_state,
    recover_segments,
    segment_base_offsets,
)
from .producer_state import (
    ProducerStateManager,
    delete_snapshots_below,
    list_snapshots,
    write_snapshot,
)
from .segment import LogSegment
from .transaction_index import AbortedTxn, TransactionIndex

logger = logging.getLogger(__name__)



@dataclass(frozen=True, slots=True)
class LogConfig:
    segment_bytes: int = 1024**3  # log.segment.bytes
    segment_ms: int = 7 * 24 * 3600 * 1000  # log.roll.ms
    retention_ms: int = 7 * 24 * 3600 * 1000  # log.retention.ms (-1 = forever)
    retention_bytes: int = -1  # log.retention.bytes (-1 = unlimited)
    index_interval_bytes: int = 4096  # log.index.interval.bytes
    message_bytes_max: int = 1048588  # max.message.bytes (largest batch accepted)

    def __post_init__(self) -> None:
        # Index positions are int32, so a segment can never be larger than that.
        assert 0 < self.segment_bytes <= INT32_MAX, "segment_bytes must fit an int32 index position"
        assert self.segment_ms > 0 and self.index_interval_bytes >= 0 and self.message_bytes_max >= 0




@dataclass(frozen=True, slots=True)
class AppendResult:
    base_offset: int
    duplicate: bool = False
    """True when the batch was a producer's retry of a batch already in the log: nothing was written."""
    timestamp: int = -1
    """For a duplicate, the timestamp recorded with the original batch."""


_storage_warnings = RateLimited(60.0)


class PartitionLog:
    """The log of one partition. Not thread-safe: the broker's event loop is its only caller (the
    flusher's worker thread only calls `LogSegment.fsync` on segments from `flush_snapshot`)."""

    def __init__(
        self,
        directory: Path,
        topic: str,
        partition: int,
        config: LogConfig,
        segments: list[LogSegment],
        data_dir: DataDir,
        *,
        log_start_offset: int,
        recovery_point: int,
    ) -> None:
        assert segments, "a partition log always has an active segment"
        self.directory = directory
        self.topic = topic
        self.partition = partition
        self.config = config
        self.data_dir = data_dir
        self._segments = segments
        self._log_start_offset = log_start_offset
        self._recovery_point = recovery_point
        self._completed_not_durable: deque[tuple[int, int]] = deque()
        """(first offset, marker offset) of transactions whose marker is not durable yet, by marker offset:
        they hold the last stable offset as if still open (Kafka's `unreplicatedTxns`)."""
        self._closed = False
        self.offline_reason: str | None = None
        """Why the partition is offline (a disk error it could not roll back), or None while it serves."""
        self.producer_state = ProducerStateManager()
        self.txn_index = TransactionIndex(directory, data_dir.fs, [segment.base_offset for segment in segments])

    # --- disk errors ------------------------------------------------------------------------------

    @property
    def offline(self) -> bool:
        return self.offline_reason is not None

    def _check_online(self) -> None:
        if self.offline_reason is not None:
            raise KafkaError(ErrorCode.kafka_storage_error, f"partition {self.name} is offline: {self.offline_reason}")

    def go_offline(self, reason: str) -> None:
        """Stop serving this partition until the broker restarts (Kafka's offline log directory)."""
        if self.offline_reason is None:
            self.offline_reason = reason
            logger.error("partition=%s is offline until the broker restarts: %s", self.name, reason)

    @contextmanager
    def _changing(self, what: str) -> Iterator[None]:
        """Run a change of the partition's files: an I/O error rolls the log back to its state before the
        change, or takes the partition offline if that fails; either way KAFKA_STORAGE_ERROR is raised."""
        self._check_online()
        end_before = self.log_end_offset
        segments_before = len(self._segments)
        try:
            yield
        except RollbackFailed as error:
            self.go_offline(f"{what} failed and could not be undone: {error.__cause__ or error}")
            raise KafkaError(ErrorCode.kafka_storage_error, f"partition {self.name} is offline") from error
        except OSError as error:
            try:
                self._roll_back_to(end_before, segments_before)
            except (OSError, RollbackFailed) as second:
                self.go_offline(f"{what} failed ({error}) and could not be undone ({second})")
                raise KafkaError(ErrorCode.kafka_storage_error, f"partition {self.name} is offline") from error
            if _storage_warnings.allow((self.name, what)) is not None:
                logger.warning("partition=%s %s failed, rolled back to log_end_offset=%d: %s", self.name, what,
                               end_before, error)
            raise KafkaError(ErrorCode.kafka_storage_error, f"{what} failed: {error.strerror or error}") from error

    def _roll_back_to(self, end_before: int, segments_before: int) -> None:
        if self.log_end_offset > end_before or self.producer_state.last_map_offset > end_before:
            self.truncate_to(end_before)
        while len(self._segments) > max(segments_before, 1) and self._segments[-1].size == 0:
            self._segments.pop().delete()  # an empty segment a failed roll left behind

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """A read error means the files cannot be trusted: the partition goes offline."""
        self._check_online()
        try:
            yield
        except OSError as error:
            self.go_offline(f"read failed: {error}")
            raise KafkaError(ErrorCode.kafka_storage_error, f"partition {self.name} is offline") from error

    def fsync_failed(self, error: OSError) -> None:
        """The flusher could not fsync this log: what it wrote since the recovery point may be lost, and a
        later fsync may report success for pages the kernel dropped, so nothing here is trusted again."""
        self.go_offline(f"fsync failed: {error}")

    # --- opening ----------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: Path,
        topic: str,
        partition: int,
        config: LogConfig,
        data_dir: DataDir,
        *,
        recovery_point: int,
        log_start_offset: int,
        clean_shutdown: bool,
        now_ms: int,
    ) -> PartitionLog:
        """Load (and if needed recover) the partition in `directory`, creating it if it is missing.
        Raises OSError if the files cannot be read or repaired."""
        name = f"{topic}-{partition}"
        fs = data_dir.fs
        if not fs.exists(directory):
            fs.make_dir(directory)
            fs.sync_dir(directory.parent)
        segments = [
            new_segment(directory, data_dir, config, base, now_ms) for base in segment_base_offsets(directory, data_dir)
        ]
        if not segments:
            segments.append(new_segment(directory, data_dir, config, log_start_offset, now_ms))
        first_recovered = len(segments)
        if not clean_shutdown:
            bases = [segment.base_offset for segment in segments]
            first_recovered = max(bisect_right(bases, recovery_point) - 1, 0)
        recover_segments(name, segments, first_recovered, config)
        log_start_offset = max(log_start_offset, segments[0].base_offset)
        log = cls(
            directory, topic, partition, config, segments, data_dir, log_start_offset=log_start_offset,
            recovery_point=0,
        )
        if log._log_start_offset > log.log_end_offset:
            # The log lost its tail below the checkpointed log start offset. Starting empty at the log
            # start offset (Kafka's `truncateFullyAndStartAt`) keeps offsets from ever being reused.
            logger.warning(
                "partition=%s log_start_offset=%d is past the recovered log end offset %d: starting empty",
                name,
                log._log_start_offset,
                log.log_end_offset,
            )
            log._start_at(log._log_start_offset, now_ms)
        # Recovered segments were fsynced by `recover`, trusted ones were durable already.
        log._recovery_point = log.log_end_offset
        log._rebuild_producer_state()
        return log

    def _rebuild_producer_state(self) -> None:
        rebuild_producer_state(self)

    def take_producer_snapshot(self) -> None:
        """Write a snapshot at the current map offset unless one exists there already."""
        state = self.producer_state
        if not state.entries and state.last_map_offset <= self._log_start_offset:
            return  # nothing a snapshot would save replaying
        existing = list_snapshots(self.data_dir.fs, self.directory)
        if existing and existing[-1] >= state.last_map_offset:
            return
        write_snapshot(self.data_dir.fs, self.directory, state)

    # --- properties -------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.partition}"

    @property
    def log_end_offset(self) -> int:
        return self._segments[-1].next_offset

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def high_watermark(self) -> int:
        """Single node: an offset is committed once it is durable, so the high watermark is the recovery
        point. Kafka's high watermark is what every in-sync replica has; ours is what the disk has.
        Consumers never see a record a crash could still take back, so an offset they read is never
        reused for another record and the high watermark never moves back across a restart."""
        return self._recovery_point

    @property
    def recovery_point(self) -> int:
        """Every offset below this is fsynced."""
        return self._recovery_point

    @property
    def size_bytes(self) -> int:
        return sum(segment.size for segment in self._segments)

    @property
    def segments(self) -> Sequence[LogSegment]:
        return tuple(self._segments)

    # --- appending --------------------------------------------------------------------------------

    def append(
        self, batch: bytes, header: BatchHeader, now_ms: int, *, partition_leader_epoch: int = 0
    ) -> AppendResult:
        """Append one validated client batch at the log end offset.

        Batches of idempotent producers go through the producer-state check first: a duplicate is not
        written (its original offset is returned), a stale epoch or a sequence gap raises KafkaError.
        """
        assert not self._closed and len(batch) == header.size and header.last_offset_delta >= 0
        self._check_online()
        if header.producer_id >= 0:
            duplicate = self.producer_state.check(header)
            if duplicate is not None:
                return AppendResult(duplicate.base_offset, duplicate=True, timestamp=duplicate.timestamp)
        with self._changing("append"):
            base_offset = self._append_bytes(batch, header, now_ms, partition_leader_epoch)
        self.producer_state.apply(header, base_offset, header.max_timestamp)
        self.producer_state.advance(base_offset + header.last_offset_delta + 1)
        return AppendResult(base_offset)

    def append_coordinator_batch(self, batch: bytes, header: BatchHeader, now_ms: int) -> int:
        """Append a coordinator's batch (offsets, transaction state): no sequence checks, like Kafka's
        COORDINATOR origin, but producer state and open transactions are tracked. Returns its base offset."""
        with self._changing("append"):
            base_offset = self._append_bytes(batch, header, now_ms, 0)
        if header.producer_id >= 0:
            self.producer_state.apply(header, base_offset, header.max_timestamp)
        self.producer_state.advance(base_offset + header.last_offset_delta + 1)
        return base_offset

    def append_marker(self, producer_id: int, producer_epoch: int, coordinator_epoch: int, commit: bool,
                      now_ms: int) -> int:
        """Write a transaction coordinator's COMMIT/ABORT marker; return its offset.

        Raises INVALID_PRODUCER_EPOCH / TRANSACTION_COORDINATOR_FENCED like Kafka's `appendEndTxnMarker`.
        """
        self._check_online()
        self.producer_state.check_marker(producer_id, producer_epoch, coordinator_epoch)
        batch = build_marker(producer_id, producer_epoch, coordinator_epoch, commit, now_ms)
        header = parse_header(batch)
        first_offset = self.producer_state.open_transaction_first_offset(producer_id)
        with self._changing("marker"):
            offset = self._append_bytes(batch, header, now_ms, 0)
            self.complete_transaction(producer_id, producer_epoch, coordinator_epoch, offset, not commit, now_ms)
            self.producer_state.advance(offset + 1)
        if first_offset is not None:
            self._completed_not_durable.append((first_offset, offset))
        return offset

    def complete_transaction(self, producer_id: int, producer_epoch: int, coordinator_epoch: int,
                              marker_offset: int, aborted: bool, timestamp: int) -> None:
        """Apply a marker to producer state; an ABORT that closes an open transaction is written to the
        aborted-transaction index first (if that write fails, producer state is unchanged)."""
        state = self.producer_state
        first_offset = state.open_transaction_first_offset(producer_id)
        if aborted and first_offset is not None:
            others = [e.current_txn_first_offset for e in state.entries.values()
                      if e.producer_id != producer_id and e.current_txn_first_offset >= 0]
            last_stable_offset = min(others) if others else marker_offset + 1
            segment_base = self._segments[
                bisect_right(self._segments, marker_offset, key=lambda s: s.base_offset) - 1].base_offset
            self.txn_index.append(segment_base, AbortedTxn(producer_id, first_offset, marker_offset,
                                                           last_stable_offset))
        state.apply_marker(producer_id, producer_epoch, coordinator_epoch, marker_offset, aborted, timestamp)

    @property
    def last_stable_offset(self) -> int:
        """Below the oldest open transaction, else the high watermark (never below the log start). A
        transaction whose marker is not durable yet counts as open, as Kafka's `ProducerStateManager`
        keeps a completed transaction unstable until the high watermark passes its marker: a crash could
        still take the marker back, and the last stable offset must never move back."""
        high_watermark = self.high_watermark
        unstable = self.producer_state.first_unstable_offset()
        pending = self._completed_not_durable
        while pending and pending[0][1] < high_watermark:
            pending.popleft()
        while pending and pending[-1][1] >= self.log_end_offset:  # a marker rolled back or truncated
            pending.pop()
        if pending:
            first = min(first_offset for first_offset, _marker in pending)
            unstable = first if unstable is None else min(unstable, first)
        if unstable is None or unstable >= high_watermark:
            return high_watermark
        return max(unstable, self._log_start_offset)

    def aborted_transactions(self, fetch_offset: int, upper_bound: int) -> list[tuple[int, int]]:
        return self.txn_index.collect(fetch_offset, upper_bound)

    def _append_bytes(self, batch: bytes, header: BatchHeader, now_ms: int, partition_leader_epoch: int) -> int:
        if header.size > self.config.message_bytes_max:
            raise KafkaError(
                ErrorCode.message_too_large,
                f"batch of {header.size} bytes exceeds max.message.bytes {self.config.message_bytes_max}",
            )
        if header.size > self.config.segment_bytes:
            raise KafkaError(
                ErrorCode.record_list_too_large,
                f"batch of {header.size} bytes exceeds segment.bytes {self.config.segment_bytes}",
            )
        base_offset = self.log_end_offset
        last_offset = base_offset + header.last_offset_delta
        active = self._segments[-1]
        if active.size > 0 and self._should_roll(active, header.size, last_offset, now_ms):
            active = self._roll(now_ms)
        active.append(
            assigned_prefix(base_offset, header.batch_length, partition_leader_epoch),
            memoryview(batch)[MAGIC_POSITION:],
            base_offset,
            last_offset,
            header.max_timestamp,
            now_ms=now_ms,
        )
        return base_offset

    def _should_roll(self, active: LogSegment, batch_bytes: int, last_offset: int, now_ms: int) -> bool:
        roll_base_ms = active.roll_base_ms
        return (
            active.size + batch_bytes > self.config.segment_bytes
            or (roll_base_ms is not None and now_ms - roll_base_ms >= self.config.segment_ms)
            or last_offset - active.base_offset > INT32_MAX
        )

    def _roll(self, now_ms: int) -> LogSegment:
        # The flusher fsyncs the old segment's data; its indexes are final now, so make them durable.
        # Nothing in memory changes until the new segment exists: a failure leaves the old one active.
        try:
            self._segments[-1].flush_indexes()
            self.txn_index.flush(self._segments[-1].base_offset)
        except OSError as error:
            # As for the log itself: a later fsync may report success for pages the kernel dropped after
            # this one failed (the simulation lost aborted-transaction entries that way), so nothing here
            # is trusted until a restart rebuilds it from the log.
            self.fsync_failed(error)
            raise
        self.take_producer_snapshot()
        segment = new_segment(self.directory, self.data_dir, self.config, self.log_end_offset, now_ms)
        self._segments.append(segment)
        logger.info("partition=%s rolled new segment=%s", self.name, segment.log_path.name)
        return segment

    # --- reading ----------------------------------------------------------------------------------

    def read(
        self, fetch_offset: int, max_bytes: int, max_offset_exclusive: int, min_one_batch: bool = True
    ) -> bytes:
        """Whole batches from the one holding `fetch_offset`, across segments, up to `max_bytes` (or one
        oversized batch with `min_one_batch`, KIP-74), stopping before `max_offset_exclusive`."""
        self._check_online()
        log_end_offset = self.log_end_offset
        if not self._log_start_offset <= fetch_offset <= log_end_offset:
            raise KafkaError(
                ErrorCode.offset_out_of_range,
                f"partition={self.name} fetch offset {fetch_offset} is outside "
                f"[{self._log_start_offset}, {log_end_offset}]",
            )
        with self._reading():
            return self._read(fetch_offset, max_bytes, max_offset_exclusive, min_one_batch)

    def _read(self, fetch_offset: int, max_bytes: int, max_offset_exclusive: int, min_one_batch: bool) -> bytes:
        first = max(
            bisect_right(self._segments, fetch_offset, key=lambda segment: segment.base_offset) - 1, 0
        )
        chunks: list[bytes] = []
        remaining_bytes = max(max_bytes, 0)  # a client's negative limit reads like 0, never an assert
        offset = fetch_offset
        for segment in self._segments[first:]:
            if offset >= max_offset_exclusive:
                break
            data, offset = segment.read_extent(
                max(offset, segment.base_offset),
                remaining_bytes,
                max_offset_exclusive,
                min_one_batch and not chunks,
            )
            if data:
                chunks.append(data)
                remaining_bytes -= len(data)
            # Move on to the next segment only when this one has nothing more to give.
            if offset < segment.next_offset or remaining_bytes <= 0:
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def iter_batches(self, from_offset: int) -> Iterator[tuple[bytes, int, BatchHeader]]:
        """(data, position, header) of every batch holding an offset ≥ `from_offset`, up to the log end
        offset, read a chunk at a time (replays: producer state, internal topics)."""
        offset = max(from_offset, self._log_start_offset)
        while offset < self.log_end_offset:
            data = self._read(offset, REPLAY_CHUNK_BYTES, self.log_end_offset, True)
            if not data:
                return
            for position, header in iter_batches(data):
                if header.last_offset >= offset:
                    yield data, position, header
                offset = max(offset, header.next_offset)

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record stamped at or after `timestamp`, or None; raised to the
        log start offset if that record lies below it (`LogSegment.find_offset_for_timestamp`)."""
        with self._reading():
            for segment in self._segments:
                if segment.max_timestamp < timestamp:
                    continue
                found = segment.find_offset_for_timestamp(timestamp, self._log_start_offset)
                if found is not None:
                    return found
        return None

    # --- durability -------------------------------------------------------------------------------

    def flush_snapshot(self) -> tuple[int, list[LogSegment]]:
        """(log end offset now, segments that may hold data at or above the recovery point).

        Once a worker has fsynced those segments, everything below the returned offset is durable and
        the owner calls `mark_flushed(offset)`. A segment deleted meanwhile turns its fsync into a no-op.
        """
        recovery_point = self._recovery_point
        return self.log_end_offset, [s for s in self._segments if s.next_offset > recovery_point and not s.closed]

    def mark_flushed(self, offset: int) -> None:
        """Advance the recovery point to `offset` (never backwards, never past the log end offset)."""
        self._recovery_point = max(self._recovery_point, min(offset, self.log_end_offset))

    # --- retention and truncation -----------------------------------------------------------------

    def apply_retention(self, now_ms: int) -> int:
        """Delete the oldest non-active segments past `retention_ms` or beyond `retention_bytes`; move
        the log start offset to the first remaining segment. Returns the number of segments deleted.
        A file that cannot be deleted takes the partition offline (memory and disk would disagree)."""
        if self.offline:
            return 0
        try:
            return self._apply_retention(now_ms)
        except (OSError, RollbackFailed) as error:
            self.go_offline(f"retention failed: {error}")
            return 0

    def _apply_retention(self, now_ms: int) -> int:
        config = self.config
        total_bytes = self.size_bytes

        def doomed(segment: LogSegment) -> bool:
            nonlocal total_bytes
            newest_ms = segment.max_timestamp if segment.max_timestamp >= 0 else segment.last_modified_ms
            expired = config.retention_ms >= 0 and newest_ms < now_ms - config.retention_ms
            oversized = config.retention_bytes >= 0 and total_bytes - segment.size >= config.retention_bytes
            if expired or oversized:
                total_bytes -= segment.size
                return True
            return False

        return self._delete_oldest_segments(doomed, "retention")

    def delete_records_before(self, offset: int) -> int:
        """DeleteRecords (Kafka's `deleteRecordsOnLocalLog`): the log start offset moves up to `offset`
        (the caller checked it is at most the high watermark) and every segment wholly below it is
        deleted. Returns the new log start offset. A file that cannot be deleted takes the partition
        offline; KafkaError(KAFKA_STORAGE_ERROR) then."""
        self._check_online()
        if offset <= self._log_start_offset:
            return self._log_start_offset
        self._log_start_offset = offset
        try:
            self._delete_oldest_segments(lambda segment: self._segments[1].base_offset <= offset, "DeleteRecords")
        except (OSError, RollbackFailed) as error:
            self.go_offline(f"deleting records failed: {error}")
            raise KafkaError(ErrorCode.kafka_storage_error, f"partition {self.name} is offline") from error
        return self._log_start_offset

    def _delete_oldest_segments(self, doomed: Callable[[LogSegment], bool], why: str) -> int:
        """Delete non-active segments from the oldest while `doomed(segment)`; the log start offset moves
        to the first one kept (never down). Returns how many went."""
        deleted = 0
        while len(self._segments) > 1 and doomed(self._segments[0]):
            segment = self._segments.pop(0)
            self._log_start_offset = max(self._log_start_offset, self._segments[0].base_offset)
            segment.delete()
            self.txn_index.drop_segment(segment.base_offset)
            deleted += 1
        if deleted:
            fs = self.data_dir.fs
            newest = list_snapshots(fs, self.directory)[-1:]
            delete_snapshots_below(fs, self.directory, self._log_start_offset, keep=newest)
            logger.info("partition=%s %s deleted %d segments, log_start_offset=%d", self.name, why, deleted,
                        self._log_start_offset)
        return deleted

    def replace_segment(self, old: LogSegment, cleaned_path: Path) -> None:
        """Swap a compacted copy in for a non-active segment (see cleaner.py for the crash argument).
        Before the rename a failure leaves the old segment in place (OSError); after it, the partition
        goes offline (a restart finds the cleaned file in place and rebuilds its indexes)."""
        self._check_online()
        index = self._segments.index(old)
        assert index < len(self._segments) - 1, "the active segment is never compacted"
        fs = self.data_dir.fs
        modified_ns = fs.mtime_ns(old.log_path)
        fs.set_mtime_ns(cleaned_path, modified_ns)  # retention and tombstone age stay the segment's
        old.close()
        try:
            for suffix in INDEX_SUFFIXES:  # the aborted-transaction index stays valid: offsets do not move
                fs.unlink(self.directory / f"{old.base_offset:020d}{suffix}")
            fs.rename(cleaned_path, old.log_path)
            fs.sync_dir(self.directory)
            segment = new_segment(self.directory, self.data_dir, self.config, old.base_offset, 0)
            segment.recover(max(self.config.message_bytes_max, self.config.segment_bytes))
        except (OSError, RollbackFailed) as error:
            self.go_offline(f"swapping in the compacted segment {old.log_path.name} failed: {error}")
            raise KafkaError(ErrorCode.kafka_storage_error, f"partition {self.name} is offline") from error
        self._segments[index] = segment

    def truncate_to(self, offset: int) -> None:
        """Remove every batch holding an offset ≥ `offset` (a batch straddling it goes whole)."""
        assert offset >= 0
        if offset >= self.log_end_offset:
            return
        if offset <= self._segments[0].base_offset:
            self._start_at(offset, 0)
        else:
            while self._segments[-1].base_offset >= offset:
                doomed = self._segments.pop()
                doomed.delete()
                self.txn_index.drop_segment(doomed.base_offset)
            self._segments[-1].truncate_to(offset)
        self._recovery_point = min(self._recovery_point, self.log_end_offset)
        self._log_start_offset = min(self._log_start_offset, self.log_end_offset)
        self._rebuild_producer_state()

    def _start_at(self, offset: int, now_ms: int) -> None:
        """Delete every segment and continue with an empty one at `offset`."""
        for segment in self._segments:
            segment.delete()
            self.txn_index.drop_segment(segment.base_offset)
        self._segments = [new_segment(self.directory, self.data_dir, self.config, offset, now_ms)]
        self._log_start_offset = offset

    # --- lifecycle --------------------------------------------------------------------------------

    def close(self) -> bool:
        """fsync everything, then close every file. Idempotent. Returns False if the log is offline or
        something could not be made durable (the next start then recovers it)."""
        if self._closed:
            return self.offline_reason is None
        durable = self.offline_reason is None
        if durable:
            try:
                self.take_producer_snapshot()
                self.txn_index.flush(self._segments[-1].base_offset)
                for segment in self._segments:
                    segment.fsync()
                    segment.flush_indexes()
                self._recovery_point = self.log_end_offset
            except OSError as error:
                logger.error("partition=%s could not be flushed on close: %s", self.name, error)
                durable = False
        for segment in self._segments:
            segment.close()
        self._closed = True
        return durable

    def delete(self) -> None:
        """Close without flushing and remove the partition directory."""
        for segment in self._segments:
            segment.close()
        self._closed = True
        self.data_dir.fs.remove_tree(self.directory)

    def __repr__(self) -> str:
        return (
            f"PartitionLog({self.name}, log_start_offset={self._log_start_offset}, "
            f"log_end_offset={self.log_end_offset}, segments={len(self._segments)})"
        )
