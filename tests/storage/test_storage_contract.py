"""The storage seam's contract, run against both backends: local files and PostgreSQL.

Each test drives a `Storage` through its verbs only (what handlers do) and checks Kafka's rules:
offsets assigned by the log without holes, a retried idempotent batch answered with its original offset
and stored once, stale epochs and sequence gaps refused, the last stable offset pinned by an open
transaction, read_committed reads stopping there with the exact aborted list, ListOffsets answers.
The PostgreSQL backend runs on a real server (Debian's binaries, initdb into a temp dir).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from oncelog.config import broker_config
from oncelog.coordinator.runtime import Completion
from oncelog.errors import ErrorCode
from oncelog.log.manager import LogManager
from oncelog.log.partition import PartitionLog
from oncelog.protocol.records import build_batch, iter_batches, iter_records, parse_header
from oncelog.storage.api import (
    ACKS_ALL,
    Append,
    Appended,
    AppendError,
    Marker,
    OffsetQuery,
    PartitionData,
    Read,
    Storage,
)
from oncelog.storage.local import LocalStorage
from oncelog.topic_config import TopicConfig

pytestmark = pytest.mark.timeout(60)

TOPIC = "orders"
NOW_MS = 1_700_000_000_000


async def wait(completion: Completion[Any]) -> Any:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    completion.on_done(lambda value: future.done() or future.set_result(value))
    return await asyncio.wait_for(future, 20)


def _fsync_now(log: PartitionLog, offset: int, callback: Callable[[bool], None]) -> None:
    end_offset, segments = log.flush_snapshot()
    for segment in segments:
        segment.fsync()
    log.mark_flushed(end_offset)
    callback(log.recovery_point >= offset)


@asynccontextmanager
async def open_storage(kind: str, where: Any) -> AsyncIterator[Storage]:
    if kind == "local":
        storage = LocalStorage(LogManager(broker_config({}, data_dir=where, port=0)))
        storage.start(NOW_MS, _fsync_now)
        try:
            yield storage
        finally:
            storage.close()
    else:
        from oncelog.storage.postgres.storage import PostgresStorage

        pg = PostgresStorage(where)
        await pg.open()
        try:
            yield pg
        finally:
            await pg.aclose()


@pytest.fixture(params=["local", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Any]:
    if request.param == "local":
        return "local", tmp_path / "data"
    return "postgresql", request.getfixturevalue("database_url")


def batch(values: list[bytes], producer_id: int = -1, epoch: int = -1, sequence: int = -1,
          transactional: bool = False, timestamp: int = NOW_MS) -> Append:
    data = build_batch([(None, value) for value in values], timestamp_ms=timestamp, producer_id=producer_id,
                       producer_epoch=epoch, base_sequence=sequence, transactional=transactional)
    return Append(TOPIC, 0, data, parse_header(data))


def no_verify(transactional_id: str | None, header: Any, partition: Any) -> ErrorCode | None:
    return None


async def append(storage: Storage, *appends: Append, verify: Any = no_verify,
                 transactional_id: str | None = None) -> list[Any]:
    return list(await wait(storage.append(transactional_id, list(appends), ACKS_ALL, NOW_MS, verify)))


async def begin_transaction(storage: Storage, transactional_id: str, producer_id: int, epoch: int,
                            partitions: list[tuple[str, int]]) -> None:
    """Make `transactional_id` Ongoing with `partitions` added, where the backend keeps that state: the
    local backend asks its coordinator (the `verify` callback, here `no_verify`); PostgreSQL keeps it in
    its `txn` tables, which the coordinator's AddPartitionsToTxn writes."""
    from oncelog.storage.postgres.storage import PostgresStorage

    if not isinstance(storage, PostgresStorage):
        return
    import psycopg

    async with await psycopg.AsyncConnection.connect(storage.url, autocommit=True) as connection:
        await connection.execute(
            "INSERT INTO txn (transactional_id, producer_id, producer_epoch, timeout_ms, state, start_ms,"
            " last_update_ms) VALUES (%s, %s, %s, 60000, 'Ongoing', %s, %s)",
            (transactional_id, producer_id, epoch, NOW_MS, NOW_MS))
        for topic, partition in partitions:
            await connection.execute("INSERT INTO txn_partition VALUES (%s, %s, %s)",
                                     (transactional_id, topic, partition))


async def read(storage: Storage, offset: int, committed: bool = False, max_bytes: int = 1 << 20) -> PartitionData:
    results = await wait(storage.fetch([Read(TOPIC, 0, offset, max_bytes)], max_bytes, committed))
    return results[0]  # type: ignore[no-any-return]


def values_of(data: PartitionData) -> list[tuple[int, bytes | None]]:
    found = []
    for position, header in iter_batches(data.records or b""):
        if not header.is_control:
            found.extend((record.offset, record.value) for record in iter_records(data.records or b"", position))
    return found


async def with_topic(storage: Storage, partitions: int = 1) -> None:
    created = await wait(storage.create_topic(TOPIC, partitions, TopicConfig({}), NOW_MS))
    assert not isinstance(created, Exception), created


def test_appends_take_consecutive_offsets_and_read_back(backend: tuple[str, Any]) -> None:
    async def run() -> None:
        async with open_storage(*backend) as storage:
            await with_topic(storage, 2)
            assert storage.topic(TOPIC) is not None and storage.topic(TOPIC).partitions == 2  # type: ignore[union-attr]
            first = await append(storage, batch([b"a", b"b"]), batch([b"c"]))
            assert [r.base_offset for r in first] == [0, 2]
            data = await read(storage, 0)
            assert data.error == ErrorCode.none and data.high_watermark == 3 and data.aborted is None
            assert values_of(data) == [(0, b"a"), (1, b"b"), (2, b"c")]
            assert values_of(await read(storage, 2)) == [(2, b"c")]
            assert (await read(storage, 4)).error == ErrorCode.offset_out_of_range
            missing = await append(storage, Append("nope", 0, batch([b"x"]).records, batch([b"x"]).header))
            assert isinstance(missing[0], AppendError) and missing[0].code == ErrorCode.unknown_topic_or_partition
        async with open_storage(*backend) as reopened:  # what was acknowledged is still there
            assert values_of(await read(reopened, 0)) == [(0, b"a"), (1, b"b"), (2, b"c")]

    asyncio.run(run())


def test_a_fetch_returns_at_least_one_whole_batch_and_respects_max_bytes(backend: tuple[str, Any]) -> None:
    async def run() -> None:
        async with open_storage(*backend) as storage:
            await with_topic(storage)
            await append(storage, batch([b"x" * 500]), batch([b"y" * 500]), batch([b"z" * 500]))
            one = await read(storage, 0, max_bytes=10)  # KIP-74: the first batch even though it is larger
            assert [offset for offset, _ in values_of(one)] == [0]
            two = await read(storage, 0, max_bytes=1300)
            assert [offset for offset, _ in values_of(two)] == [0, 1]

    asyncio.run(run())


def test_idempotent_retries_are_answered_with_the_original_offset_and_stored_once(backend: tuple[str, Any]) -> None:
    async def run() -> None:
        async with open_storage(*backend) as storage:
            await with_topic(storage)
            first = await append(storage, batch([b"a", b"b"], producer_id=7, epoch=0, sequence=0))
            await append(storage, batch([b"plain"]))
            retry = await append(storage, batch([b"a", b"b"], producer_id=7, epoch=0, sequence=0))
            assert isinstance(retry[0], Appended) and retry[0].duplicate and retry[0].base_offset == 0
            assert first[0].base_offset == 0
            gap = await append(storage, batch([b"c"], producer_id=7, epoch=0, sequence=5))
            assert isinstance(gap[0], AppendError) and gap[0].code == ErrorCode.out_of_order_sequence_number
            nxt = await append(storage, batch([b"c"], producer_id=7, epoch=0, sequence=2))
            assert isinstance(nxt[0], Appended) and nxt[0].base_offset == 3
            bumped = await append(storage, batch([b"d"], producer_id=7, epoch=1, sequence=0))
            assert isinstance(bumped[0], Appended) and bumped[0].base_offset == 4
            stale = await append(storage, batch([b"e"], producer_id=7, epoch=0, sequence=3))
            assert isinstance(stale[0], AppendError) and stale[0].code == ErrorCode.invalid_producer_epoch
            assert values_of(await read(storage, 0)) == [(0, b"a"), (1, b"b"), (2, b"plain"), (3, b"c"), (4, b"d")]
            producers = (await wait(storage.producers([(TOPIC, 0)])))[0]
            assert [(p.producer_id, p.producer_epoch, p.last_sequence) for p in producers.active] == [(7, 1, 0)]

    asyncio.run(run())


def test_open_transactions_pin_the_last_stable_offset_and_aborts_are_listed(backend: tuple[str, Any]) -> None:
    async def run() -> None:
        async with open_storage(*backend) as storage:
            await with_topic(storage)
            await append(storage, batch([b"before"]))
            await begin_transaction(storage, "tx", 3, 0, [(TOPIC, 0)])
            await append(storage, batch([b"t1"], producer_id=3, epoch=0, sequence=0, transactional=True),
                         transactional_id="tx")
            await append(storage, batch([b"after"]))
            data = await read(storage, 0, committed=True)
            assert data.high_watermark == 3 and data.last_stable_offset == 1
            assert values_of(data) == [(0, b"before")] and data.aborted == []
            latest = await wait(storage.list_offsets([OffsetQuery(TOPIC, 0, -1)], True))
            assert latest[0].offset == 1
            codes = await wait(storage.write_markers([Marker(TOPIC, 0, 3, 0, 0, commit=False)], NOW_MS))
            assert codes == [ErrorCode.none]
            data = await read(storage, 0, committed=True)
            assert data.last_stable_offset == 4 and data.high_watermark == 4
            assert data.aborted == [(3, 1)]
            assert values_of(data) == [(0, b"before"), (1, b"t1"), (2, b"after")]  # the client drops t1
            later = await read(storage, 2, committed=True)
            assert later.aborted == [(3, 1)]  # the abort's range reaches past the fetch offset
            uncommitted = await read(storage, 0)
            assert uncommitted.aborted is None
            stale = await wait(storage.write_markers([Marker(TOPIC, 0, 3, -1, 0, commit=True)], NOW_MS))
            assert stale == [ErrorCode.invalid_producer_epoch]
            committed_txn = await append(storage, batch([b"t2"], producer_id=3, epoch=0, sequence=1,
                                                        transactional=True), transactional_id="tx")
            assert committed_txn[0].base_offset == 4
            await wait(storage.write_markers([Marker(TOPIC, 0, 3, 0, 0, commit=True)], NOW_MS))
            final = await read(storage, 4, committed=True)
            assert final.last_stable_offset == 6 and final.aborted == [] and values_of(final) == [(4, b"t2")]

    asyncio.run(run())


def test_transactional_batches_are_verified_after_the_producer_state_check(backend: tuple[str, Any]) -> None:
    async def run() -> None:
        asked: list[Any] = []

        def refuse(transactional_id: str | None, header: Any, partition: Any) -> ErrorCode | None:
            asked.append(partition)
            return ErrorCode.invalid_txn_state

        async with open_storage(*backend) as storage:
            await with_topic(storage, 2)
            # Ongoing, but with partition 1 only: the local coordinator (refuse) and the txn tables agree.
            await begin_transaction(storage, "tx", 4, 0, [(TOPIC, 1)])
            refused = await append(storage, batch([b"z"], producer_id=4, epoch=0, sequence=0, transactional=True),
                                   verify=refuse, transactional_id="tx")
            assert isinstance(refused[0], AppendError) and refused[0].code == ErrorCode.invalid_txn_state
            assert asked == ([(TOPIC, 0)] if backend[0] == "local" else [])
            data = await read(storage, 0, committed=True)
            assert data.high_watermark == 0 and data.last_stable_offset == 0

    asyncio.run(run())


def test_list_offsets_by_timestamp(backend: tuple[str, Any]) -> None:
    async def run() -> None:
        async with open_storage(*backend) as storage:
            await with_topic(storage)
            await append(storage, batch([b"a"], timestamp=NOW_MS), batch([b"b"], timestamp=NOW_MS + 10),
                         batch([b"c"], timestamp=NOW_MS + 20))
            queries = [OffsetQuery(TOPIC, 0, t) for t in (-2, -1, NOW_MS + 5, NOW_MS + 99, -3)]
            found = await wait(storage.list_offsets(queries, False))
            assert [(f.error, f.offset) for f in found] == [
                (ErrorCode.none, 0), (ErrorCode.none, 3), (ErrorCode.none, 1), (ErrorCode.none, -1),
                (ErrorCode.none, 2)]
            assert found[2].timestamp == NOW_MS + 10
            unknown = await wait(storage.list_offsets([OffsetQuery("nope", 0, -1)], False))
            assert unknown[0].error == ErrorCode.unknown_topic_or_partition

    asyncio.run(run())


def test_topics_are_created_once_and_deleted(backend: tuple[str, Any]) -> None:
    async def run() -> None:
        async with open_storage(*backend) as storage:
            await with_topic(storage, 3)
            assert storage.partition_count() == 3
            assert storage.colliding_topic("ord.ers") is None and storage.colliding_topic("orders") is None
            assert [t.name for t in storage.topics()] == [TOPIC]
            info = storage.topic(TOPIC)
            assert info is not None and storage.topic_by_id(info.topic_id) == info
            assert await wait(storage.delete_topic(TOPIC)) is None
            assert storage.topic(TOPIC) is None
            await with_topic(storage, 1)  # a new topic of the same name starts empty
            assert (await read(storage, 0)).high_watermark == 0

    asyncio.run(run())
