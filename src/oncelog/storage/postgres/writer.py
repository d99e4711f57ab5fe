"""The PostgreSQL backend's writes: one transaction per group of appends and markers (group commit).

Theory of operation: `append` and `write_markers` queue their work and return a Completion; one task
takes everything queued and runs it as ONE transaction:

1. lock the touched `partition_log` rows in sorted order (`ORDER BY … FOR UPDATE`: no deadlocks between
   brokers, and every writer of a partition is serialised by its row lock);
2. only then read the producers' state and run Kafka's producer-state check on it (the same
   `ProducerStateManager` rules as the local log), so no concurrent writer can slip between the check
   and the offset assignment (Tansu checks before it locks: a race);
3. assign offsets from `next_offset` of the locked row (never a sequence: commit order is offset order,
   no holes), store the batch bytes with their offsets rewritten, write producer state, aborted
   transactions and the new next offsets;
4. NOTIFY the partitions, commit, and only then resolve the completions.

While one transaction runs, new work queues for the next: N concurrent producers cost about one commit
per round trip, not N. A transaction whose outcome is unknown (the connection broke, the commit failed)
is answered with a retriable error (REQUEST_TIMED_OUT, as Kafka answers an append it cannot confirm),
never a definite one: an idempotent producer's retry is then found in the producer state and answered
with its original offsets.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from oncelog.coordinator.runtime import Completion
from oncelog.errors import ErrorCode, KafkaError
from oncelog.log.producer_state import BatchMetadata, ProducerStateEntry, ProducerStateManager
from oncelog.protocol.records import MAGIC_POSITION, BatchHeader, assigned_prefix, build_marker, parse_header
from oncelog.storage.api import (
    PRODUCE_VERIFICATION_ERRORS,
    Append,
    Appended,
    AppendError,
    AppendResult,
    Marker,
    PartitionKey,
    TopicInfo,
    Verifier,
)

logger = logging.getLogger(__name__)

DATA_CHANNEL = "oncelog_data"
"""NOTIFY channel of partitions that grew; payload "partition:topic"."""

UNCONFIRMED = ErrorCode.request_timed_out
"""What an append whose commit could not be confirmed answers: retriable, never a definite failure."""


@dataclass(slots=True)
class _Queued:
    transactional_id: str | None
    appends: list[Append]
    verify: Verifier
    now_ms: int
    completion: Completion[list[AppendResult]]


@dataclass(slots=True)
class _QueuedMarkers:
    markers: list[Marker]
    now_ms: int
    completion: Completion[list[ErrorCode]]


@dataclass(slots=True)
class _QueuedCoordinator:
    """A group coordinator's batch for a `__consumer_offsets` partition, written only while its lease
    epoch is still the partition's (a coordinator that lost the lease cannot write)."""

    topic: str
    partition: int
    batch: bytes
    lease_epoch: int
    completion: Completion[int | ErrorCode]
    """Resolved with the batch's base offset, or the error."""


def entry_from_row(row: Sequence[Any]) -> ProducerStateEntry:
    producer_id, epoch, coordinator_epoch, last_timestamp, txn_first_offset, flat = row
    entry = ProducerStateEntry(int(producer_id), int(epoch), coordinator_epoch=int(coordinator_epoch),
                               last_timestamp=int(last_timestamp), current_txn_first_offset=int(txn_first_offset))
    for index in range(0, len(flat), 4):
        entry.batches.append(BatchMetadata(*(int(value) for value in flat[index:index + 4])))
    return entry


def _entry_row(entry: ProducerStateEntry) -> tuple[int, int, int, int, list[int]]:
    flat = [value for batch in entry.batches
            for value in (batch.last_sequence, batch.last_offset, batch.offset_delta, batch.timestamp)]
    return (entry.producer_epoch, entry.coordinator_epoch, entry.last_timestamp, entry.current_txn_first_offset,
            flat)


class _Partition:
    """One locked partition inside a write transaction: its offsets and the producers loaded so far."""

    __slots__ = ("changed", "log_start_offset", "next_offset", "state", "topic_id")

    def __init__(self, topic_id: uuid.UUID, next_offset: int, log_start_offset: int) -> None:
        self.topic_id = topic_id
        self.next_offset = next_offset
        self.log_start_offset = log_start_offset
        self.state = ProducerStateManager()
        self.changed: set[int] = set()


class GroupCommitWriter:
    """Queues appends and markers and commits them in groups on one connection."""

    def __init__(self, url: str, topic: Callable[[str], TopicInfo | None],
                 notify: Callable[[str, int], None]) -> None:
        self._url = url
        self._topic = topic
        self._notify = notify
        self._queue: list[_Queued | _QueuedMarkers | _QueuedCoordinator] = []
        self._wake = asyncio.Event()
        self._writer: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.commits = 0
        """Write transactions committed (group commits)."""

    async def open(self) -> None:
        self._writer = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
        self._task = asyncio.create_task(self._write_loop(), name="pg-writer")

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for queued in self._queue:
            self._fail(queued, UNCONFIRMED)
        self._queue.clear()
        if self._writer is not None:
            await self._writer.close()

    def append(self, transactional_id: str | None, appends: list[Append], acks: int, now_ms: int,
               verify: Verifier) -> Completion[list[AppendResult]]:
        completion: Completion[list[AppendResult]] = Completion()
        self._queue.append(_Queued(transactional_id, appends, verify, now_ms, completion))
        self._wake.set()
        return completion

    def write_markers(self, markers: list[Marker], now_ms: int) -> Completion[list[ErrorCode]]:
        completion: Completion[list[ErrorCode]] = Completion()
        self._queue.append(_QueuedMarkers(markers, now_ms, completion))
        self._wake.set()
        return completion

    def append_coordinator(self, topic: str, partition: int, batch: bytes,
                           lease_epoch: int) -> Completion[int | ErrorCode]:
        """Append a coordinator's batch (no sequence checks, Kafka's COORDINATOR origin; producer state
        and open transactions are tracked) if `lease_epoch` still holds the partition's lease."""
        completion: Completion[int | ErrorCode] = Completion()
        self._queue.append(_QueuedCoordinator(topic, partition, batch, lease_epoch, completion))
        self._wake.set()
        return completion

    async def _write_loop(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            if not self._queue:
                continue
            group, self._queue = self._queue, []
            try:
                await self._commit_group(group)
            except Exception as error:
                if isinstance(error, psycopg.Error):
                    logger.warning("a write transaction failed: %s; answering it retriable", error)
                else:
                    logger.exception("a write transaction failed; answering it retriable")
                for queued in group:
                    self._fail(queued, UNCONFIRMED)
                await self._reconnect_writer()

    async def _reconnect_writer(self) -> None:
        writer = self._writer
        if writer is not None and not writer.closed and not writer.broken:
            return
        if writer is not None:
            await writer.close()
        try:
            self._writer = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
        except psycopg.Error as error:
            logger.warning("cannot reconnect to PostgreSQL: %s", error)
            await asyncio.sleep(0.5)

    @staticmethod
    def _fail(queued: _Queued | _QueuedMarkers | _QueuedCoordinator, code: ErrorCode) -> None:
        if isinstance(queued, _Queued):
            queued.completion.resolve([AppendError(code, "the write could not be confirmed")
                                       for _ in queued.appends])
        elif isinstance(queued, _QueuedMarkers):
            queued.completion.resolve([code for _ in queued.markers])
        else:
            queued.completion.resolve(code)

    async def _commit_group(self, group: list[_Queued | _QueuedMarkers | _QueuedCoordinator]) -> None:
        writer = self._writer
        assert writer is not None
        keys: set[tuple[uuid.UUID, int]] = set()
        for queued in group:
            items: Sequence[Any] = (queued.appends if isinstance(queued, _Queued) else
                                    queued.markers if isinstance(queued, _QueuedMarkers) else [queued])
            for item in items:
                info = self._topic(item.topic)
                if info is not None:
                    keys.add((info.topic_id, item.partition))
        results: list[Any] = []
        async with writer.transaction():
            partitions = await self._lock(writer, sorted(keys))
            batches: list[tuple[Any, ...]] = []
            aborted: list[tuple[Any, ...]] = []
            changed: set[PartitionKey] = set()
            for queued in group:
                if isinstance(queued, _Queued):
                    results.append(await self._apply_appends(writer, queued, partitions, batches, changed))
                elif isinstance(queued, _QueuedCoordinator):
                    results.append(await self._apply_coordinator(writer, queued, partitions, batches, changed))
                else:
                    results.append(await self._apply_markers(writer, queued, partitions, batches, aborted,
                                                             changed))
            await self._write(writer, partitions, batches, aborted, changed)
        self.commits += 1
        for queued, result in zip(group, results, strict=True):
            queued.completion.resolve(result)
        for topic, partition in changed:
            self._notify(topic, partition)

    async def markers_in(self, connection: psycopg.AsyncConnection[Any], markers: list[Marker],
                         now_ms: int) -> tuple[list[ErrorCode], set[PartitionKey]]:
        """Write `markers` inside the caller's open transaction on `connection` (EndTxn, fencing): the
        partitions are locked in sorted order after whatever the caller locked. Returns each marker's
        code and the partitions that changed (`notify` them once the caller committed)."""
        keys = sorted({(info.topic_id, marker.partition) for marker in markers
                       if (info := self._topic(marker.topic)) is not None})
        partitions = await self._lock(connection, keys)
        batches: list[tuple[Any, ...]] = []
        aborted: list[tuple[Any, ...]] = []
        changed: set[PartitionKey] = set()
        codes = await self._apply_markers(connection, _QueuedMarkers(markers, now_ms, Completion()), partitions,
                                          batches, aborted, changed)
        await self._write(connection, partitions, batches, aborted, changed)
        return codes, changed

    def notify(self, changed: set[PartitionKey]) -> None:
        for topic, partition in changed:
            self._notify(topic, partition)

    async def _verify(self, connection: psycopg.AsyncConnection[Any], transactional_id: str | None,
                      header: Any, append: Append) -> ErrorCode | None:
        """KIP-890 part 1 against the transaction tables, in the append's transaction: the producer's
        first transactional batch on a partition must belong to its Ongoing transaction with this
        partition added. No lock on the `txn` row is needed: an EndTxn that commits first is seen as
        Complete*, one that commits later writes its marker after this batch (it waits for our lock)."""
        cursor = await connection.execute(
            "SELECT t.producer_id, t.producer_epoch, t.state, EXISTS (SELECT 1 FROM txn_partition p"
            " WHERE p.transactional_id = t.transactional_id AND p.topic = %s AND p.partition = %s)"
            " FROM txn t WHERE t.transactional_id = %s", (append.topic, append.partition, transactional_id or ""))
        row = await cursor.fetchone()
        if row is None or row[0] != header.producer_id:
            return ErrorCode.invalid_producer_id_mapping
        if row[1] != header.producer_epoch:
            return PRODUCE_VERIFICATION_ERRORS[ErrorCode.producer_fenced]
        if row[2] != "Ongoing" or not row[3]:
            return PRODUCE_VERIFICATION_ERRORS[ErrorCode.transaction_abortable]
        return None

    async def _lock(self, connection: psycopg.AsyncConnection[Any],
                    keys: list[tuple[uuid.UUID, int]]) -> dict[tuple[uuid.UUID, int], _Partition]:
        if not keys:
            return {}
        cursor = await connection.execute(
            "SELECT topic_id, partition, next_offset, log_start_offset FROM partition_log"
            " WHERE (topic_id, partition) IN (SELECT * FROM unnest(%s::uuid[], %s::int[]))"
            " ORDER BY topic_id, partition FOR UPDATE",
            ([key[0] for key in keys], [key[1] for key in keys]))
        return {(topic_id, partition): _Partition(topic_id, next_offset, log_start)
                for topic_id, partition, next_offset, log_start in await cursor.fetchall()}

    def _locked(self, partitions: dict[tuple[uuid.UUID, int], _Partition], topic: str,
                index: int) -> tuple[tuple[uuid.UUID, int], _Partition] | None:
        """The locked partition `topic`-`index` of this group and its key; None if the topic is unknown."""
        info = self._topic(topic)
        if info is None:
            return None
        key = (info.topic_id, index)
        partition = partitions.get(key)
        return None if partition is None else (key, partition)

    async def _load_producers(self, connection: psycopg.AsyncConnection[Any], partition_key: tuple[uuid.UUID, int],
                              partition: _Partition, producer_ids: set[int]) -> None:
        """Bring the producers' state into the locked partition (read after the lock, never before)."""
        missing = [pid for pid in producer_ids if pid not in partition.state.entries]
        if not missing:
            return
        cursor = await connection.execute(
            "SELECT producer_id, producer_epoch, coordinator_epoch, last_timestamp, txn_first_offset, batches"
            " FROM producer_state WHERE topic_id = %s AND partition = %s AND producer_id = ANY(%s)",
            (partition_key[0], partition_key[1], missing))
        for row in await cursor.fetchall():
            entry = entry_from_row(row)
            partition.state.entries[entry.producer_id] = entry

    async def _apply_appends(self, connection: psycopg.AsyncConnection[Any], queued: _Queued,
                             partitions: dict[tuple[uuid.UUID, int], _Partition], batches: list[tuple[Any, ...]],
                             changed: set[PartitionKey]) -> list[AppendResult]:
        results: list[AppendResult] = []
        for append in queued.appends:
            found = self._locked(partitions, append.topic, append.partition)
            if found is None:
                results.append(AppendError(ErrorCode.unknown_topic_or_partition))
                continue
            key, partition = found
            header = append.header
            state = partition.state
            try:
                if header.producer_id >= 0:
                    await self._load_producers(connection, key, partition, {header.producer_id})
                    duplicate = state.check(header)
                    if duplicate is not None:
                        results.append(Appended(duplicate.base_offset, partition.log_start_offset, True,
                                                duplicate.timestamp))
                        continue
                    if header.is_transactional and not state.has_open_transaction(header.producer_id):
                        problem = await self._verify(connection, queued.transactional_id, header, append)
                        if problem is not None:
                            raise KafkaError(problem, f"producer {header.producer_id} is not in a transaction "
                                                      f"with {append.topic}-{append.partition}")
            except KafkaError as error:
                results.append(AppendError(error.code, error.message, partition.log_start_offset))
                continue
            base_offset = _place(partition, append.partition, append.records, header, batches)
            if header.producer_id >= 0:
                state.apply(header, base_offset, header.max_timestamp)
                partition.changed.add(header.producer_id)
            changed.add((append.topic, append.partition))
            results.append(Appended(base_offset, partition.log_start_offset))
        return results

    async def _apply_coordinator(self, connection: psycopg.AsyncConnection[Any], queued: _QueuedCoordinator,
                                 partitions: dict[tuple[uuid.UUID, int], _Partition],
                                 batches: list[tuple[Any, ...]], changed: set[PartitionKey]) -> int | ErrorCode:
        found = self._locked(partitions, queued.topic, queued.partition)
        if found is None:
            return ErrorCode.unknown_topic_or_partition
        key, partition = found
        cursor = await connection.execute("SELECT epoch FROM coordinator_lease WHERE topic = %s AND partition = %s",
                                          (queued.topic, queued.partition))
        row = await cursor.fetchone()
        if row is None or row[0] != queued.lease_epoch:
            return ErrorCode.not_coordinator
        header = parse_header(queued.batch)
        base_offset = _place(partition, queued.partition, queued.batch, header, batches)
        if header.producer_id >= 0:
            await self._load_producers(connection, key, partition, {header.producer_id})
            partition.state.apply(header, base_offset, header.max_timestamp)
            partition.changed.add(header.producer_id)
        changed.add((queued.topic, queued.partition))
        return base_offset

    async def _apply_markers(self, connection: psycopg.AsyncConnection[Any], queued: _QueuedMarkers,
                             partitions: dict[tuple[uuid.UUID, int], _Partition], batches: list[tuple[Any, ...]],
                             aborted: list[tuple[Any, ...]], changed: set[PartitionKey]) -> list[ErrorCode]:
        codes = []
        for marker in queued.markers:
            found = self._locked(partitions, marker.topic, marker.partition)
            if found is None:
                codes.append(ErrorCode.unknown_topic_or_partition)
                continue
            key, partition = found
            state = partition.state
            await self._load_producers(connection, key, partition, {marker.producer_id})
            try:
                state.check_marker(marker.producer_id, marker.producer_epoch, marker.coordinator_epoch)
            except KafkaError as error:
                codes.append(error.code)
                continue
            batch = build_marker(marker.producer_id, marker.producer_epoch, marker.coordinator_epoch, marker.commit,
                                 queued.now_ms)
            offset = _place(partition, marker.partition, batch, parse_header(batch), batches)
            first_offset = state.open_transaction_first_offset(marker.producer_id)
            if not marker.commit and first_offset is not None:
                aborted.append((partition.topic_id, marker.partition, marker.producer_id, first_offset, offset))
            state.apply_marker(marker.producer_id, marker.producer_epoch, marker.coordinator_epoch, offset,
                               not marker.commit, queued.now_ms)
            partition.changed.add(marker.producer_id)
            changed.add((marker.topic, marker.partition))
            codes.append(ErrorCode.none)
        return codes

    async def _write(self, connection: psycopg.AsyncConnection[Any],
                     partitions: dict[tuple[uuid.UUID, int], _Partition], batches: list[tuple[Any, ...]],
                     aborted: list[tuple[Any, ...]], changed: set[PartitionKey]) -> None:
        async with connection.cursor() as cursor:
            if batches:
                await cursor.executemany(
                    "INSERT INTO batch (topic_id, partition, base_offset, last_offset, max_timestamp, producer_id,"
                    " is_control, size, payload) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", batches)
            if aborted:
                await cursor.executemany(
                    "INSERT INTO aborted_txn (topic_id, partition, producer_id, first_offset, last_offset)"
                    " VALUES (%s, %s, %s, %s, %s)", aborted)
            offsets = [(p.next_offset, topic_id, index) for (topic_id, index), p in partitions.items()]
            if batches and offsets:
                await cursor.executemany(
                    "UPDATE partition_log SET next_offset = %s WHERE topic_id = %s AND partition = %s", offsets)
            states = [(topic_id, index, producer_id, *_entry_row(p.state.entries[producer_id]))
                      for (topic_id, index), p in partitions.items() for producer_id in p.changed]
            if states:
                await cursor.executemany(
                    "INSERT INTO producer_state (topic_id, partition, producer_id, producer_epoch, coordinator_epoch,"
                    " last_timestamp, txn_first_offset, batches) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (topic_id, partition, producer_id) DO UPDATE SET"
                    " producer_epoch = excluded.producer_epoch, coordinator_epoch = excluded.coordinator_epoch,"
                    " last_timestamp = excluded.last_timestamp, txn_first_offset = excluded.txn_first_offset,"
                    " batches = excluded.batches", states)
            for topic, partition in sorted(changed):
                await cursor.execute("SELECT pg_notify(%s, %s)", (DATA_CHANNEL, f"{partition}:{topic}"))


def _place(partition: _Partition, index: int, records: bytes, header: BatchHeader,
           batches: list[tuple[Any, ...]]) -> int:
    """Give a batch (client, coordinator or marker) the locked partition's next offsets: its row, with the
    offsets rewritten in its bytes, joins `batches`; returns its base offset."""
    base_offset = partition.next_offset
    payload = assigned_prefix(base_offset, header.batch_length, 0) + records[MAGIC_POSITION:]
    last_offset = base_offset + header.last_offset_delta
    batches.append((partition.topic_id, index, base_offset, last_offset, header.max_timestamp, header.producer_id,
                    header.is_control, len(payload), payload))
    partition.next_offset = last_offset + 1
    return base_offset
