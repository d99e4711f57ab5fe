"""Idempotent producers against lost acks and a killed broker: every value is stored exactly once.

The raw-protocol tests pin the broker's answers (docs/protocol.md, Idempotent producers): a retried batch is
answered NONE with its original offset and not stored again, a sequence gap is OUT_OF_ORDER_SEQUENCE_NUMBER
(45), an older epoch INVALID_PRODUCER_EPOCH (47), and DescribeProducers shows what the partition knows.

The client tests put `LossyProxy` between a real client and the broker and lose Produce responses after
the broker wrote the batch, so the client must retry batches that are already in the log. The log is then
read directly from the broker (not through the proxy) with raw Fetch requests.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import Producer
from kafka import KafkaProducer

from oncelog.client import KafkaClient
from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_request, decode_response, encode_request
from oncelog.protocol.records import build_batch, iter_batches, iter_records
from oncelog.testing import BrokerProcess
from tests.faults.proxy import LossyProxy
from tests.helpers import create_topic

VALUE_COUNT = 2000
CLIENT_DEADLINE_S = 40.0


# --- raw protocol helpers ---------------------------------------------------------------------------------


def produce_raw(client: KafkaClient, topic: str, records: bytes) -> tuple[int, int]:
    """(error code, base offset) of a Produce v7 with acks=all of one batch to partition 0."""
    response = client.request(0, 7, {
        "transactional_id": None, "acks": -1, "timeout": 5000,
        "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": records}]}],
    })
    partition = response.responses[0].partition_responses[0]
    return int(partition.error_code), int(partition.base_offset)


def init_producer_id(client: KafkaClient) -> int:
    response = client.request(22, 1, {"transactional_id": None, "transaction_timeout": 60_000})
    assert response.error_code == ErrorCode.none
    assert int(response.producer_epoch) == 0
    return int(response.producer_id)


def latest_offset(client: KafkaClient, topic: str) -> int:
    response = client.request(2, 7, {"replica_id": -1, "isolation_level": 0, "topics": [
        {"name": topic, "partitions": [{"partition_index": 0, "current_leader_epoch": -1, "timestamp": -1}]}]})
    partition = response.topics[0].partitions[0]
    assert partition.error_code == ErrorCode.none
    return int(partition.offset)


@dataclass(frozen=True)
class StoredRecord:
    offset: int
    value: bytes | None
    producer_id: int
    producer_epoch: int
    sequence: int


def read_partition(bootstrap: str, topic: str) -> list[StoredRecord]:
    """Every record of partition 0, from offset 0 to the high watermark, with Fetch v11."""
    stored: list[StoredRecord] = []
    with KafkaClient(bootstrap) as client:
        end = latest_offset(client, topic)
        offset = 0
        deadline = time.monotonic() + 30
        while offset < end:
            assert time.monotonic() < deadline, f"could not read {topic} up to {end}"
            response = client.request(1, 11, {
                "replica_id": -1, "max_wait": 0, "min_bytes": 0, "max_bytes": 8 << 20, "isolation_level": 0,
                "session_id": 0, "session_epoch": -1, "forgotten_topics_data": [], "rack_id": "",
                "topics": [{"topic": topic, "partitions": [
                    {"partition": 0, "fetch_offset": offset, "partition_max_bytes": 8 << 20}]}],
            })
            partition = response.responses[0].partitions[0]
            assert partition.error_code == ErrorCode.none
            data = bytes(partition.records or b"")
            for position, header in iter_batches(data):
                assert header.compression == 0, "the tests produce uncompressed batches"
                for record in iter_records(data, position):
                    if record.offset >= offset:
                        sequence = -1
                        if header.base_sequence >= 0:
                            sequence = (header.base_sequence + record.offset - header.base_offset) % (1 << 31)
                        stored.append(StoredRecord(
                            record.offset, record.value, header.producer_id, header.producer_epoch, sequence))
                offset = max(offset, header.next_offset)
    return stored


def idempotent_batch(producer_id: int, epoch: int, base_sequence: int, values: list[bytes]) -> bytes:
    return build_batch([(None, value) for value in values], timestamp_ms=1_700_000_000_000,
                       producer_id=producer_id, producer_epoch=epoch, base_sequence=base_sequence)


# --- the broker's answers ---------------------------------------------------------------------------------


def test_retried_batch_gets_its_original_offset_and_is_stored_once(oncelog_broker: str, topic_name: str) -> None:
    """A batch sent again (as after a lost ack) is answered NONE with the first answer's base offset."""
    create_topic(oncelog_broker, topic_name)
    with KafkaClient(oncelog_broker) as client:
        assert produce_raw(client, topic_name, build_batch([(None, b"plain")])) == (ErrorCode.none, 0)
        producer_id = init_producer_id(client)
        first = idempotent_batch(producer_id, 0, 0, [b"a", b"b", b"c"])
        assert produce_raw(client, topic_name, first) == (ErrorCode.none, 1)
        assert produce_raw(client, topic_name, first) == (ErrorCode.none, 1)
        second = idempotent_batch(producer_id, 0, 3, [b"d"])
        assert produce_raw(client, topic_name, second) == (ErrorCode.none, 4)
        assert produce_raw(client, topic_name, first) == (ErrorCode.none, 1), "still in the five-batch window"
        assert produce_raw(client, topic_name, second) == (ErrorCode.none, 4)
        assert latest_offset(client, topic_name) == 5
    stored = read_partition(oncelog_broker, topic_name)
    assert [(record.offset, record.value) for record in stored] == [
        (0, b"plain"), (1, b"a"), (2, b"b"), (3, b"c"), (4, b"d")]
    assert [record.sequence for record in stored] == [-1, 0, 1, 2, 3]


def test_retries_of_the_last_five_batches_are_duplicates(oncelog_broker: str, topic_name: str) -> None:
    """A client with five requests in flight may have to retry all five: each is answered with its own
    original offset. The sixth-newest batch has left the window: OUT_OF_ORDER_SEQUENCE_NUMBER."""
    create_topic(oncelog_broker, topic_name)
    with KafkaClient(oncelog_broker) as client:
        producer_id = init_producer_id(client)
        batches = [idempotent_batch(producer_id, 0, 2 * index, [b"%d-a" % index, b"%d-b" % index])
                   for index in range(7)]
        for index, batch in enumerate(batches):
            assert produce_raw(client, topic_name, batch) == (ErrorCode.none, 2 * index)
        for index in range(2, 7):
            assert produce_raw(client, topic_name, batches[index]) == (ErrorCode.none, 2 * index)
        for index in range(2):
            assert produce_raw(client, topic_name, batches[index])[0] == ErrorCode.out_of_order_sequence_number
        assert latest_offset(client, topic_name) == 14
    assert [record.sequence for record in read_partition(oncelog_broker, topic_name)] == list(range(14))


def test_pipelined_batches_and_their_pipelined_retries(oncelog_broker: str, topic_name: str) -> None:
    """Five Produce requests in flight on one connection (what max.in.flight=5 sends), then all five
    again plus a new batch, as a client does after losing the connection: responses come in request
    order, the retries get their original offsets and only the new batch is written."""
    create_topic(oncelog_broker, topic_name)

    def produce_request(correlation_id: int, records: bytes) -> bytes:
        request = build_request(0, 7, {
            "transactional_id": None, "acks": -1, "timeout": 5000,
            "topic_data": [{"name": topic_name, "partition_data": [{"index": 0, "records": records}]}],
        })
        return encode_request(0, 7, correlation_id, "pipeline", request)

    with KafkaClient(oncelog_broker) as client:
        producer_id = init_producer_id(client)
        batches = [idempotent_batch(producer_id, 0, 3 * index, [b"%d-%d" % (index, n) for n in range(3)])
                   for index in range(6)]
        rounds = [list(enumerate(batches[:5])), list(enumerate(batches))]
        answers: list[list[tuple[int, int, int]]] = []
        correlation_id = 100
        for batch_round in rounds:
            sent = []
            for _index, batch in batch_round:
                correlation_id += 1
                client.send_raw(produce_request(correlation_id, batch))
                sent.append(correlation_id)
            received = []
            for _ in sent:
                received_id, response = decode_response(client.receive_frame(), 0, 7)
                partition = response.responses[0].partition_responses[0]
                received.append((received_id, int(partition.error_code), int(partition.base_offset)))
            assert [received_id for received_id, _code, _offset in received] == sent, "responses out of order"
            answers.append(received)
        assert [(code, offset) for _id, code, offset in answers[0]] == [(0, 3 * index) for index in range(5)]
        assert [(code, offset) for _id, code, offset in answers[1]] == [(0, 3 * index) for index in range(6)]
        assert latest_offset(client, topic_name) == 18
    assert [record.sequence for record in read_partition(oncelog_broker, topic_name)] == list(range(18))


def test_sequence_gap_is_out_of_order(oncelog_broker: str, topic_name: str) -> None:
    create_topic(oncelog_broker, topic_name)
    with KafkaClient(oncelog_broker) as client:
        producer_id = init_producer_id(client)
        assert produce_raw(client, topic_name, idempotent_batch(producer_id, 0, 0, [b"a", b"b", b"c"])) == (0, 0)
        gap = idempotent_batch(producer_id, 0, 5, [b"f"])
        assert int(ErrorCode.out_of_order_sequence_number) == 45
        assert produce_raw(client, topic_name, gap)[0] == 45
        assert latest_offset(client, topic_name) == 3, "a rejected batch is not stored"
        assert produce_raw(client, topic_name, idempotent_batch(producer_id, 0, 3, [b"d"])) == (0, 3)
        assert produce_raw(client, topic_name, gap)[0] == 45
        no_sequence = idempotent_batch(producer_id, 0, -1, [b"e"])
        # An idempotent batch needs a base sequence.
        assert produce_raw(client, topic_name, no_sequence)[0] == ErrorCode.invalid_record
        assert latest_offset(client, topic_name) == 4


def test_stale_epoch_is_rejected(oncelog_broker: str, topic_name: str) -> None:
    """After epoch 1 was written (a client-side epoch bump restarts at sequence 0), epoch 0 is fenced,
    even for a retry of a batch it wrote before."""
    create_topic(oncelog_broker, topic_name)
    with KafkaClient(oncelog_broker) as client:
        producer_id = init_producer_id(client)
        old = idempotent_batch(producer_id, 0, 0, [b"a", b"b"])
        assert produce_raw(client, topic_name, old) == (0, 0)
        assert produce_raw(client, topic_name, idempotent_batch(producer_id, 1, 0, [b"c"])) == (0, 2)
        assert produce_raw(client, topic_name, idempotent_batch(producer_id, 0, 2, [b"x"]))[0] == 47
        assert int(ErrorCode.invalid_producer_epoch) == 47
        assert produce_raw(client, topic_name, old)[0] == 47
        assert produce_raw(client, topic_name, idempotent_batch(producer_id, 2, 3, [b"y"]))[0] == 45
        assert latest_offset(client, topic_name) == 3


def test_describe_producers_shows_epoch_and_last_sequence(oncelog_broker: str, topic_name: str) -> None:
    create_topic(oncelog_broker, topic_name)
    with KafkaClient(oncelog_broker) as client:
        first = init_producer_id(client)
        second = init_producer_id(client)
        assert first != second
        assert produce_raw(client, topic_name, idempotent_batch(first, 0, 0, [b"a", b"b"]))[0] == 0
        assert produce_raw(client, topic_name, idempotent_batch(first, 0, 2, [b"c"]))[0] == 0
        assert produce_raw(client, topic_name, idempotent_batch(second, 0, 0, [b"d"]))[0] == 0
        assert produce_raw(client, topic_name, idempotent_batch(second, 1, 0, [b"e", b"f", b"g"]))[0] == 0
        assert produce_raw(client, topic_name, build_batch([(None, b"plain")]))[0] == 0
        response = client.request(61, 0, {"topics": [{"name": topic_name, "partition_indexes": [0, 7]}]})
    partitions = {int(p.partition_index): p for p in response.topics[0].partitions}
    assert partitions[7].error_code == ErrorCode.unknown_topic_or_partition
    assert partitions[0].error_code == ErrorCode.none
    producers = sorted(
        (int(p.producer_id), int(p.producer_epoch), int(p.last_sequence), int(p.current_txn_start_offset))
        for p in partitions[0].active_producers
    )
    assert producers == sorted([(first, 0, 2, -1), (second, 1, 2, -1)])


def test_producer_state_survives_kill_9_and_clean_restart(tmp_path: Path, topic_name: str) -> None:
    """After SIGKILL the producer state is rebuilt by replaying the log: the last five batches are still
    duplicates. After a clean stop it comes from the shutdown snapshot, which (as in Kafka) keeps each
    producer's last batch only. Producer ids are never handed out twice across restarts."""
    broker = BrokerProcess(tmp_path / "data")
    bootstrap = broker.start()
    try:
        create_topic(bootstrap, topic_name)
        with KafkaClient(bootstrap) as client:
            producer_id = init_producer_id(client)
            batches = [idempotent_batch(producer_id, 0, 2 * index, [b"%d-a" % index, b"%d-b" % index])
                       for index in range(7)]
            for index, batch in enumerate(batches):
                assert produce_raw(client, topic_name, batch) == (ErrorCode.none, 2 * index)
        broker.kill()

        with KafkaClient(broker.start()) as client:
            for index in range(2, 7):
                assert produce_raw(client, topic_name, batches[index]) == (ErrorCode.none, 2 * index)
            assert produce_raw(client, topic_name, batches[1])[0] == ErrorCode.out_of_order_sequence_number
            assert latest_offset(client, topic_name) == 14
            newcomer = init_producer_id(client)
            assert newcomer > producer_id
            assert produce_raw(client, topic_name, idempotent_batch(newcomer, 0, 0, [b"new"])) == (0, 14)
            last = idempotent_batch(producer_id, 0, 14, [b"7-a", b"7-b"])
            assert produce_raw(client, topic_name, last) == (ErrorCode.none, 15)
        assert broker.terminate() == 0

        with KafkaClient(broker.start()) as client:
            assert produce_raw(client, topic_name, last) == (ErrorCode.none, 15)
            assert produce_raw(client, topic_name, batches[6])[0] == ErrorCode.out_of_order_sequence_number
            assert latest_offset(client, topic_name) == 17
            assert init_producer_id(client) > newcomer
        stored = read_partition(broker.bootstrap, topic_name)
        assert [record.sequence for record in stored if record.producer_id == producer_id] == list(range(16))
    finally:
        if broker.process is not None:
            broker.terminate()


# --- real clients behind a lossy proxy --------------------------------------------------------------------


Hook = Callable[[int], None] | None
"""`during(index)` runs after value `index` is handed to the producer; the client's I/O keeps running."""


def produce_with_confluent(bootstrap: str, topic: str, values: list[bytes], during: Hook = None
                           ) -> dict[bytes, int | str]:
    """Send `values` in order to partition 0; return value → reported offset, or the error's name."""
    producer = Producer({
        "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 2,
        "batch.num.messages": 20, "message.timeout.ms": int(CLIENT_DEADLINE_S * 1000),
        "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 500, "retry.backoff.ms": 20,
    })
    reports: dict[bytes, int | str] = {}

    def report(error: Any, message: Any) -> None:
        reports[message.value()] = message.offset() if error is None else str(error.name())

    for index, value in enumerate(values):
        while True:
            try:
                producer.produce(topic, value=value, partition=0, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        if during is not None:
            during(index)
    assert producer.flush(CLIENT_DEADLINE_S) == 0, "some records were never reported"
    return reports


def produce_with_kafka_python(bootstrap: str, topic: str, values: list[bytes], during: Hook = None
                              ) -> dict[bytes, int | str]:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", batch_size=512, linger_ms=2,
                             reconnect_backoff_max_ms=500, retry_backoff_ms=20)
    assert producer.config["enable_idempotence"], "kafka-python producers are idempotent by default"
    try:
        futures = []
        for index, value in enumerate(values):
            futures.append(producer.send(topic, value=value, partition=0))
            if during is not None:
                during(index)
        producer.flush(CLIENT_DEADLINE_S)
        reports: dict[bytes, int | str] = {}
        for value, future in zip(values, futures, strict=True):
            assert future.is_done, "kafka-python did not finish a send within the deadline"
            reports[value] = future.value.offset if future.succeeded() else repr(future.exception)
        return reports
    finally:
        producer.close(5)


def produce_with_aiokafka(bootstrap: str, topic: str, values: list[bytes], during: Hook = None
                          ) -> dict[bytes, int | str]:
    async def run() -> dict[bytes, int | str]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all",
                                    max_batch_size=512, linger_ms=2, retry_backoff_ms=20)
        await producer.start()
        try:
            async with asyncio.timeout(CLIENT_DEADLINE_S):
                futures = []
                for index, value in enumerate(values):
                    futures.append(await producer.send(topic, value=value, partition=0))
                    if during is not None:
                        await asyncio.to_thread(during, index)
                results = await asyncio.gather(*futures, return_exceptions=True)
        finally:
            await producer.stop()
        return {
            value: result.offset if not isinstance(result, BaseException) else repr(result)
            for value, result in zip(values, results, strict=True)
        }

    return asyncio.run(run())


PRODUCERS: dict[str, Callable[[str, str, list[bytes], Hook], dict[bytes, int | str]]] = {
    "confluent-kafka": produce_with_confluent,
    "kafka-python": produce_with_kafka_python,
    "aiokafka": produce_with_aiokafka,
}


def assert_exactly_once_in_order(stored: list[StoredRecord], values: list[bytes],
                                 reports: dict[bytes, int | str]) -> None:
    """Each value at most once in the log, in send order; each delivered value exactly once, at the
    offset the client was told; offsets dense from 0."""
    stored_values = [record.value for record in stored]
    assert [record.offset for record in stored] == list(range(len(stored)))
    duplicates = [value for value, count in Counter(stored_values).items() if count > 1]
    assert not duplicates, f"{len(duplicates)} values stored twice, e.g. {sorted(duplicates, key=str)[:3]}"
    position = {value: index for index, value in enumerate(values)}
    assert all(value in position for value in stored_values), "the log holds a value nobody sent"
    order = [position[value] for value in stored_values if value is not None]
    assert order == sorted(order), "values are stored out of send order"
    offset_of = {record.value: record.offset for record in stored}
    wrong = {value: (reported, offset_of.get(value)) for value, reported in reports.items()
             if isinstance(reported, int) and offset_of.get(value) != reported}
    assert not wrong, f"{len(wrong)} delivered values not stored at their reported offset: {list(wrong.items())[:3]}"


@pytest.mark.parametrize("client", sorted(PRODUCERS))
def test_lost_produce_responses_do_not_duplicate(oncelog_broker: str, topic_name: str, client: str) -> None:
    """Six times, the proxy loses the response to a Produce request the broker has written (and any
    other Produce response behind it on that connection, up to 5), then cuts the connection; the client
    reconnects and retries. Every send succeeds and each value is stored exactly once, in send order, at
    the offset the client was told. (With one partition these clients keep a single Produce request in
    flight, so each cut loses one ack; five in flight are covered by the raw pipelined test above.)"""
    create_topic(oncelog_broker, topic_name)
    values = [f"{client}-{index:05d}".encode() for index in range(VALUE_COUNT)]
    with LossyProxy(oncelog_broker) as proxy:
        proxy.drop_produce_responses(every=7, limit=6, burst=5)
        reports = PRODUCERS[client](proxy.bootstrap, topic_name, values, None)
        assert proxy.metadata_rewritten >= 1
        assert proxy.cuts == 6, f"only {proxy.cuts} cuts in {proxy.produce_requests} requests"
    failed = {value: report for value, report in reports.items() if not isinstance(report, int)}
    assert not failed, f"{len(failed)} sends failed, e.g. {list(failed.items())[:3]}"
    assert len(reports) == VALUE_COUNT
    stored = read_partition(oncelog_broker, topic_name)
    assert [record.value for record in stored] == values
    assert_exactly_once_in_order(stored, values, reports)
    assert len({record.producer_id for record in stored}) == 1, "the client changed producer id"


def wait_until(condition: Callable[[], bool], poll: Callable[[], None], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        poll()


@pytest.mark.parametrize(("client", "stop"), [
    *((client, "kill") for client in sorted(PRODUCERS)),
    ("confluent-kafka", "terminate"),
])
def test_retry_after_restart_is_a_duplicate(tmp_path: Path, topic_name: str, client: str, stop: str) -> None:
    """Mid-load, the proxy loses the ack of a batch the broker wrote and keeps the client away from the
    broker; the broker is SIGKILLed (or stopped cleanly) and restarted on a new port, behind the same
    proxy address. The client's retries of the batches in flight then meet a broker that rebuilt its
    producer state from the log (or from its shutdown snapshot), and must be answered as duplicates at
    their original offsets. Some other responses are lost before and after the restart too. No value may
    be stored twice; each delivered value is stored once, at its reported offset, in send order."""
    broker = BrokerProcess(tmp_path / "data")
    bootstrap = broker.start()
    try:
        create_topic(bootstrap, topic_name)
        values = [f"{client}-{stop}-{index:05d}".encode() for index in range(2 * VALUE_COUNT)]
        with LossyProxy(bootstrap) as proxy:
            proxy.drop_produce_responses(every=11, limit=4, burst=5)
            restarted: list[str] = []

            def kill_and_restart_in_the_middle(index: int) -> None:
                if index != len(values) // 2:
                    return
                # Half the values are queued; let a good part of them reach the log first.
                wait_until(lambda: proxy.produce_requests >= 40, lambda: time.sleep(0.005), 20, "40 requests")
                proxy.drop_next_produce_responses(1, burst=5, then_cut_upstream=True)
                wait_until(lambda: proxy.upstream is None, lambda: time.sleep(0.005), 20, "a lost ack")
                if stop == "kill":
                    broker.kill()
                else:
                    assert broker.terminate() == 0
                restarted.append(broker.start())
                proxy.upstream = restarted[0]

            reports = PRODUCERS[client](proxy.bootstrap, topic_name, values, kill_and_restart_in_the_middle)
            assert restarted, "the broker was never restarted"
            assert proxy.cuts == 5
        failed = {value: report for value, report in reports.items() if not isinstance(report, int)}
        assert not failed, f"{len(failed)} sends failed, e.g. {list(failed.items())[:3]}"
        stored = read_partition(restarted[0], topic_name)
        assert_exactly_once_in_order(stored, values, reports)
        assert [record.value for record in stored] == values
        assert len({record.producer_id for record in stored}) == 1, "the client changed producer id"
    finally:
        if broker.process is not None:
            broker.terminate()
