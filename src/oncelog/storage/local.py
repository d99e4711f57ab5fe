"""The embedded backend: partitions as Kafka-layout segment files in one data directory (`log/`).

Theory of operation: every verb runs to completion inside the call (the event loop owns the logs, so a
call cannot be interleaved) and returns an already resolved `Completion`, except an acks=all append and a
marker write, which resolve once the flusher has fsynced their bytes (`durability`, provided by the
server layer). The producer-state check and the KIP-890 verification happen in `append`, on the same
loop turn as the write, so nothing can slip between the check and the offset assignment.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping

from oncelog.coordinator.runtime import Completion, resolved
from oncelog.errors import ErrorCode, KafkaError
from oncelog.log.manager import LogManager, Topic
from oncelog.log.partition import PartitionLog
from oncelog.log.producer_state import iter_entries
from oncelog.protocol.records import iter_batches
from oncelog.topic_config import TopicConfig

from .api import (
    ACKS_ALL,
    ActiveProducer,
    Append,
    Appended,
    AppendError,
    AppendResult,
    FoundOffset,
    Marker,
    OffsetQuery,
    PartitionData,
    PartitionKey,
    PartitionOffsets,
    Producers,
    Read,
    TopicInfo,
    Verifier,
)

logger = logging.getLogger(__name__)

Durability = Callable[[PartitionLog, int, Callable[[bool], None]], None]
"""`durability(log, offset, callback)`: callback(True) once everything below offset is fsynced, else False."""

LATEST = -1
EARLIEST = -2
MAX_TIMESTAMP = -3


def _info(topic: Topic) -> TopicInfo:
    return TopicInfo(topic.name, topic.topic_id, len(topic.partitions), topic.config)


def _end_offset(records: bytes) -> int:
    """The offset after the last batch in `records` (whole batches, as the log returns them)."""
    end = 0
    for _position, header in iter_batches(records):
        end = header.next_offset
    return end


def _ignore(ok: bool) -> None:
    pass


class AllDurable:
    """Calls `callback(ok)` once every (log, offset) target is durable (ok: all of them made it)."""

    __slots__ = ("_callback", "_ok", "_remaining")

    def __init__(self, durability: Durability, targets: list[tuple[PartitionLog, int]],
                 callback: Callable[[bool], None]) -> None:
        self._remaining = len(targets)
        self._ok = True
        self._callback = callback
        if not targets:
            callback(True)
        for log, offset in targets:
            durability(log, offset, self._one)

    def _one(self, ok: bool) -> None:
        self._ok &= ok
        self._remaining -= 1
        if self._remaining == 0:
            self._callback(self._ok)


class LocalStorage:
    def __init__(self, logs: LogManager) -> None:
        self.logs = logs
        self.on_change: Callable[[str, int], None] = lambda topic, partition: None
        self.durability: Durability = lambda log, offset, callback: callback(True)
        self._infos: dict[str, TopicInfo] = {}

    def start(self, now_ms: int, durability: Durability) -> None:
        self.durability = durability
        self.logs.start(now_ms)

    def close(self) -> None:
        self.logs.close()

    def log_changed(self, log: PartitionLog) -> None:
        self.on_change(log.topic, log.partition)

    # --- topics -----------------------------------------------------------------------------------

    def topic(self, name: str) -> TopicInfo | None:
        info = self._infos.get(name)
        if info is None:
            topic = self.logs.topic(name)
            if topic is None:
                return None
            info = self._infos[name] = _info(topic)
        return info

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicInfo | None:
        topic = self.logs.topic_by_id(topic_id)
        return None if topic is None else self.topic(topic.name)

    def topics(self) -> list[TopicInfo]:
        return [_info(topic) for topic in self.logs.topics()]

    def partition_count(self) -> int:
        return self.logs.partition_count

    def colliding_topic(self, name: str) -> str | None:
        return self.logs.colliding_topic(name)

    def offline(self, topic: str, partition: int) -> bool:
        log = self.logs.get(topic, partition)
        return log is not None and log.offline

    def create_topic(self, name: str, partitions: int, config: TopicConfig,
                     now_ms: int) -> Completion[TopicInfo | KafkaError]:
        self._infos.pop(name, None)
        try:
            return resolved(_info(self.logs.create_topic(name, partitions, config, now_ms)))
        except KafkaError as error:
            return resolved(error)

    def alter_topic_config(self, name: str,
                           change: Callable[[Mapping[str, str]], TopicConfig]) -> Completion[TopicInfo | KafkaError]:
        self._infos.pop(name, None)
        topic = self.logs.topic(name)
        try:
            if topic is None:
                raise KafkaError(ErrorCode.unknown_topic_or_partition, f"topic '{name}' does not exist")
            return resolved(_info(self.logs.alter_topic_config(name, change(topic.config.overrides))))
        except KafkaError as error:
            return resolved(error)

    def create_partitions(self, name: str, total: int, now_ms: int) -> Completion[TopicInfo | KafkaError]:
        self._infos.pop(name, None)
        try:
            return resolved(_info(self.logs.create_partitions(name, total, now_ms)))
        except KafkaError as error:
            return resolved(error)

    def delete_topic(self, name: str) -> Completion[KafkaError | None]:
        self._infos.pop(name, None)
        topic = self.logs.topic(name)
        try:
            self.logs.delete_topic(name)
        except KafkaError as error:
            return resolved(error)
        for index in range(len(topic.partitions) if topic else 0):
            self.on_change(name, index)  # parked fetches answer UNKNOWN_TOPIC_OR_PARTITION now
        return resolved(None)

    # --- the data plane ---------------------------------------------------------------------------

    def append(self, transactional_id: str | None, appends: list[Append], acks: int, now_ms: int,
               verify: Verifier) -> Completion[list[AppendResult]]:
        results: list[AppendResult] = []
        written: list[tuple[PartitionLog, int]] = []
        for append in appends:
            log = self.logs.get(append.topic, append.partition)
            if log is None:
                results.append(AppendError(ErrorCode.unknown_topic_or_partition))
                continue
            header = append.header
            try:
                if header.is_transactional and not log.producer_state.has_open_transaction(header.producer_id) \
                        and log.producer_state.check(header) is None:
                    # A retried duplicate is answered from the window whatever happened since; anything
                    # else must belong to the producer's ongoing transaction (KIP-890 part 1).
                    problem = verify(transactional_id, header, (append.topic, append.partition))
                    if problem is not None:
                        raise KafkaError(problem, f"producer {header.producer_id} is not in a transaction "
                                                  f"with {log.name}")
                result = log.append(append.records, header, now_ms)
            except KafkaError as error:
                results.append(AppendError(error.code, error.message, log.log_start_offset))
                continue
            # A duplicate may still be on its way to disk: acks=all waits for the original batch either way.
            written.append((log, result.base_offset + header.record_count))
            results.append(Appended(result.base_offset, log.log_start_offset, result.duplicate, result.timestamp))
        for log, _offset in written:
            self.on_change(log.topic, log.partition)
        if acks != ACKS_ALL or not written:
            for log, offset in written:  # consumers see it once it is durable (the high watermark): soon
                self.durability(log, offset, _ignore)
            return resolved(results)
        completion: Completion[list[AppendResult]] = Completion()

        def durable(ok: bool) -> None:
            if not ok:
                for index, result in enumerate(results):
                    if isinstance(result, Appended):
                        results[index] = AppendError(ErrorCode.kafka_storage_error, "the write was not made durable",
                                                     result.log_start_offset)
            completion.resolve(results)

        if len(written) == 1:  # the common case: one partition per request
            self.durability(written[0][0], written[0][1], durable)
        else:
            AllDurable(self.durability, written, durable)
        return completion

    def fetch(self, reads: list[Read], max_bytes: int, read_committed: bool) -> Completion[list[PartitionData]]:
        remaining = max_bytes
        total = 0
        results = []
        for read in reads:
            limit = max(0, min(read.max_bytes, remaining))
            result = self._read(read, limit, read_committed, total == 0)
            size = len(result.records or b"")
            total += size
            remaining -= size
            results.append(result)
        return resolved(results)

    def _read(self, read: Read, max_bytes: int, read_committed: bool, first: bool) -> PartitionData:
        log = self.logs.get(read.topic, read.partition)
        if log is None:
            return PartitionData(ErrorCode.unknown_topic_or_partition)
        high_watermark = log.high_watermark
        last_stable_offset = log.last_stable_offset
        upper_bound = last_stable_offset if read_committed else high_watermark
        try:
            records = log.read(read.fetch_offset, max_bytes, upper_bound, min_one_batch=first)
        except KafkaError as error:
            return PartitionData(error.code, high_watermark, last_stable_offset, log.log_start_offset)
        aborted = None
        if read_committed:
            returned_end = _end_offset(records) if records else read.fetch_offset
            aborted = log.aborted_transactions(read.fetch_offset, returned_end)
        return PartitionData(ErrorCode.none, high_watermark, last_stable_offset, log.log_start_offset, records,
                             aborted)

    def list_offsets(self, queries: list[OffsetQuery], read_committed: bool) -> Completion[list[FoundOffset]]:
        results = []
        for query in queries:
            log = self.logs.get(query.topic, query.partition)
            if log is None or log.offline:
                code = ErrorCode.unknown_topic_or_partition if log is None else ErrorCode.kafka_storage_error
                results.append(FoundOffset(code))
                continue
            try:
                offset, timestamp = _offset_for(log, query.timestamp, read_committed)
            except KafkaError as error:  # the partition went offline while reading
                results.append(FoundOffset(error.code))
                continue
            results.append(FoundOffset(ErrorCode.none, offset, timestamp))
        return resolved(results)

    def partition_sizes(self, keys: list[PartitionKey]) -> Completion[list[int]]:
        logs = [self.logs.get(topic, partition) for topic, partition in keys]
        return resolved([-1 if log is None else log.size_bytes for log in logs])

    def delete_records(self, targets: list[tuple[str, int, int]]) -> Completion[list[tuple[ErrorCode, int]]]:
        results: list[tuple[ErrorCode, int]] = []
        moved = False
        for topic, partition, offset in targets:
            log = self.logs.get(topic, partition)
            if log is None:
                results.append((ErrorCode.unknown_topic_or_partition, -1))
                continue
            target = log.high_watermark if offset == -1 else offset
            if not 0 <= target <= log.high_watermark:
                results.append((ErrorCode.offset_out_of_range, -1))
                continue
            before = log.log_start_offset
            try:
                results.append((ErrorCode.none, log.delete_records_before(target)))
            except KafkaError as error:
                results.append((error.code, -1))
                continue
            moved = moved or log.log_start_offset > before
        if moved:
            try:  # the new log start offsets survive a crash before they are answered
                self.logs.write_checkpoints()
            except OSError as error:  # answered as failed: a restart may find the older log start offsets
                logger.warning("DeleteRecords: cannot checkpoint the log start offsets: %s", error)
                return resolved([(ErrorCode.kafka_storage_error, -1) if code == ErrorCode.none else (code, start)
                                 for code, start in results])
        return resolved(results)

    def partition_offsets(self, keys: list[PartitionKey]) -> Completion[list[PartitionOffsets]]:
        results = []
        for topic, partition in keys:
            log = self.logs.get(topic, partition)
            if log is None:
                results.append(PartitionOffsets(ErrorCode.unknown_topic_or_partition))
            else:
                results.append(PartitionOffsets(ErrorCode.none, log.log_start_offset, log.high_watermark,
                                                log.last_stable_offset, log.log_end_offset))
        return resolved(results)

    def producers(self, keys: list[PartitionKey]) -> Completion[list[Producers]]:
        results = []
        for topic, partition in keys:
            log = self.logs.get(topic, partition)
            if log is None:
                results.append(Producers(ErrorCode.unknown_topic_or_partition))
                continue
            results.append(Producers(ErrorCode.none, [
                ActiveProducer(entry.producer_id, entry.producer_epoch, entry.last_sequence, entry.last_timestamp,
                               entry.coordinator_epoch, entry.current_txn_first_offset)
                for entry in iter_entries(log.producer_state)]))
        return resolved(results)

    def write_markers(self, markers: list[Marker], now_ms: int) -> Completion[list[ErrorCode]]:
        codes, targets = self.append_markers(markers, now_ms)
        if not targets:
            return resolved(codes)
        completion: Completion[list[ErrorCode]] = Completion()

        def durable(ok: bool) -> None:
            completion.resolve(codes if ok else [ErrorCode.kafka_storage_error if code == ErrorCode.none else code
                                                 for code in codes])

        AllDurable(self.durability, targets, durable)
        return completion

    def append_markers(self, markers: list[Marker], now_ms: int) -> tuple[list[ErrorCode],
                                                                           list[tuple[PartitionLog, int]]]:
        """Write each marker now: its error code, and (log, offset after it) of those written."""
        codes = []
        targets = []
        for marker in markers:
            log = self.logs.get(marker.topic, marker.partition)
            if log is None:
                codes.append(ErrorCode.unknown_topic_or_partition)
                continue
            try:
                offset = log.append_marker(marker.producer_id, marker.producer_epoch, marker.coordinator_epoch,
                                           marker.commit, now_ms)
            except KafkaError as error:
                codes.append(error.code)
                continue
            codes.append(ErrorCode.none)
            targets.append((log, offset + 1))
            self.on_change(log.topic, log.partition)
        return codes, targets


def _offset_for(log: PartitionLog, timestamp: int, read_committed: bool) -> tuple[int, int]:
    """(offset, timestamp) answering a ListOffsets query on one partition (Kafka's `fetchOffsetByTimestamp`)."""
    fetchable_end = log.last_stable_offset if read_committed else log.high_watermark
    if timestamp == LATEST:
        return fetchable_end, -1
    if timestamp == EARLIEST:
        return log.log_start_offset, -1
    if timestamp == MAX_TIMESTAMP:
        largest = max((segment.max_timestamp for segment in log.segments), default=-1)
        if largest < 0:
            return -1, -1
        timestamp = largest
    found = log.offset_for_timestamp(timestamp)
    if found is None or found[0] >= fetchable_end:
        return -1, -1
    return found
