"""The PostgreSQL backend beyond the shared contract: many brokers on one database, schema versions, and a
database that goes away. Real PostgreSQL (Debian's binaries, initdb into a temp dir)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import psycopg
import pytest

from oncelog.errors import ErrorCode
from oncelog.storage.api import Appended, AppendError, Read
from oncelog.storage.postgres.schema import SCHEMA_VERSION, SchemaTooNew, migrate
from oncelog.storage.postgres.storage import PostgresStorage
from tests.storage.test_storage_contract import NOW_MS, TOPIC, append, batch, read, values_of, wait, with_topic

pytestmark = pytest.mark.timeout(120)


def test_brokers_appending_to_one_partition_leave_no_gaps_and_no_duplicates(database_url: str) -> None:
    """Producers spread over three brokers (storages), retrying every third batch through another broker:
    every batch is stored exactly once, offsets run 0..N-1 without holes, each producer's batches are in
    sequence order, and a retry is answered with the original offset."""
    producers, batches_each = 6, 30

    async def run() -> None:
        brokers = [PostgresStorage(database_url) for _ in range(3)]
        for broker in brokers:
            await broker.open()
        try:
            await with_topic(brokers[0])
            for broker in brokers:
                await broker.refresh_topics()
            acknowledged: dict[tuple[int, int], int] = {}

            async def producer(producer_id: int) -> None:
                rng = random.Random(producer_id)
                for sequence in range(batches_each):
                    value = f"{producer_id}:{sequence}".encode()
                    record = batch([value], producer_id=producer_id, epoch=0, sequence=sequence)
                    broker = brokers[rng.randrange(len(brokers))]
                    (result,) = await append(broker, record)
                    assert isinstance(result, Appended), result
                    if sequence % 3 == 0:  # a lost ack: the client retries through another broker
                        (again,) = await append(brokers[(brokers.index(broker) + 1) % 3], record)
                        assert isinstance(again, Appended) and again.duplicate
                        assert again.base_offset == result.base_offset
                    acknowledged[(producer_id, sequence)] = result.base_offset

            await asyncio.gather(*(producer(1000 + index) for index in range(producers)))
            total = producers * batches_each
            data = await read(brokers[2], 0)
            stored = values_of(data)
            assert data.high_watermark == total
            assert [offset for offset, _ in stored] == list(range(total))
            by_value = {value: offset for offset, value in stored}
            assert len(by_value) == total
            for (producer_id, sequence), offset in acknowledged.items():
                assert by_value[f"{producer_id}:{sequence}".encode()] == offset
            for index in range(producers):
                offsets = [acknowledged[(1000 + index, sequence)] for sequence in range(batches_each)]
                assert offsets == sorted(offsets)
            assert sum(broker.commits for broker in brokers) <= total * 4 // 3 + len(brokers)
        finally:
            for broker in brokers:
                await broker.aclose()

    asyncio.run(run())


def test_schema_is_versioned_and_a_newer_one_is_refused(database_url: str) -> None:
    with psycopg.connect(database_url) as connection:
        assert migrate(connection) == (0, SCHEMA_VERSION)
        assert migrate(connection) == (SCHEMA_VERSION, SCHEMA_VERSION)
        connection.execute("UPDATE oncelog_schema SET version = %s", (SCHEMA_VERSION + 1,))
        connection.commit()
        with pytest.raises(SchemaTooNew, match="upgrade oncelog"):
            migrate(connection)


class _CuttableProxy:
    """TCP between the storage and PostgreSQL that a test can cut (and restore)."""

    def __init__(self, port: int) -> None:
        self._upstream_port = port
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.cut = False

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        self._writers += [writer, up_writer]

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def sever(self) -> None:
        self.cut = True
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def stop(self) -> None:
        self.sever()
        assert self._server is not None
        self._server.close()


def test_a_lost_database_answers_retriable_errors_and_recovers(database_url: str) -> None:
    """Appends and reads while PostgreSQL is unreachable get retriable errors, never a definite answer;
    once it is back an idempotent retry is stored once."""

    async def run() -> None:
        head, _, tail = database_url.rpartition("@127.0.0.1:")
        port, _, database = tail.partition("/")
        proxy = _CuttableProxy(int(port))
        proxy_port = await proxy.start()
        storage = PostgresStorage(f"{head}@127.0.0.1:{proxy_port}/{database}")
        await storage.open()
        try:
            await with_topic(storage)
            (first,) = await append(storage, batch([b"a"], producer_id=9, epoch=0, sequence=0))
            assert isinstance(first, Appended)
            proxy.sever()
            retry_me = batch([b"b"], producer_id=9, epoch=0, sequence=1)
            (lost,) = await append(storage, retry_me)
            assert isinstance(lost, AppendError) and lost.code == ErrorCode.request_timed_out
            assert ErrorCode.request_timed_out.retriable
            assert (await read(storage, 0)).error == ErrorCode.kafka_storage_error
            assert ErrorCode.kafka_storage_error.retriable
            proxy.cut = False
            results: list[Any] = []
            for _ in range(40):  # the client's retries, until the broker reconnects
                results = await append(storage, retry_me)
                if isinstance(results[0], Appended):
                    break
                await asyncio.sleep(0.25)
            assert isinstance(results[0], Appended) and results[0].base_offset == 1
            (again,) = await append(storage, retry_me)
            assert isinstance(again, Appended) and again.duplicate and again.base_offset == 1
            assert values_of(await read(storage, 0)) == [(0, b"a"), (1, b"b")]
        finally:
            await storage.aclose()
            await proxy.stop()

    asyncio.run(run())


def test_markers_and_appends_to_many_partitions_commit_together(database_url: str) -> None:
    """One group commit spans partitions: the rows are locked in sorted order, so two brokers writing
    the same partitions in opposite orders never deadlock."""

    async def run() -> None:
        brokers = [PostgresStorage(database_url) for _ in range(2)]
        for broker in brokers:
            await broker.open()
        try:
            await with_topic(brokers[0], partitions=4)
            await brokers[1].refresh_topics()
            forward = [batch([b"f"]) for _ in range(4)]
            backward = [batch([b"b"]) for _ in range(4)]
            for index in range(4):
                forward[index].partition = index
                backward[index].partition = 3 - index
            for _ in range(20):
                results = await asyncio.gather(
                    wait(brokers[0].append(None, forward, -1, NOW_MS, lambda *a: None)),
                    wait(brokers[1].append(None, backward, -1, NOW_MS, lambda *a: None)))
                assert all(isinstance(r, Appended) for group in results for r in group)
            for partition in range(4):
                offsets = (await wait(brokers[0].partition_offsets([(TOPIC, partition)])))[0]
                assert offsets.high_watermark == 40
        finally:
            for broker in brokers:
                await broker.aclose()

    asyncio.run(run())


def test_retention_deletes_the_oldest_batches_by_age_and_by_size_and_moves_the_log_start(database_url: str) -> None:
    """retention.ms: the expired prefix goes (a batch as the local log's segment), never the newest batch;
    retention.bytes: the oldest go while what stays is at least that many bytes. Reads below the new start
    answer OFFSET_OUT_OF_RANGE; appends go on at the same next offset; a compacted topic is not touched."""
    from oncelog.config import broker_config
    from oncelog.topic_config import TopicConfig

    defaults = broker_config({})
    day_ms = 86_400_000

    async def run() -> None:
        storage = PostgresStorage(database_url)
        await storage.open()
        try:
            created = await wait(storage.create_topic(TOPIC, 1, TopicConfig({"retention.ms": str(day_ms)}), NOW_MS))
            assert not isinstance(created, Exception), created
            for index in range(6):  # two days old, three of them; then three recent ones
                stamp = NOW_MS - 2 * day_ms if index < 3 else NOW_MS
                (result,) = await append(storage, batch([b"v%d" % index, b"w%d" % index], timestamp=stamp))
                assert isinstance(result, Appended), result
            assert await wait(storage.apply_retention(NOW_MS, defaults)) == 1
            data = await read(storage, 6)
            assert data.log_start_offset == 6 and data.high_watermark == 12
            assert [offset for offset, _ in values_of(data)] == list(range(6, 12))
            assert (await read(storage, 0)).error == ErrorCode.offset_out_of_range
            assert await wait(storage.apply_retention(NOW_MS, defaults)) == 0  # nothing more is expired
            # Every batch expired: the newest stays.
            assert await wait(storage.apply_retention(NOW_MS + 2 * day_ms, defaults)) == 1
            assert (await read(storage, 10)).log_start_offset == 10
            (result,) = await append(storage, batch([b"after"]))
            assert isinstance(result, Appended) and result.base_offset == 12

            sized = "sized"
            created = await wait(storage.create_topic(sized, 1, TopicConfig({"retention.bytes": "1"}), NOW_MS))
            assert not isinstance(created, Exception)
            compacted = "compacted"
            created = await wait(storage.create_topic(compacted, 1, TopicConfig(
                {"cleanup.policy": "compact", "retention.ms": "1"}), NOW_MS))
            assert not isinstance(created, Exception)
            for topic in (sized, compacted):
                for index in range(4):
                    record = batch([b"x%d" % index], timestamp=NOW_MS - 2 * day_ms)
                    record.topic = topic
                    (result,) = await append(storage, record)
                    assert isinstance(result, Appended), result
            assert await wait(storage.apply_retention(NOW_MS, defaults)) == 1  # the sized one only
            starts = {}
            for topic in (sized, compacted):
                results = await wait(storage.fetch([Read(topic, 0, 0, 1 << 20)], 1 << 20, False))
                starts[topic] = results[0].log_start_offset
            assert starts == {sized: 3, compacted: 0}
        finally:
            await storage.aclose()

    asyncio.run(run())


def test_a_topic_refresh_that_read_before_a_create_does_not_hide_the_new_topic(database_url: str) -> None:
    """Found in CI: the topic cache refresh (on NOTIFY or its timer) read the topic table, this broker
    created a topic meanwhile, and the refresh then replaced the cache without it: Metadata answered
    UNKNOWN_TOPIC for a moment and a consumer group rebalanced. A refresh that overlapped a local create
    reads again."""
    from oncelog.topic_config import TopicConfig

    async def run() -> None:
        storage = PostgresStorage(database_url)
        await storage.open()
        try:
            read_started, release = asyncio.Event(), asyncio.Event()
            reading = storage._reading
            refresh: asyncio.Task[None] | None = None

            async def slow_first_read(work: Any) -> Any:
                rows = await reading(work)
                # Only this test's refresh is held (the storage's own listener refreshes too).
                if asyncio.current_task() is refresh and not read_started.is_set():
                    read_started.set()
                    await release.wait()  # the create below commits while this stale read is held
                return rows

            storage._reading = slow_first_read  # type: ignore[method-assign]
            refresh = asyncio.create_task(storage.refresh_topics())
            await asyncio.wait_for(read_started.wait(), 20)
            created = await wait(storage.create_topic("fresh", 1, TopicConfig({}), NOW_MS))
            assert not isinstance(created, Exception), created
            release.set()
            await asyncio.wait_for(refresh, 20)
            assert storage.topic("fresh") is not None
        finally:
            await storage.aclose()

    asyncio.run(run())
