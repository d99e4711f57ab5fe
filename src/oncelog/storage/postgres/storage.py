"""The PostgreSQL backend: partitions as rows in one database that many brokers share.

Theory of operation: PostgreSQL is the single source of truth; this process keeps only a cache of the
topic list (refreshed on NOTIFY and every few seconds) and connections. Every verb is statements on an
`asyncio` psycopg connection, so the broker's event loop is never blocked. Writes go through the
`GroupCommitWriter` (one transaction per group, locks first, producer-state check after the lock; see
`writer`). Reads take the high watermark, log start and last stable offset from the rows and return
the stored batches below the bound; read_committed reads stop at the LSO (the first offset of the
oldest open transaction on the partition) and carry the aborted transactions from `aborted_txn`,
exactly as the local `.txnindex` gives them (Tansu answers an empty list: aborted data then shows).
A NOTIFY from any broker's commit wakes this broker's long-poll fetches.

Why one module of ~600 lines: it is the `Storage` protocol's one PostgreSQL implementation, verb by verb
(topics, appends, reads, offsets, producers, records, sizes); the SQL that is a concept of its own
already lives beside it (`writer`, `retention`, `transactions`, `groups`, `security`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors

from oncelog.config import BrokerConfig
from oncelog.coordinator.runtime import Completion
from oncelog.errors import ErrorCode, KafkaError
from oncelog.log.manager import collision_key
from oncelog.protocol.records import first_record_at, iter_batches, parse_header
from oncelog.storage.api import (
    ActiveProducer,
    Append,
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
from oncelog.topic_config import TopicConfig

from .retention import delete_records, retain
from .schema import migrate
from .writer import DATA_CHANNEL, GroupCommitWriter, entry_from_row

logger = logging.getLogger(__name__)

T = TypeVar("T")

TOPICS_CHANNEL = "oncelog_topics"
READ_CONNECTIONS = 4
TOPIC_REFRESH_S = 5.0
FETCH_ROWS_MAX = 1000
LATEST = -1
EARLIEST = -2
MAX_TIMESTAMP = -3


class PostgresStorage:
    def __init__(self, url: str) -> None:
        self.url = url
        self.on_change: Callable[[str, int], None] = lambda topic, partition: None
        self._topics: dict[str, TopicInfo] = {}
        self._topics_version = 0
        """Bumped by this broker's own creates and deletes (`refresh_topics` retries across one)."""
        self._by_id: dict[uuid.UUID, TopicInfo] = {}
        self._writer = GroupCommitWriter(url, self._topics_get, lambda topic, partition: self.on_change(topic,
                                                                                                     partition))
        self._readers: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self.cluster_id = ""

    def _topics_get(self, name: str) -> TopicInfo | None:
        return self._topics.get(name)

    @property
    def writer(self) -> GroupCommitWriter:
        return self._writer

    @property
    def commits(self) -> int:
        """Write transactions committed by this broker (group commits)."""
        return self._writer.commits

    # --- life cycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Migrate the schema, connect, load the topics and start the writer and the listener."""
        await asyncio.get_running_loop().run_in_executor(None, self._migrate)
        for _ in range(READ_CONNECTIONS):
            self._readers.put_nowait(await psycopg.AsyncConnection.connect(self.url, autocommit=True))
        await self.refresh_topics()
        self.cluster_id = await self._reading(_cluster_id)
        await self._writer.open()
        self._tasks = [asyncio.create_task(self._listen_loop(), name="pg-listener")]

    def _migrate(self) -> None:
        with psycopg.connect(self.url) as connection:
            start, end = migrate(connection)
        if start != end:
            logger.info("database schema migrated from version %d to %d", start, end)

    async def aclose(self) -> None:
        self._closed = True
        await self._writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while not self._readers.empty():
            await self._readers.get_nowait().close()

    def close(self) -> None:
        """The sync half of closing (the server awaits `aclose` first)."""

    # --- topics -----------------------------------------------------------------------------------

    async def refresh_topics(self) -> None:
        async def work(connection: psycopg.AsyncConnection[Any]) -> list[Any]:
            return await (await connection.execute("SELECT name, topic_id, partitions, configs FROM topic")).fetchall()

        while True:  # a topic this broker created or deleted meanwhile must not be undone by a stale read
            version = self._topics_version
            rows = await self._reading(work)
            if version == self._topics_version:
                break
        topics = {name: TopicInfo(name, topic_id, partitions, TopicConfig(dict(configs)))
                  for name, topic_id, partitions, configs in rows}
        self._topics = topics
        self._by_id = {info.topic_id: info for info in topics.values()}

    def topic(self, name: str) -> TopicInfo | None:
        return self._topics.get(name)

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicInfo | None:
        return self._by_id.get(topic_id)

    def topics(self) -> list[TopicInfo]:
        return list(self._topics.values())

    def partition_count(self) -> int:
        return sum(info.partitions for info in self._topics.values())

    def colliding_topic(self, name: str) -> str | None:
        key = collision_key(name)
        for other in self._topics:
            if other != name and collision_key(other) == key:
                return other
        return None

    def offline(self, topic: str, partition: int) -> bool:
        return False

    def create_topic(self, name: str, partitions: int, config: TopicConfig,
                     now_ms: int) -> Completion[TopicInfo | KafkaError]:
        return self._run(self._create_topic(name, partitions, config, now_ms))

    async def _create_topic(self, name: str, partitions: int, config: TopicConfig,
                            now_ms: int) -> TopicInfo | KafkaError:
        topic_id = uuid.uuid4()
        overrides = dict(config.overrides)
        try:
            async with self._reader() as connection, connection.transaction():
                await connection.execute(
                    "INSERT INTO topic (name, topic_id, partitions, configs, collision_key, created_ms)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    (name, topic_id, partitions, json.dumps(overrides), collision_key(name), now_ms))
                async with connection.cursor() as cursor:
                    await cursor.executemany("INSERT INTO partition_log (topic_id, partition) VALUES (%s, %s)",
                                             [(topic_id, index) for index in range(partitions)])
                await connection.execute("SELECT pg_notify(%s, %s)", (TOPICS_CHANNEL, name))
        except pg_errors.UniqueViolation:
            await self.refresh_topics()
            return KafkaError(ErrorCode.topic_already_exists,
                              f"topic '{name}' (or one colliding with it) already exists")
        except psycopg.Error as error:
            return KafkaError(ErrorCode.kafka_storage_error, f"cannot create topic {name}: {error}")
        info = TopicInfo(name, topic_id, partitions, TopicConfig(overrides))
        self._topics[name] = info
        self._by_id[topic_id] = info
        self._topics_version += 1
        return info

    def alter_topic_config(self, name: str,
                           change: Callable[[Mapping[str, str]], TopicConfig]) -> Completion[TopicInfo | KafkaError]:
        return self._run(self._alter_topic_config(name, change))

    async def _alter_topic_config(self, name: str,
                                  change: Callable[[Mapping[str, str]], TopicConfig]) -> TopicInfo | KafkaError:
        info = self._topics.get(name)
        if info is None:
            return KafkaError(ErrorCode.unknown_topic_or_partition, f"topic '{name}' does not exist")
        try:
            async with self._reader() as connection, connection.transaction():
                cursor = await connection.execute(
                    "SELECT configs, partitions FROM topic WHERE topic_id = %s FOR UPDATE", (info.topic_id,))
                row = await cursor.fetchone()
                if row is None:
                    return KafkaError(ErrorCode.unknown_topic_or_partition, f"topic '{name}' does not exist")
                current = row[0] if isinstance(row[0], dict) else json.loads(row[0])
                config = change({str(k): str(v) for k, v in current.items()})  # may raise KafkaError
                await connection.execute("UPDATE topic SET configs = %s WHERE topic_id = %s",
                                         (json.dumps(dict(config.overrides)), info.topic_id))
                await connection.execute("SELECT pg_notify(%s, %s)", (TOPICS_CHANNEL, name))
        except KafkaError as error:
            return error
        except psycopg.Error as error:
            return KafkaError(ErrorCode.kafka_storage_error, f"cannot change the configs of {name}: {error}")
        changed = TopicInfo(name, info.topic_id, int(row[1]), config)
        self._topics[name] = changed
        self._by_id[info.topic_id] = changed
        self._topics_version += 1
        return changed

    def create_partitions(self, name: str, total: int, now_ms: int) -> Completion[TopicInfo | KafkaError]:
        return self._run(self._create_partitions(name, total))

    async def _create_partitions(self, name: str, total: int) -> TopicInfo | KafkaError:
        info = self._topics.get(name)
        if info is None:
            return KafkaError(ErrorCode.unknown_topic_or_partition, f"topic '{name}' does not exist")
        try:
            async with self._reader() as connection, connection.transaction():
                cursor = await connection.execute("SELECT partitions FROM topic WHERE topic_id = %s FOR UPDATE",
                                                  (info.topic_id,))
                row = await cursor.fetchone()
                if row is None:
                    return KafkaError(ErrorCode.unknown_topic_or_partition, f"topic '{name}' does not exist")
                current = int(row[0])
                if current >= total:  # another broker grew it meanwhile
                    await self.refresh_topics()
                    return KafkaError(ErrorCode.invalid_partitions, f"topic '{name}' already has {current} "
                                                                    f"partitions")
                await connection.execute("UPDATE topic SET partitions = %s WHERE topic_id = %s",
                                         (total, info.topic_id))
                async with connection.cursor() as inserting:
                    await inserting.executemany("INSERT INTO partition_log (topic_id, partition) VALUES (%s, %s)",
                                                [(info.topic_id, index) for index in range(current, total)])
                await connection.execute("SELECT pg_notify(%s, %s)", (TOPICS_CHANNEL, name))
        except psycopg.Error as error:
            return KafkaError(ErrorCode.kafka_storage_error, f"cannot create partitions of {name}: {error}")
        grown = TopicInfo(name, info.topic_id, total, info.config)
        self._topics[name] = grown
        self._by_id[info.topic_id] = grown
        self._topics_version += 1
        return grown

    def delete_topic(self, name: str) -> Completion[KafkaError | None]:
        return self._run(self._delete_topic(name))

    async def _delete_topic(self, name: str) -> KafkaError | None:
        info = self._topics.get(name)
        if info is None:
            return KafkaError(ErrorCode.unknown_topic_or_partition, f"topic '{name}' does not exist")
        try:
            async with self._reader() as connection, connection.transaction():
                for table in ("topic", "partition_log", "batch", "producer_state", "aborted_txn"):
                    await connection.execute(f"DELETE FROM {table} WHERE topic_id = %s",
                                             (info.topic_id,))
                await connection.execute("SELECT pg_notify(%s, %s)", (TOPICS_CHANNEL, name))
        except psycopg.Error as error:
            return KafkaError(ErrorCode.kafka_storage_error, f"cannot delete topic {name}: {error}")
        self._topics.pop(name, None)
        self._by_id.pop(info.topic_id, None)
        self._topics_version += 1
        for index in range(info.partitions):
            self.on_change(name, index)
        return None

    def apply_retention(self, now_ms: int, defaults: BrokerConfig) -> Completion[int]:
        """Retention on every partition of the topics whose cleanup.policy includes `delete`
        (`retention.py`); resolves with the number of partitions whose log start moved."""
        return self._run(self._apply_retention(now_ms, defaults))

    async def _apply_retention(self, now_ms: int, defaults: BrokerConfig) -> int:
        moved = 0
        for info in list(self._topics.values()):
            if "delete" not in info.config.value("cleanup.policy", defaults).split(","):
                continue
            retention_ms = info.config.int_value("retention.ms", defaults)
            retention_bytes = info.config.int_value("retention.bytes", defaults)
            if retention_ms < 0 and retention_bytes < 0:
                continue
            for partition in range(info.partitions):
                try:
                    async with self._reader() as connection:
                        start = await retain(connection, info.topic_id, partition, now_ms, retention_ms,
                                             retention_bytes)
                except psycopg.Error as error:
                    logger.warning("partition=%s-%d retention failed: %s", info.name, partition, error)
                    continue
                if start is not None:
                    moved += 1
                    logger.info("partition=%s-%d retention: log_start_offset=%d", info.name, partition, start)
        return moved

    def partition_sizes(self, keys: list[PartitionKey]) -> Completion[list[int]]:
        return self._run(self._partition_sizes(keys))

    async def _partition_sizes(self, keys: list[PartitionKey]) -> list[int]:
        """One grouped query per topic named, however many times its partitions are named."""
        by_topic: dict[str, dict[int, int]] = {}
        async with self._reader() as connection:
            for topic in dict.fromkeys(topic for topic, _partition in keys):
                info = self._topics.get(topic)
                if info is None:
                    continue
                cursor = await connection.execute(
                    "SELECT partition, sum(size) FROM batch WHERE topic_id = %s GROUP BY partition", (info.topic_id,))
                sizes = dict.fromkeys(range(info.partitions), 0)
                sizes.update({int(partition): int(size) for partition, size in await cursor.fetchall()})
                by_topic[topic] = sizes
        return [by_topic.get(topic, {}).get(partition, -1) for topic, partition in keys]

    def delete_records(self, targets: list[tuple[str, int, int]]) -> Completion[list[tuple[ErrorCode, int]]]:
        return self._run(self._delete_records(targets))

    async def _delete_records(self, targets: list[tuple[str, int, int]]) -> list[tuple[ErrorCode, int]]:
        results = []
        for topic, partition, offset in targets:
            info = self._topics.get(topic)
            if info is None or not 0 <= partition < info.partitions:
                results.append((ErrorCode.unknown_topic_or_partition, -1))
                continue
            try:
                async with self._reader() as connection:
                    results.append(await delete_records(connection, info.topic_id, partition, offset))
            except psycopg.Error as error:
                logger.warning("partition=%s-%d DeleteRecords failed: %s", topic, partition, error)
                results.append((ErrorCode.kafka_storage_error, -1))
        return results

    # --- appends: one transaction per group ------------------------------------------------------

    def append(self, transactional_id: str | None, appends: list[Append], acks: int, now_ms: int,
               verify: Verifier) -> Completion[list[AppendResult]]:
        return self._writer.append(transactional_id, appends, acks, now_ms, verify)

    def write_markers(self, markers: list[Marker], now_ms: int) -> Completion[list[ErrorCode]]:
        return self._writer.write_markers(markers, now_ms)

    # --- reads ------------------------------------------------------------------------------------

    def _reader(self) -> _Borrowed:
        return _Borrowed(self._readers, self.url)

    def _run(self, work: Any) -> Completion[Any]:
        completion: Completion[Any] = Completion()
        task = asyncio.get_running_loop().create_task(work)

        def done(finished: asyncio.Task[Any]) -> None:
            if finished.cancelled():
                return
            completion.resolve(finished.result() if finished.exception() is None else finished.exception())

        task.add_done_callback(done)
        return completion

    def fetch(self, reads: list[Read], max_bytes: int, read_committed: bool) -> Completion[list[PartitionData]]:
        return self._run(self._fetch(reads, max_bytes, read_committed))

    async def _reading(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        """Run a read on a pooled connection. One that turns out broken (the database restarted, the
        network dropped) is replaced and the read tried once more; psycopg.Error if that fails too."""
        try:
            async with self._reader() as connection:
                return await work(connection)
        except psycopg.OperationalError:
            async with self._reader() as connection:
                return await work(connection)

    async def _fetch(self, reads: list[Read], max_bytes: int, read_committed: bool) -> list[PartitionData]:
        async def work(connection: psycopg.AsyncConnection[Any]) -> list[PartitionData]:
            results = []
            remaining = max_bytes
            total = 0
            for read in reads:
                limit = max(0, min(read.max_bytes, remaining))
                result = await self._read(connection, read, limit, read_committed, total == 0)
                size = len(result.records or b"")
                total += size
                remaining -= size
                results.append(result)
            return results

        try:
            return await self._reading(work)
        except psycopg.Error as error:
            logger.warning("a fetch failed: %s", error)
            return [PartitionData(ErrorCode.kafka_storage_error) for _ in reads]

    async def _offsets(self, connection: psycopg.AsyncConnection[Any], topic_id: uuid.UUID,
                       partition: int) -> tuple[int, int, int] | None:
        """(high watermark, log start offset, last stable offset) of a partition, None if it is unknown."""
        cursor = await connection.execute(
            "SELECT p.next_offset, p.log_start_offset, (SELECT min(txn_first_offset) FROM producer_state s"
            "  WHERE s.topic_id = p.topic_id AND s.partition = p.partition AND s.txn_first_offset >= 0)"
            " FROM partition_log p WHERE p.topic_id = %s AND p.partition = %s", (topic_id, partition))
        row = await cursor.fetchone()
        if row is None:
            return None
        high_watermark, log_start, unstable = row
        stable = high_watermark if unstable is None or unstable >= high_watermark else max(unstable, log_start)
        return int(high_watermark), int(log_start), int(stable)

    async def _read(self, connection: psycopg.AsyncConnection[Any], read: Read, max_bytes: int,
                    read_committed: bool, first: bool) -> PartitionData:
        info = self._topics.get(read.topic)
        if info is None or not 0 <= read.partition < info.partitions:
            return PartitionData(ErrorCode.unknown_topic_or_partition)
        offsets = await self._offsets(connection, info.topic_id, read.partition)
        if offsets is None:
            return PartitionData(ErrorCode.unknown_topic_or_partition)
        high_watermark, log_start, stable = offsets
        if not log_start <= read.fetch_offset <= high_watermark:
            return PartitionData(ErrorCode.offset_out_of_range, high_watermark, stable, log_start)
        upper = stable if read_committed else high_watermark
        cursor = await connection.execute(
            "SELECT payload, running, last_offset FROM (SELECT payload, last_offset,"
            "  sum(size) OVER (ORDER BY last_offset) AS running FROM batch"
            "  WHERE topic_id = %s AND partition = %s AND last_offset >= %s AND base_offset < %s"
            "  ORDER BY last_offset LIMIT %s) AS b",
            (info.topic_id, read.partition, read.fetch_offset, upper, FETCH_ROWS_MAX))
        chunks: list[bytes] = []
        for payload, running, _last_offset in await cursor.fetchall():
            if running > max_bytes and not (first and not chunks):
                break
            chunks.append(bytes(payload))
            if running > max_bytes:
                break
        records = b"".join(chunks)
        aborted = None
        if read_committed:
            end = read.fetch_offset
            for _position, header in iter_batches(records):
                end = header.next_offset
            cursor = await connection.execute(
                "SELECT producer_id, first_offset FROM aborted_txn WHERE topic_id = %s AND partition = %s"
                " AND last_offset >= %s AND first_offset < %s ORDER BY first_offset",
                (info.topic_id, read.partition, read.fetch_offset, end))
            aborted = [(int(pid), int(first_offset)) for pid, first_offset in await cursor.fetchall()]
        return PartitionData(ErrorCode.none, high_watermark, stable, log_start, records, aborted)

    def list_offsets(self, queries: list[OffsetQuery], read_committed: bool) -> Completion[list[FoundOffset]]:
        return self._run(self._list_offsets(queries, read_committed))

    async def _list_offsets(self, queries: list[OffsetQuery], read_committed: bool) -> list[FoundOffset]:
        async def work(connection: psycopg.AsyncConnection[Any]) -> list[FoundOffset]:
            return [await self._offset_for(connection, query, read_committed) for query in queries]

        try:
            return await self._reading(work)
        except psycopg.Error as error:
            logger.warning("a ListOffsets failed: %s", error)
            return [FoundOffset(ErrorCode.kafka_storage_error) for _ in queries]

    async def _offset_for(self, connection: psycopg.AsyncConnection[Any], query: OffsetQuery,
                          read_committed: bool) -> FoundOffset:
        info = self._topics.get(query.topic)
        offsets = None if info is None else await self._offsets(connection, info.topic_id, query.partition)
        if info is None or offsets is None:
            return FoundOffset(ErrorCode.unknown_topic_or_partition)
        high_watermark, log_start, stable = offsets
        fetchable_end = stable if read_committed else high_watermark
        if query.timestamp == LATEST:
            return FoundOffset(ErrorCode.none, fetchable_end)
        if query.timestamp == EARLIEST:
            return FoundOffset(ErrorCode.none, log_start)
        timestamp = query.timestamp
        if timestamp == MAX_TIMESTAMP:
            cursor = await connection.execute(
                "SELECT max(max_timestamp) FROM batch WHERE topic_id = %s AND partition = %s AND NOT is_control",
                (info.topic_id, query.partition))
            row = await cursor.fetchone()
            if row is None or row[0] is None or row[0] < 0:
                return FoundOffset(ErrorCode.none)
            timestamp = int(row[0])
        cursor = await connection.execute(
            "SELECT payload FROM batch WHERE topic_id = %s AND partition = %s"
            " AND max_timestamp >= %s AND last_offset >= %s ORDER BY base_offset LIMIT 1",
            (info.topic_id, query.partition, timestamp, log_start))
        row = await cursor.fetchone()
        if row is None:
            return FoundOffset(ErrorCode.none)
        payload = bytes(row[0])
        offset, found_timestamp = first_record_at(payload, parse_header(payload), timestamp, log_start)
        if offset >= fetchable_end:
            return FoundOffset(ErrorCode.none)
        return FoundOffset(ErrorCode.none, offset, found_timestamp)

    def partition_offsets(self, keys: list[PartitionKey]) -> Completion[list[PartitionOffsets]]:
        return self._run(self._partition_offsets(keys))

    async def _partition_offsets(self, keys: list[PartitionKey]) -> list[PartitionOffsets]:
        async def work(connection: psycopg.AsyncConnection[Any]) -> list[PartitionOffsets]:
            results = []
            for topic, partition in keys:
                info = self._topics.get(topic)
                offsets = None if info is None else await self._offsets(connection, info.topic_id, partition)
                if offsets is None:
                    results.append(PartitionOffsets(ErrorCode.unknown_topic_or_partition))
                    continue
                high_watermark, log_start, stable = offsets
                results.append(PartitionOffsets(ErrorCode.none, log_start, high_watermark, stable, high_watermark))
            return results

        try:
            return await self._reading(work)
        except psycopg.Error as error:
            logger.warning("reading partition offsets failed: %s", error)
            return [PartitionOffsets(ErrorCode.kafka_storage_error) for _ in keys]

    def producers(self, keys: list[PartitionKey]) -> Completion[list[Producers]]:
        return self._run(self._producers(keys))

    async def _producers(self, keys: list[PartitionKey]) -> list[Producers]:
        async def work(connection: psycopg.AsyncConnection[Any]) -> list[Producers]:
            results = []
            for topic, partition in keys:
                info = self._topics.get(topic)
                if info is None or not 0 <= partition < info.partitions:
                    results.append(Producers(ErrorCode.unknown_topic_or_partition))
                    continue
                cursor = await connection.execute(
                    "SELECT producer_id, producer_epoch, coordinator_epoch, last_timestamp, txn_first_offset,"
                    " batches FROM producer_state WHERE topic_id = %s AND partition = %s ORDER BY producer_id",
                    (info.topic_id, partition))
                entries = [entry_from_row(row) for row in await cursor.fetchall()]
                results.append(Producers(ErrorCode.none, [
                    ActiveProducer(entry.producer_id, entry.producer_epoch, entry.last_sequence, entry.last_timestamp,
                                   entry.coordinator_epoch, entry.current_txn_first_offset) for entry in entries]))
            return results

        try:
            return await self._reading(work)
        except psycopg.Error as error:
            logger.warning("describing producers failed: %s", error)
            return [Producers(ErrorCode.kafka_storage_error) for _ in keys]

    # --- notifications ----------------------------------------------------------------------------

    async def _listen_loop(self) -> None:
        """Wake long-poll fetches for writes by any broker; refresh topics when they change."""
        while not self._closed:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as connection:
                    await connection.execute(f"LISTEN {DATA_CHANNEL}")
                    await connection.execute(f"LISTEN {TOPICS_CHANNEL}")
                    await self.refresh_topics()
                    generator = connection.notifies(timeout=TOPIC_REFRESH_S)
                    while not self._closed:
                        async for notify in generator:
                            if notify.channel == TOPICS_CHANNEL:
                                await self.refresh_topics()
                            else:
                                partition, _, topic = notify.payload.partition(":")
                                self.on_change(topic, int(partition))
                        await self.refresh_topics()  # the timeout passed: catch anything missed
                        generator = connection.notifies(timeout=TOPIC_REFRESH_S)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.warning("PostgreSQL notifications lost (%s); reconnecting", error)
                await asyncio.sleep(0.5)


async def _cluster_id(connection: psycopg.AsyncConnection[Any]) -> str:
    """The cluster id, made by the first broker that asks (Kafka's 22-character base64 of a UUID)."""
    made = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    await connection.execute("INSERT INTO cluster_meta (cluster_id) VALUES (%s) ON CONFLICT DO NOTHING", (made,))
    row = await (await connection.execute("SELECT cluster_id FROM cluster_meta")).fetchone()
    assert row is not None
    return str(row[0])


class _Borrowed:
    """`async with`: one connection from the pool, returned afterwards; a broken one is replaced on the
    way out (or, if the database was unreachable then, on the next way in)."""

    def __init__(self, pool: asyncio.Queue[psycopg.AsyncConnection[Any]], url: str) -> None:
        self._pool = pool
        self._url = url
        self._connection: psycopg.AsyncConnection[Any] | None = None

    async def __aenter__(self) -> psycopg.AsyncConnection[Any]:
        connection = await self._pool.get()
        if connection.closed or connection.broken:
            try:
                connection = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
            except BaseException:
                self._pool.put_nowait(connection)  # keep the pool's size; the next borrower tries again
                raise
        self._connection = connection
        return connection

    async def __aexit__(self, *exc_info: object) -> None:
        connection = self._connection
        assert connection is not None
        if connection.closed or connection.broken:
            with contextlib.suppress(psycopg.Error):
                connection = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
        self._pool.put_nowait(connection)
