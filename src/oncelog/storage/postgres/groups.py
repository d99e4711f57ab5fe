"""Consumer groups on PostgreSQL: Kafka's coordinator design, with the database as the log.

Theory of operation: committed offsets and group metadata are records in `__consumer_offsets`, exactly
as on the local backend and in Kafka, but that topic's partitions live in the database like any other.
The group coordinator is the same in-memory state machine (`coordinator.group`): membership, sessions
and rebalances stay on one broker, and the records are its durable copy.

- **Who coordinates.** The groups of partition p of `__consumer_offsets` are coordinated by the live
  broker that wins the rendezvous hash of "__consumer_offsets-p" (FindCoordinator answers it). A group
  request for a partition this broker does not own answers NOT_COORDINATOR; the client asks again.
- **Taking over.** The first request for a partition this broker owns starts loading it
  (COORDINATOR_LOAD_IN_PROGRESS meanwhile, retriable): in one database transaction the broker locks the
  partition and takes its lease (`coordinator_lease.epoch + 1`), then replays the partition's records,
  as a restarted local broker replays its log: offsets, transactional offsets, markers and group
  metadata (so members keep their generation and assignment across a coordinator change).
- **Fencing.** Every record the coordinator writes carries the lease epoch it took and is committed only
  if the lease is still that epoch (checked under the partition lock, `writer._apply_coordinator`). A
  coordinator that lost the lease (another broker took over while it was paused) cannot write: its
  requests answer retriable errors and it unloads the partition. When the live brokers change, a broker
  unloads the partitions it no longer wins.
- **Transactions.** TxnOffsetCommit writes the offsets as a transactional batch of the producer; EndTxn
  (any broker, `transactions.py`) writes the COMMIT/ABORT marker on this partition in the same database
  transaction as the others. The owner tails its partitions (NOTIFY) and applies markers as it reads
  them, as Kafka's coordinator does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import psycopg

from oncelog.awaiting import completed
from oncelog.cluster import Cluster, group_partition_key
from oncelog.coordinator.group.coordinator import OFFSETS_TOPIC, GroupCoordinator
from oncelog.coordinator.runtime import Completion, StoredBatch, gather
from oncelog.errors import ErrorCode
from oncelog.protocol.records import CONTROL_COMMIT, build_batch, iter_batches, iter_records, read_marker
from oncelog.storage.api import PartitionData, Read

from .storage import PostgresStorage

logger = logging.getLogger(__name__)

LOAD_CHUNK_BYTES = 8 << 20
LOAD_CONCURRENCY = 4
"""Partitions loaded at once (each takes a database connection while it loads)."""


class GroupPartitions:
    """Ownership, loading and tailing of `__consumer_offsets` partitions for this broker's coordinator;
    also its `CoordinatorStorage`."""

    def __init__(self, storage: PostgresStorage, url: str, node_id: int) -> None:
        self._storage = storage
        self._url = url
        self.node_id = node_id
        self.groups: GroupCoordinator | None = None
        self.cluster: Cluster | None = None
        self._clock: Callable[[], int] = lambda: 0
        self.leases: dict[int, int] = {}
        """Loaded partitions and the lease epoch this broker holds on each."""
        self._tail: dict[int, int] = {}
        """Per loaded partition, the offset up to which its records were applied."""
        self._loading: dict[int, asyncio.Task[None]] = {}
        self._tailing: dict[int, asyncio.Task[None]] = {}
        self._dirty: set[int] = set()
        self._catching_up: dict[int, list[Completion[None]]] = {}
        """Per partition, waiters for the next tail pass (`caught_up`)."""
        self._closed = False
        self._load_slots = asyncio.Semaphore(LOAD_CONCURRENCY)

    def attach(self, groups: GroupCoordinator, cluster: Cluster, clock: Callable[[], int]) -> None:
        self.groups = groups
        self.cluster = cluster
        self._clock = clock

    async def close(self) -> None:
        self._closed = True
        tasks = [*self._loading.values(), *self._tailing.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- ownership ------------------------------------------------------------------------------------

    def owner(self, partition: int) -> int:
        assert self.cluster is not None
        return self.cluster.coordinator(group_partition_key(partition))

    def gate(self, group_ids: list[str]) -> ErrorCode | None:
        """None if this broker coordinates every one of `group_ids` and has loaded them; else the
        retriable error to answer (and loading starts)."""
        assert self.groups is not None
        for group_id in group_ids:
            partition = self.groups.partition_of(group_id)
            if self.owner(partition) != self.node_id:
                return ErrorCode.not_coordinator
            if partition not in self.leases:
                self._start_loading(partition)
                return ErrorCode.coordinator_load_in_progress
        return None

    def check_ownership(self) -> None:
        """Unload the partitions another live broker wins now and start loading those this broker wins
        (Kafka's onResignation / onElection; run whenever the live set may change)."""
        for partition in list(self.leases):
            if self.owner(partition) != self.node_id:
                logger.info("partition=%s-%d moves to broker %d: unloading its groups", OFFSETS_TOPIC, partition,
                            self.owner(partition))
                self._unload(partition)
        if self._closed:
            return
        info = self._storage.topic(OFFSETS_TOPIC)
        for partition in range(info.partitions if info is not None else 0):
            if partition not in self.leases and self.owner(partition) == self.node_id:
                self._start_loading(partition)

    async def load_owned(self, timeout_s: float) -> None:
        """At start: load every partition this broker wins before it takes requests (at most `timeout_s`;
        what is not loaded by then answers COORDINATOR_LOAD_IN_PROGRESS until it is)."""
        self.check_ownership()
        tasks = list(self._loading.values())
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    def _unload(self, partition: int) -> None:
        assert self.groups is not None
        self._release(partition)
        self.leases.pop(partition, None)
        self._tail.pop(partition, None)
        task = self._tailing.pop(partition, None)
        if task is not None:
            task.cancel()
        self.groups.unload_partition(partition)

    # --- loading --------------------------------------------------------------------------------------

    def _start_loading(self, partition: int) -> None:
        if partition in self._loading:
            return
        task = asyncio.get_running_loop().create_task(self._load(partition), name=f"load-offsets-{partition}")
        self._loading[partition] = task
        task.add_done_callback(lambda _task: self._loading.pop(partition, None))

    async def _take_lease(self, partition: int) -> tuple[int, int]:
        """(lease epoch, next offset): the partition locked, the lease taken, in one transaction."""
        info = self._storage.topic(OFFSETS_TOPIC)
        assert info is not None
        async with await psycopg.AsyncConnection.connect(self._url) as connection, connection.transaction():
            cursor = await connection.execute(
                "SELECT next_offset FROM partition_log WHERE topic_id = %s AND partition = %s FOR UPDATE",
                (info.topic_id, partition))
            row = await cursor.fetchone()
            assert row is not None, f"{OFFSETS_TOPIC}-{partition} has no partition row"
            cursor = await connection.execute(
                "INSERT INTO coordinator_lease (topic, partition, owner, epoch) VALUES (%s, %s, %s, 1)"
                " ON CONFLICT (topic, partition) DO UPDATE SET owner = excluded.owner,"
                " epoch = coordinator_lease.epoch + 1 RETURNING epoch", (OFFSETS_TOPIC, partition, self.node_id))
            epoch = await cursor.fetchone()
            assert epoch is not None
            return int(epoch[0]), int(row[0])

    async def _load(self, partition: int) -> None:
        assert self.groups is not None
        try:
            async with self._load_slots:
                if self.owner(partition) != self.node_id:
                    return
                epoch, end = await self._take_lease(partition)
                records = await self._replay(partition, 0, end, loading=True)
        except (psycopg.Error, OSError) as error:
            logger.warning("partition=%s-%d cannot be loaded: %s", OFFSETS_TOPIC, partition, error)
            return
        if self.owner(partition) != self.node_id:
            return  # the live set changed while we loaded; the new owner takes over
        self.leases[partition] = epoch
        self._tail[partition] = end
        self.groups.finish_loading(partition)
        logger.log(logging.INFO if records else logging.DEBUG, "partition=%s-%d loaded (lease epoch %d): %d records",
                   OFFSETS_TOPIC, partition, epoch, records)
        self.changed(partition)  # whatever was written while we loaded

    async def _replay(self, partition: int, start: int, end: int, *, loading: bool) -> int:
        """Apply the partition's records in [start, end); returns how many."""
        assert self.groups is not None
        groups = self.groups
        offset = start
        applied = 0
        while offset < end:
            results = await completed(self._storage.fetch([Read(OFFSETS_TOPIC, partition, offset, LOAD_CHUNK_BYTES)],
                                                      LOAD_CHUNK_BYTES, False))
            data: PartitionData = results[0]
            if data.error != ErrorCode.none:
                raise OSError(f"reading {OFFSETS_TOPIC}-{partition} at {offset}: {data.error.name}")
            records = data.records or b""
            if not records:
                break
            for position, header in iter_batches(records):
                if header.last_offset < offset:
                    continue
                if header.is_control:
                    marker = read_marker(records, position)
                    if marker is not None:
                        groups.complete_transaction(header.producer_id, marker[0] == CONTROL_COMMIT, partition)
                else:
                    for record in iter_records(records, position):
                        if record.key is None or record.offset < offset:
                            continue
                        if header.is_transactional:
                            groups.replay_transactional(header.producer_id, record.key, record.value, record.offset)
                        else:
                            groups.replay(record.key, record.value, loading=loading, record_offset=record.offset)
                        applied += 1
                offset = header.next_offset
        return applied

    # --- tailing: markers and records written by other brokers -------------------------------------------

    def caught_up(self, changed: set[tuple[str, int]]) -> Completion[None]:
        """Resolved once every changed `__consumer_offsets` partition this broker coordinates has been read
        up to its high watermark as of now: a transaction coordinator on this broker answers EndTxn only
        after its markers reached the local group coordinator, so OffsetFetch right after a commit sees
        the offsets (markers for other brokers' partitions arrive by NOTIFY)."""
        partitions = [partition for topic, partition in changed if topic == OFFSETS_TOPIC and partition in self.leases]
        waiters: list[Completion[None]] = []
        for partition in partitions:
            waiter: Completion[None] = Completion()
            self._catching_up.setdefault(partition, []).append(waiter)
            waiters.append(waiter)
            self._dirty.add(partition)
            self.changed(partition)
        done: Completion[None] = Completion()
        gather(waiters).on_done(lambda _values: done.resolve(None))
        return done

    def _release(self, partition: int) -> None:
        for waiter in self._catching_up.pop(partition, []):
            waiter.resolve(None)

    def changed(self, partition: int) -> None:
        """`__consumer_offsets-partition` grew (NOTIFY or our own write): apply what is new."""
        if partition not in self.leases or self._closed:
            self._release(partition)
            return
        if partition in self._tailing:
            self._dirty.add(partition)
            return
        task = asyncio.get_running_loop().create_task(self._tail_once(partition))
        self._tailing[partition] = task
        task.add_done_callback(lambda _task: self._tail_done(partition))

    def _tail_done(self, partition: int) -> None:
        self._tailing.pop(partition, None)
        if partition in self._dirty:
            self._dirty.discard(partition)
            self.changed(partition)

    async def _tail_once(self, partition: int) -> None:
        waiters = self._catching_up.pop(partition, [])
        try:
            await self._tail_to_end(partition)
        finally:
            for waiter in waiters:
                waiter.resolve(None)

    async def _tail_to_end(self, partition: int) -> None:
        offsets = await completed(self._storage.partition_offsets([(OFFSETS_TOPIC, partition)]))
        end = offsets[0].high_watermark
        start = self._tail.get(partition)
        if start is None or end <= start:
            return
        try:
            await self._replay(partition, start, end, loading=False)
        except OSError as error:
            logger.warning("tailing %s-%d failed: %s", OFFSETS_TOPIC, partition, error)
            self._dirty.add(partition)
            return
        if partition in self._tail:
            self._tail[partition] = max(self._tail[partition], end)

    # --- CoordinatorStorage --------------------------------------------------------------------------------

    def append(self, topic: str, partition: int, records: list[tuple[bytes, bytes | None]], *,
               producer_id: int = -1, producer_epoch: int = -1, transactional: bool = False) -> StoredBatch:
        epoch = self.leases.get(partition)
        if topic != OFFSETS_TOPIC or epoch is None:
            return StoredBatch(None, -1)  # not ours (any more): the write fails
        batch = build_batch(records, timestamp_ms=self._clock(), producer_id=producer_id,
                            producer_epoch=producer_epoch, transactional=transactional)
        written = self._storage.writer.append_coordinator(topic, partition, batch, epoch)
        stored = StoredBatch(written, -1)

        def landed(result: int | ErrorCode) -> None:
            if not isinstance(result, ErrorCode):  # (an ErrorCode is an int too)
                stored.base_offset = result  # before any when_durable callback (registered later) runs
            elif result == ErrorCode.not_coordinator and self.leases.get(partition) == epoch:
                logger.info("partition=%s-%d lease %d was taken by another broker: unloading", topic, partition,
                            epoch)
                self._unload(partition)

        written.on_done(landed)
        return stored

    def when_durable(self, token: Any, callback: Callable[[bool], None]) -> None:
        if token is None:
            callback(False)
            return
        token.on_done(lambda result: callback(not isinstance(result, ErrorCode)))
