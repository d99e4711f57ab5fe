"""Transactions with real clients (confluent-kafka, kafka-python, aiokafka) against a real broker.

What is pinned here (docs/protocol.md, Transactions to Transactional offsets): committed data becomes visible
to read_committed readers and aborted data never does; control batches take one offset each and every client
steps over them to the end of the log; an open transaction holds the last stable offset (LSO) — and with it
every later record, transactional or not — until it ends; a second instance with the same transactional.id
fences the first and aborts its open transaction; a hung transaction is aborted after its timeout and its
producer is fenced; offsets sent with `send_offsets_to_transaction` become the group's committed offsets only
when the transaction commits (OffsetFetch with RequireStable answers UNSTABLE_OFFSET_COMMIT meanwhile); and
DescribeTransactions / ListTransactions report the coordinator's state.

Each client is driven through one small synchronous adapter (`TxnProducer`, `Reader`), so every scenario
reads the same for the three clients; aiokafka's coroutines run on one private event loop per test.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import kafka
import kafka.errors
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as AioTopicPartition
from aiokafka.errors import InvalidProducerEpoch as AioInvalidProducerEpoch
from aiokafka.errors import ProducerFenced as AioProducerFenced
from aiokafka.structs import OffsetAndMetadata as AioOffsetAndMetadata
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from kafka.structs import OffsetAndMetadata as KafkaPythonOffsetAndMetadata

from oncelog import admin_transactions
from oncelog.client import KafkaClient
from oncelog.errors import ErrorCode
from oncelog.testing import embedded_broker
from tests.helpers import create_topic

CLIENTS = ["confluent", "kafka-python", "aiokafka"]
READ_COMMITTED = "read_committed"
READ_UNCOMMITTED = "read_uncommitted"
READ_DEADLINE_S = 20.0
QUIET_POLL_S = 1.5
"""How long a reader must see nothing while a transaction holds the LSO back."""
CLIENT_TIMEOUT_S = 15.0

T = TypeVar("T")


# --- raw protocol helpers -----------------------------------------------------------------------------------


def list_offset(bootstrap: str, topic: str, partition: int, isolation_level: int) -> int:
    """ListOffsets v7 LATEST: the high watermark (isolation 0) or the last stable offset (isolation 1)."""
    with KafkaClient(bootstrap) as client:
        response = client.request(2, 7, {"replica_id": -1, "isolation_level": isolation_level, "topics": [
            {"name": topic, "partitions": [{"partition_index": partition, "current_leader_epoch": -1,
                                            "timestamp": -1}]}]})
    answer = response.topics[0].partitions[0]
    assert answer.error_code == ErrorCode.none, answer
    return int(answer.offset)


def high_watermark(bootstrap: str, topic: str, partition: int) -> int:
    return list_offset(bootstrap, topic, partition, 0)


def last_stable_offset(bootstrap: str, topic: str, partition: int) -> int:
    return list_offset(bootstrap, topic, partition, 1)


def offset_fetch(bootstrap: str, group_id: str, topic: str, partitions: list[int],
                 require_stable: bool) -> dict[int, tuple[int, int]]:
    """OffsetFetch v7: partition → (error code, committed offset)."""
    with KafkaClient(bootstrap) as client:
        response = client.request(9, 7, {"group_id": group_id, "require_stable": require_stable,
                                         "topics": [{"name": topic, "partition_indexes": partitions}]})
    assert response.error_code == ErrorCode.none, response
    return {int(p.partition_index): (int(p.error_code), int(p.committed_offset))
            for t in response.topics for p in t.partitions}


def describe_transaction(bootstrap: str, transactional_id: str) -> admin_transactions.TransactionState:
    """DescribeTransactions v0 of one transactional id, read as `oncelog transactions describe` reads it
    (by hand: kio refuses the start time -1 Kafka sends for an Empty id)."""
    with KafkaClient(bootstrap) as client:
        state = admin_transactions.describe_transaction(client, transactional_id)
    assert state.transactional_id == transactional_id
    return state


def _partitions(state: admin_transactions.TransactionState) -> list[tuple[str, int]]:
    return sorted((topic, partition) for topic, partitions in state.topics for partition in partitions)


def list_transactions(bootstrap: str, state_filters: list[str] | None = None) -> dict[str, tuple[int, str]]:
    """ListTransactions v1: transactional id → (producer id, state name)."""
    with KafkaClient(bootstrap) as client:
        response = client.request(66, 1, {"state_filters": state_filters or [], "producer_id_filters": [],
                                          "duration_filter": -1})
    assert response.error_code == ErrorCode.none, response
    assert list(response.unknown_state_filters) == []
    return {state.transactional_id: (int(state.producer_id), state.transaction_state)
            for state in response.transaction_states}


def plain_produce(bootstrap: str, topic: str, partition: int, values: list[bytes]) -> None:
    """Non-transactional, acknowledged writes by another producer."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    for value in values:
        producer.produce(topic, value=value, partition=partition)
    assert producer.flush(CLIENT_TIMEOUT_S) == 0


# --- one event loop for the aiokafka objects of a test -------------------------------------------------------


class AioRunner:
    """Runs aiokafka coroutines to completion on one private loop (only while a call is running)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coroutine, CLIENT_TIMEOUT_S * 2))

    def close(self) -> None:
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()


@contextmanager
def aio_runner() -> Iterator[AioRunner]:
    runner = AioRunner()
    try:
        yield runner
    finally:
        runner.close()


# --- transactional producers ---------------------------------------------------------------------------------


class TxnProducer(Protocol):
    client: str
    transactional_id: str

    def init(self) -> None: ...
    def begin(self) -> None: ...
    def send(self, topic: str, partition: int, value: bytes) -> None: ...
    def flush(self) -> None: ...
    def send_offsets(self, offsets: dict[tuple[str, int], int], group_id: str) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...
    def close(self) -> None: ...


class ConfluentTxnProducer:
    client = "confluent"

    def __init__(self, bootstrap: str, transactional_id: str, timeout_ms: int) -> None:
        self.bootstrap = bootstrap
        self.transactional_id = transactional_id
        self.producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id,
                                  "transaction.timeout.ms": timeout_ms, "linger.ms": 5})
        self.errors: list[KafkaError] = []

    def _delivered(self, error: KafkaError | None, _message: Any) -> None:
        if error is not None:
            self.errors.append(error)

    def init(self) -> None:
        self.producer.init_transactions(CLIENT_TIMEOUT_S)

    def begin(self) -> None:
        self.producer.begin_transaction()

    def send(self, topic: str, partition: int, value: bytes) -> None:
        self.producer.produce(topic, value=value, partition=partition, on_delivery=self._delivered)

    def flush(self) -> None:
        assert self.producer.flush(CLIENT_TIMEOUT_S) == 0
        assert not self.errors, self.errors

    def send_offsets(self, offsets: dict[tuple[str, int], int], group_id: str) -> None:
        # The group metadata of a consumer that is not a member: generation -1, member id "".
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group_id,
                             "enable.auto.commit": False})
        try:
            metadata = consumer.consumer_group_metadata()
        finally:
            consumer.close()
        self.producer.send_offsets_to_transaction(
            [TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()],
            metadata, CLIENT_TIMEOUT_S)

    def commit(self) -> None:
        self.producer.commit_transaction(CLIENT_TIMEOUT_S)

    def abort(self) -> None:
        self.producer.abort_transaction(CLIENT_TIMEOUT_S)

    def close(self) -> None:
        with suppress(KafkaException):  # a fenced producer raises its fatal error again
            self.producer.flush(1)


class KafkaPythonTxnProducer:
    client = "kafka-python"

    def __init__(self, bootstrap: str, transactional_id: str, timeout_ms: int) -> None:
        self.transactional_id = transactional_id
        self.producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, transactional_id=transactional_id,
                                            transaction_timeout_ms=timeout_ms, linger_ms=5,
                                            max_block_ms=int(CLIENT_TIMEOUT_S * 1000))
        self.futures: list[Any] = []

    def init(self) -> None:
        self.producer.init_transactions()

    def begin(self) -> None:
        self.producer.begin_transaction()

    def send(self, topic: str, partition: int, value: bytes) -> None:
        self.futures.append(self.producer.send(topic, value=value, partition=partition))

    def flush(self) -> None:
        self.producer.flush(CLIENT_TIMEOUT_S)
        for future in self.futures:
            future.get(CLIENT_TIMEOUT_S)
        self.futures.clear()

    def send_offsets(self, offsets: dict[tuple[str, int], int], group_id: str) -> None:
        self.producer.send_offsets_to_transaction(
            {kafka.TopicPartition(topic, partition): KafkaPythonOffsetAndMetadata(offset, "", -1)
             for (topic, partition), offset in offsets.items()}, group_id)

    def commit(self) -> None:
        self.producer.commit_transaction()

    def abort(self) -> None:
        self.producer.abort_transaction()

    def close(self) -> None:
        self.producer.close(timeout=5)


class AioTxnProducer:
    client = "aiokafka"

    def __init__(self, runner: AioRunner, bootstrap: str, transactional_id: str, timeout_ms: int) -> None:
        self.runner = runner
        self.bootstrap = bootstrap
        self.transactional_id = transactional_id
        self.timeout_ms = timeout_ms
        self.producer: AIOKafkaProducer | None = None
        self.futures: list[Any] = []

    def init(self) -> None:
        async def start() -> AIOKafkaProducer:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, transactional_id=self.transactional_id,
                                        transaction_timeout_ms=self.timeout_ms, linger_ms=5)
            await producer.start()  # InitProducerId happens here
            return producer

        self.producer = self.runner.run(start())

    def _producer(self) -> AIOKafkaProducer:
        assert self.producer is not None
        return self.producer

    def begin(self) -> None:
        self.runner.run(self._producer().begin_transaction())

    def send(self, topic: str, partition: int, value: bytes) -> None:
        self.futures.append(self.runner.run(self._producer().send(topic, value=value, partition=partition)))

    def flush(self) -> None:
        async def flush() -> None:
            await self._producer().flush()
            for future in self.futures:
                await future

        self.runner.run(flush())
        self.futures.clear()

    def send_offsets(self, offsets: dict[tuple[str, int], int], group_id: str) -> None:
        self.runner.run(self._producer().send_offsets_to_transaction(
            {AioTopicPartition(topic, partition): AioOffsetAndMetadata(offset, "")
             for (topic, partition), offset in offsets.items()}, group_id))

    def commit(self) -> None:
        self.runner.run(self._producer().commit_transaction())

    def abort(self) -> None:
        self.runner.run(self._producer().abort_transaction())

    def close(self) -> None:
        if self.producer is not None:
            self.runner.run(self.producer.stop())
        for future in self.futures:  # a fenced producer's sends failed; nobody awaited them
            if future.done() and not future.cancelled():
                future.exception()
            else:
                future.cancel()


@contextmanager
def txn_producer(client: str, bootstrap: str, runner: AioRunner, transactional_id: str | None = None,
                 timeout_ms: int = 60_000) -> Iterator[TxnProducer]:
    transactional_id = transactional_id or f"txn-{uuid.uuid4().hex[:8]}"
    producer: TxnProducer
    if client == "confluent":
        producer = ConfluentTxnProducer(bootstrap, transactional_id, timeout_ms)
    elif client == "kafka-python":
        producer = KafkaPythonTxnProducer(bootstrap, transactional_id, timeout_ms)
    else:
        producer = AioTxnProducer(runner, bootstrap, transactional_id, timeout_ms)
    try:
        yield producer
    finally:
        producer.close()


def is_fencing_error(client: str, error: BaseException) -> bool:
    """The error each client raises when the coordinator or a partition has seen a newer epoch."""
    if client == "confluent":
        if not isinstance(error, KafkaException):
            return False
        code = error.args[0].code()
        return code in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)
    if client == "kafka-python":
        return isinstance(error, kafka.errors.ProducerFencedError | kafka.errors.InvalidProducerEpochError)
    return isinstance(error, AioProducerFenced | AioInvalidProducerEpoch)


# --- readers -------------------------------------------------------------------------------------------------

Record = tuple[int, int, bytes]
"""(partition, offset, value)"""


class Reader(Protocol):
    def poll(self, seconds: float) -> list[Record]: ...
    def positions(self) -> dict[int, int]: ...
    def end_offsets(self) -> dict[int, int]: ...
    def close(self) -> None: ...


class ConfluentReader:
    def __init__(self, bootstrap: str, topic: str, partitions: int, isolation: str, start: int,
                 one_batch_fetches: bool) -> None:
        self.topic = topic
        self.partitions = [TopicPartition(topic, p) for p in range(partitions)]
        config: dict[str, object] = {"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:6]}",
                                     "enable.auto.commit": False, "isolation.level": isolation,
                                     "fetch.wait.max.ms": 100}
        if one_batch_fetches:
            config.update({"message.max.bytes": 1000, "fetch.max.bytes": 1000, "max.partition.fetch.bytes": 1})
        self.consumer = Consumer({**config, "enable.partition.eof": True})
        self.consumer.assign([TopicPartition(topic, p, start) for p in range(partitions)])
        self.eof: dict[int, int] = {}
        """Offset of the last end-of-partition event: librdkafka reports no position until it has delivered
        a message, and a reader that starts among markers only never delivers one."""

    def poll(self, seconds: float) -> list[Record]:
        records: list[Record] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            message = self.consumer.poll(min(left, 0.2))
            if message is None:
                continue
            if message.error() is not None and message.error().code() == KafkaError._PARTITION_EOF:
                self.eof[message.partition()] = message.offset()
                continue
            assert message.error() is None, message.error()
            records.append((message.partition(), message.offset(), message.value()))
        return records

    def positions(self) -> dict[int, int]:
        return {tp.partition: max(tp.offset, self.eof.get(tp.partition, -1))
                for tp in self.consumer.position(self.partitions)}

    def end_offsets(self) -> dict[int, int]:
        return {tp.partition: self.consumer.get_watermark_offsets(tp, CLIENT_TIMEOUT_S, cached=False)[1]
                for tp in self.partitions}

    def close(self) -> None:
        self.consumer.close()


class KafkaPythonReader:
    def __init__(self, bootstrap: str, topic: str, partitions: int, isolation: str, start: int,
                 one_batch_fetches: bool) -> None:
        self.partitions = [kafka.TopicPartition(topic, p) for p in range(partitions)]
        sizes = {"fetch_max_bytes": 1, "max_partition_fetch_bytes": 1} if one_batch_fetches else {}
        self.consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                            isolation_level=isolation, fetch_max_wait_ms=100, **sizes)
        self.consumer.assign(self.partitions)
        for tp in self.partitions:
            self.consumer.seek(tp, start)

    def poll(self, seconds: float) -> list[Record]:
        records: list[Record] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            batches = self.consumer.poll(timeout_ms=int(min(left, 0.2) * 1000) + 1)
            for messages in batches.values():
                records += [(m.partition, m.offset, m.value) for m in messages]
        return records

    def positions(self) -> dict[int, int]:
        return {tp.partition: self.consumer.position(tp) for tp in self.partitions}

    def end_offsets(self) -> dict[int, int]:
        return {tp.partition: offset for tp, offset in self.consumer.end_offsets(self.partitions).items()}

    def close(self) -> None:
        self.consumer.close()


class AioReader:
    def __init__(self, runner: AioRunner, bootstrap: str, topic: str, partitions: int, isolation: str,
                 start: int, one_batch_fetches: bool) -> None:
        self.runner = runner
        self.partitions = [AioTopicPartition(topic, p) for p in range(partitions)]
        sizes = {"fetch_max_bytes": 1, "max_partition_fetch_bytes": 1} if one_batch_fetches else {}

        async def open_consumer() -> AIOKafkaConsumer:
            consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                        isolation_level=isolation, fetch_max_wait_ms=100, **sizes)
            await consumer.start()
            consumer.assign(self.partitions)
            for tp in self.partitions:
                consumer.seek(tp, start)
            return consumer

        self.consumer = runner.run(open_consumer())

    def poll(self, seconds: float) -> list[Record]:
        async def poll() -> list[Record]:
            records: list[Record] = []
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                batches = await self.consumer.getmany(timeout_ms=int(min(left, 0.2) * 1000) + 1)
                for messages in batches.values():
                    records += [(m.partition, m.offset, m.value) for m in messages]
            return records

        return self.runner.run(poll())

    def positions(self) -> dict[int, int]:
        async def positions() -> dict[int, int]:
            return {tp.partition: await self.consumer.position(tp) for tp in self.partitions}

        return self.runner.run(positions())

    def end_offsets(self) -> dict[int, int]:
        offsets = self.runner.run(self.consumer.end_offsets(self.partitions))
        return {tp.partition: offset for tp, offset in offsets.items()}

    def close(self) -> None:
        self.runner.run(self.consumer.stop())


@contextmanager
def reader(client: str, bootstrap: str, runner: AioRunner, topic: str, partitions: int, isolation: str,
           start: int = 0, one_batch_fetches: bool = False) -> Iterator[Reader]:
    """A consumer of `client`, assigned every partition of `topic` from offset `start`, no group. With
    `one_batch_fetches` it asks for 1 byte per fetch, so the broker returns one batch at a time (KIP-74)."""
    opened: Reader
    if client == "confluent":
        opened = ConfluentReader(bootstrap, topic, partitions, isolation, start, one_batch_fetches)
    elif client == "kafka-python":
        opened = KafkaPythonReader(bootstrap, topic, partitions, isolation, start, one_batch_fetches)
    else:
        opened = AioReader(runner, bootstrap, topic, partitions, isolation, start, one_batch_fetches)
    try:
        yield opened
    finally:
        opened.close()


def read_to(opened: Reader, ends: dict[int, int]) -> list[Record]:
    """Poll until the reader's position on every partition has reached `ends` (bounded)."""
    records: list[Record] = []
    deadline = time.monotonic() + READ_DEADLINE_S
    while True:
        records += opened.poll(0.3)
        positions = opened.positions()
        if all(positions.get(partition, -1) >= end for partition, end in ends.items()):
            return records
        assert time.monotonic() < deadline, f"reader stuck at {positions}, log ends at {ends}; got {records}"


def values_by_partition(records: list[Record]) -> dict[int, list[tuple[int, bytes]]]:
    by_partition: dict[int, list[tuple[int, bytes]]] = {}
    for partition, offset, value in records:
        by_partition.setdefault(partition, []).append((offset, value))
    return by_partition


@dataclass(frozen=True)
class Written:
    """What a scenario wrote to one partition: the records every reader must see, by isolation level."""

    committed: list[tuple[int, bytes]]
    everything: list[tuple[int, bytes]]
    end: int


# --- 1. commit and abort --------------------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_commit_and_abort_with_control_batches(oncelog_broker: str, topic_name: str, client: str) -> None:
    """A committed, a flushed-then-aborted and another committed transaction over two partitions: every
    client's read_committed consumer sees exactly the committed records, read_uncommitted sees all of them,
    each transaction marker takes one offset (end offsets count them, aborted and committed alike), and
    every client's consumer, at either isolation level, steps over the markers to the end of the log."""
    partitions = 2
    create_topic(oncelog_broker, topic_name, partitions)
    per_transaction = 5
    with aio_runner() as runner:
        with txn_producer(client, oncelog_broker, runner) as producer:
            producer.init()
            for name, commit in (("first", True), ("aborted", False), ("second", True)):
                producer.begin()
                for partition in range(partitions):
                    for index in range(per_transaction):
                        producer.send(topic_name, partition, f"{client}-{name}-p{partition}-{index}".encode())
                producer.flush()  # aborted records too must really reach the log
                producer.commit() if commit else producer.abort()

        expected: dict[int, Written] = {}
        for partition in range(partitions):
            def values(name: str, base: int, partition: int = partition) -> list[tuple[int, bytes]]:
                return [(base + index, f"{client}-{name}-p{partition}-{index}".encode())
                        for index in range(per_transaction)]

            # offsets 0-4 first, 5 COMMIT, 6-10 aborted, 11 ABORT, 12-16 second, 17 COMMIT
            expected[partition] = Written(committed=values("first", 0) + values("second", 12),
                                          everything=values("first", 0) + values("aborted", 6)
                                          + values("second", 12), end=3 * (per_transaction + 1))
            assert high_watermark(oncelog_broker, topic_name, partition) == expected[partition].end
            assert last_stable_offset(oncelog_broker, topic_name, partition) == expected[partition].end

        for reading_client in CLIENTS:
            for isolation in (READ_COMMITTED, READ_UNCOMMITTED):
                with reader(reading_client, oncelog_broker, runner, topic_name, partitions, isolation) as opened:
                    ends = opened.end_offsets()
                    assert ends == {p: written.end for p, written in expected.items()}, (reading_client, isolation)
                    got = values_by_partition(read_to(opened, ends))
                    assert opened.positions() == ends, (reading_client, isolation)
                for partition, written in expected.items():
                    wanted = written.committed if isolation == READ_COMMITTED else written.everything
                    assert got.get(partition) == wanted, (reading_client, isolation, partition)


@pytest.mark.parametrize("client", CLIENTS)
def test_interleaved_transactions_read_from_every_offset(oncelog_broker: str, topic_name: str, client: str) -> None:
    """Two transactional producers interleave batches on one partition with a non-transactional one; each
    producer has one committed and one aborted transaction, in opposite orders. A read_committed consumer
    of `client` started at every offset of the log, fetching one batch at a time, gets exactly the committed
    records from there on and reaches the end. This pins the aborted-transactions list of Fetch
    (docs/protocol.md, read_committed): an aborted transaction is listed only if it overlaps the fetched
    range — listing B's aborted transaction to a fetch that starts after its ABORT marker would hide B's
    later committed records."""
    create_topic(oncelog_broker, topic_name, 1)
    with aio_runner() as runner, txn_producer("confluent", oncelog_broker, runner) as a, \
            txn_producer("confluent", oncelog_broker, runner) as b:
        a.init()
        b.init()
        a.begin()
        b.begin()
        steps: list[tuple[TxnProducer | None, bytes]] = [
            (a, b"a0"), (b, b"b0"), (None, b"n0"), (a, b"a1"), (b, b"b1")]
        for producer, value in steps:  # one flush per record: one batch each, in this order
            if producer is None:
                plain_produce(oncelog_broker, topic_name, 0, [value])
            else:
                producer.send(topic_name, 0, value)
                producer.flush()
        a.commit()  # offset 5
        b.abort()  # offset 6
        a.begin()
        b.begin()
        a.send(topic_name, 0, b"a2")  # offset 7
        a.flush()
        b.send(topic_name, 0, b"b2")  # offset 8
        b.flush()
        a.abort()  # offset 9
        b.commit()  # offset 10
    end = 11
    assert (high_watermark(oncelog_broker, topic_name, 0), last_stable_offset(oncelog_broker, topic_name, 0)) == (
        end, end)
    committed = [(0, b"a0"), (2, b"n0"), (3, b"a1"), (8, b"b2")]
    with aio_runner() as runner:
        for start in range(end + 1):
            with reader(client, oncelog_broker, runner, topic_name, 1, READ_COMMITTED, start=start,
                        one_batch_fetches=True) as opened:
                got = [(offset, value) for _p, offset, value in read_to(opened, {0: end})]
            assert got == [(offset, value) for offset, value in committed if offset >= start], f"from {start}"


# --- 2. an open transaction holds back read_committed readers ---------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_open_transaction_holds_back_read_committed(oncelog_broker: str, topic_name: str, client: str) -> None:
    """While a transaction is open, the LSO stays at its first record: ListOffsets READ_COMMITTED and the
    client's end offsets report it, and a read_committed consumer of the same client gets nothing past it —
    not even non-transactional records another producer wrote later — until the commit, after which the
    same (still polling) consumer gets every record in offset order and reaches the end of the log."""
    create_topic(oncelog_broker, topic_name, 1)
    plain_produce(oncelog_broker, topic_name, 0, [b"before"])
    with aio_runner() as runner, txn_producer(client, oncelog_broker, runner) as producer:
        producer.init()
        producer.begin()
        for index in range(3):
            producer.send(topic_name, 0, b"txn-%d" % index)
        producer.flush()
        plain_produce(oncelog_broker, topic_name, 0, [b"after-0", b"after-1"])

        assert high_watermark(oncelog_broker, topic_name, 0) == 6
        assert last_stable_offset(oncelog_broker, topic_name, 0) == 1, "LSO = first offset of the open txn"
        with reader(client, oncelog_broker, runner, topic_name, 1, READ_COMMITTED) as opened:
            assert opened.end_offsets() == {0: 1}, "read_committed end offset is the LSO"
            seen = read_to(opened, {0: 1})
            seen += opened.poll(QUIET_POLL_S)
            assert [(offset, value) for _p, offset, value in seen] == [(0, b"before")]
            assert opened.positions() == {0: 1}

            producer.commit()
            assert high_watermark(oncelog_broker, topic_name, 0) == 7
            assert last_stable_offset(oncelog_broker, topic_name, 0) == 7
            seen = read_to(opened, {0: 7})
            assert [(offset, value) for _p, offset, value in seen] == [
                (1, b"txn-0"), (2, b"txn-1"), (3, b"txn-2"), (4, b"after-0"), (5, b"after-1")]
            assert opened.end_offsets() == {0: 7}


# --- 3. fencing by a second instance ----------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_second_instance_fences_the_first(oncelog_broker: str, topic_name: str, client: str) -> None:
    """A second producer with the same transactional.id initialises while the first has a transaction open
    with flushed records: the first one's open transaction is aborted (its records are in the log but never
    visible read_committed), the second commits normally, and the first producer's next operation (another
    record, then commit) fails with the client's fencing error and writes nothing."""
    create_topic(oncelog_broker, topic_name, 2)
    transactional_id = f"fenced-{uuid.uuid4().hex[:8]}"
    with aio_runner() as runner, \
            txn_producer(client, oncelog_broker, runner, transactional_id) as first, \
            txn_producer(client, oncelog_broker, runner, transactional_id) as second:
        first.init()
        first_epoch = describe_transaction(oncelog_broker, transactional_id).producer_epoch
        first.begin()
        first.send(topic_name, 0, b"zombie-0")
        first.send(topic_name, 1, b"zombie-1")
        first.flush()

        second.init()  # fences the first instance and aborts its transaction
        # The abort used epoch + 1, the client's retried InitProducerId bumped again (Kafka's fencing rule).
        fenced = describe_transaction(oncelog_broker, transactional_id)
        assert (fenced.transaction_state, fenced.producer_epoch) == ("Empty", first_epoch + 2)
        second.begin()
        second.send(topic_name, 0, b"new-0")
        second.send(topic_name, 1, b"new-1")
        second.flush()
        second.commit()

        with pytest.raises(Exception) as raised:  # each client raises its own type
            first.send(topic_name, 0, b"zombie-late")
            first.commit()
        assert is_fencing_error(client, raised.value), repr(raised.value)

    for partition in (0, 1):
        # zombie record, ABORT marker, new record, COMMIT marker (the late zombie record was refused)
        assert high_watermark(oncelog_broker, topic_name, partition) == 4
        assert last_stable_offset(oncelog_broker, topic_name, partition) == 4
    with aio_runner() as runner, reader("confluent", oncelog_broker, runner, topic_name, 2, READ_COMMITTED) as c:
        got = values_by_partition(read_to(c, {0: 4, 1: 4}))
    assert got == {0: [(2, b"new-0")], 1: [(2, b"new-1")]}
    with aio_runner() as runner, reader("confluent", oncelog_broker, runner, topic_name, 2, READ_UNCOMMITTED) as c:
        got = values_by_partition(read_to(c, {0: 4, 1: 4}))
    assert got == {0: [(0, b"zombie-0"), (2, b"new-0")], 1: [(0, b"zombie-1"), (2, b"new-1")]}


# --- 4. a hung transaction times out ----------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_hung_transaction_is_aborted_after_its_timeout(topic_name: str, client: str) -> None:
    """A producer opens a transaction (transaction.timeout.ms = 2 s), writes, and then does nothing. The
    broker scans every 200 ms and aborts it once its timeout has passed: a read_committed reader that was
    held at the LSO advances past the aborted records to the non-transactional records written after them,
    the LSO catches up with the high watermark, and the hung producer is fenced when it tries to commit."""
    timeout_ms = 2000
    with embedded_broker(transaction_abort_timed_out_transaction_cleanup_interval_ms="200") as bootstrap:
        create_topic(bootstrap, topic_name, 1)
        with aio_runner() as runner, txn_producer(client, bootstrap, runner, timeout_ms=timeout_ms) as hung:
            hung.init()
            hung.begin()
            hung.send(topic_name, 0, b"hung-0")
            hung.send(topic_name, 0, b"hung-1")
            hung.flush()
            started = time.monotonic()
            plain_produce(bootstrap, topic_name, 0, [b"later"])
            assert last_stable_offset(bootstrap, topic_name, 0) == 0

            with reader("confluent", bootstrap, runner, topic_name, 1, READ_COMMITTED) as opened:
                # hung-0, hung-1, later, ABORT marker
                seen = read_to(opened, {0: 4})
            assert [(offset, value) for _p, offset, value in seen] == [(2, b"later")]
            assert time.monotonic() - started >= timeout_ms / 1000 * 0.9, "aborted before its timeout"
            assert high_watermark(bootstrap, topic_name, 0) == 4
            assert last_stable_offset(bootstrap, topic_name, 0) == 4
            # The markers are visible before CompleteAbort is durable (as in Kafka): give it a moment.
            deadline, hung_id = time.monotonic() + 5, hung.transactional_id
            while (state := describe_transaction(bootstrap, hung_id).transaction_state) != "CompleteAbort":
                assert state == "PrepareAbort", state
                assert time.monotonic() < deadline, f"abort never completed: {state}"
                time.sleep(0.05)

            with pytest.raises(Exception) as raised:  # each client raises its own type
                hung.commit()
            assert is_fencing_error(client, raised.value), repr(raised.value)
        assert high_watermark(bootstrap, topic_name, 0) == 4, "the fenced commit wrote nothing"


# --- 5. offsets in a transaction ---------------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_offsets_sent_in_a_transaction(oncelog_broker: str, topic_name: str, client: str) -> None:
    """`send_offsets_to_transaction`: while the transaction is open, OffsetFetch v7 with RequireStable
    answers UNSTABLE_OFFSET_COMMIT (88) for the partition and without it the old committed offset (none);
    after commit the offset is the group's committed offset (also for confluent's `committed()`, which uses
    RequireStable in read_committed mode); offsets of an aborted transaction never become visible."""
    create_topic(oncelog_broker, topic_name, 2)
    output = f"{topic_name}-out"
    create_topic(oncelog_broker, output, 1)
    group_id = f"eos-group-{uuid.uuid4().hex[:6]}"
    with aio_runner() as runner, txn_producer(client, oncelog_broker, runner) as producer:
        producer.init()
        producer.begin()
        producer.send(output, 0, b"out-1")
        producer.send_offsets({(topic_name, 0): 5, (topic_name, 1): 7}, group_id)
        producer.flush()
        assert offset_fetch(oncelog_broker, group_id, topic_name, [0, 1], require_stable=True) == {
            0: (ErrorCode.unstable_offset_commit, -1), 1: (ErrorCode.unstable_offset_commit, -1)}
        assert int(ErrorCode.unstable_offset_commit) == 88
        assert offset_fetch(oncelog_broker, group_id, topic_name, [0, 1], require_stable=False) == {
            0: (0, -1), 1: (0, -1)}
        producer.commit()
        committed = {0: (0, 5), 1: (0, 7)}
        assert offset_fetch(oncelog_broker, group_id, topic_name, [0, 1], require_stable=True) == committed
        assert offset_fetch(oncelog_broker, group_id, topic_name, [0, 1], require_stable=False) == committed
        assert confluent_committed(oncelog_broker, group_id, topic_name, 2) == {0: 5, 1: 7}

        producer.begin()
        producer.send(output, 0, b"out-aborted")
        producer.send_offsets({(topic_name, 0): 9}, group_id)
        producer.flush()
        assert offset_fetch(oncelog_broker, group_id, topic_name, [0, 1], require_stable=True) == {
            0: (ErrorCode.unstable_offset_commit, -1), 1: (0, 7)}
        producer.abort()
        assert offset_fetch(oncelog_broker, group_id, topic_name, [0, 1], require_stable=True) == committed
        assert confluent_committed(oncelog_broker, group_id, topic_name, 2) == {0: 5, 1: 7}

        producer.begin()
        producer.send_offsets({(topic_name, 1): 11}, group_id)  # offsets only, no records
        producer.commit()
        assert offset_fetch(oncelog_broker, group_id, topic_name, [0, 1], require_stable=True) == {
            0: (0, 5), 1: (0, 11)}


def confluent_committed(bootstrap: str, group_id: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group_id, "enable.auto.commit": False,
                         "isolation.level": READ_COMMITTED})
    try:
        answer = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], CLIENT_TIMEOUT_S)
    finally:
        consumer.close()
    assert all(tp.error is None for tp in answer), answer
    return {tp.partition: tp.offset for tp in answer}


# --- 6. DescribeTransactions / ListTransactions ---------------------------------------------------------------------


def test_describe_and_list_transactions(oncelog_broker: str, topic_name: str) -> None:
    """DescribeTransactions v0 and ListTransactions v1 follow one transactional id through Empty (after
    InitProducerId), Ongoing (with its partitions and a start time) and CompleteCommit; state filters
    select it; an unknown id is TRANSACTIONAL_ID_NOT_FOUND and an unknown state filter is echoed back."""
    create_topic(oncelog_broker, topic_name, 3)
    transactional_id = f"described-{uuid.uuid4().hex[:8]}"
    with aio_runner() as runner, txn_producer("confluent", oncelog_broker, runner, transactional_id,
                                              timeout_ms=45_000) as producer:
        producer.init()
        empty = describe_transaction(oncelog_broker, transactional_id)
        assert (empty.error_code, empty.transaction_state) == (ErrorCode.none, "Empty")
        producer_id = int(empty.producer_id)
        assert producer_id >= 0 and int(empty.producer_epoch) >= 0
        assert list_transactions(oncelog_broker)[transactional_id] == (producer_id, "Empty")

        producer.begin()
        producer.send(topic_name, 0, b"a")
        producer.send(topic_name, 2, b"b")
        producer.flush()
        ongoing = describe_transaction(oncelog_broker, transactional_id)
        assert (ongoing.error_code, ongoing.transaction_state) == (ErrorCode.none, "Ongoing")
        assert (int(ongoing.producer_id), int(ongoing.producer_epoch)) == (producer_id, int(empty.producer_epoch))
        assert ongoing.transaction_timeout_ms == 45_000
        assert time.time() - 60 < ongoing.transaction_start_time_ms / 1000 <= time.time() + 1
        assert _partitions(ongoing) == [(topic_name, 0), (topic_name, 2)]
        assert list_transactions(oncelog_broker)[transactional_id] == (producer_id, "Ongoing")
        assert transactional_id in list_transactions(oncelog_broker, ["Ongoing"])
        assert transactional_id not in list_transactions(oncelog_broker, ["CompleteCommit"])

        producer.commit()
        done = describe_transaction(oncelog_broker, transactional_id)
        assert (done.error_code, done.transaction_state) == (ErrorCode.none, "CompleteCommit")
        assert _partitions(done) == []
        assert list_transactions(oncelog_broker)[transactional_id] == (producer_id, "CompleteCommit")
        assert transactional_id in list_transactions(oncelog_broker, ["CompleteCommit"])
        assert transactional_id not in list_transactions(oncelog_broker, ["Ongoing"])

    missing = describe_transaction(oncelog_broker, "no-such-transactional-id")
    assert missing.error_code == ErrorCode.transactional_id_not_found
    with KafkaClient(oncelog_broker) as client:
        response = client.request(66, 1, {"state_filters": ["Nonsense"], "producer_id_filters": [],
                                          "duration_filter": -1})
    assert list(response.unknown_state_filters) == ["Nonsense"]

