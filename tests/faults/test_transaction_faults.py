"""Transactions under faults: a processor SIGKILLed mid-stream, a broker killed between the decision to end
a transaction and its markers or with a transaction open, and a lost EndTxn response
(docs/protocol.md, Transactions and Transactional offsets).

- `eos_processor.py` (consume → transform → produce with `send_offsets_to_transaction`) runs as a
  subprocess and is SIGKILLed at seeded random moments; each restart fences the killed instance and aborts
  its open transaction, and the group resumes from the offsets committed with the last committed
  transaction. The output, read_committed, must hold every input record exactly once, in input order.
- `ONCELOG_FAULT_INJECTION=after-prepare-before-markers` makes the broker process exit right after
  PrepareCommit/PrepareAbort is durable and before any marker is written; on restart the coordinator must
  write the markers to every partition (the `__consumer_offsets` one included) and complete the
  transaction. A broker SIGKILLed with a transaction Ongoing must come back with it still open (LSO held,
  offsets pending) until a new instance or the timeout scan aborts it.
- `EndTxnResponseDropper` (a small proxy defined here: `proxy.py` loses Produce responses only) swallows
  the response to an EndTxn and closes the connection, so the client must retry an EndTxn the broker has
  already completed; the retry must be answered NONE and write nothing more (also pinned with raw EndTxn).

The client adapters and wire helpers come from the integration tests (`tests/integration/test_transactions.py`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import queue
import random
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from oncelog.client import KafkaClient
from oncelog.errors import ErrorCode
from oncelog.protocol.codec import decode_response, encode_response
from oncelog.protocol.records import build_batch
from oncelog.server.app import SHUTDOWN_GRACE_S
from oncelog.testing import BrokerProcess, embedded_broker
from tests.helpers import create_topic
from tests.integration.test_transactions import aio_runner, describe_transaction, list_offset, txn_producer

PROCESSOR = Path(__file__).with_name("eos_processor.py")
CLIENT_TIMEOUT_S = 15.0
READ_DEADLINE_S = 30.0
QUIET_POLL_S = 1.5
"""How long a read_committed consumer must get nothing while a transaction holds the LSO back."""


# --- shared helpers ---------------------------------------------------------------------------------------------


def offset_fetch_stable(bootstrap: str, group_id: str, topic: str, partitions: int) -> dict[int, tuple[int, int]]:
    """OffsetFetch v7 with RequireStable: partition → (error code, committed offset)."""
    with KafkaClient(bootstrap) as client:
        response = client.request(9, 7, {"group_id": group_id, "require_stable": True,
                                         "topics": [{"name": topic, "partition_indexes": list(range(partitions))}]})
    return {int(p.partition_index): (int(p.error_code), int(p.committed_offset))
            for t in response.topics for p in t.partitions}


def transaction_state(bootstrap: str, transactional_id: str) -> tuple[str, int]:
    """(state, producer epoch) from DescribeTransactions v0."""
    described = describe_transaction(bootstrap, transactional_id)
    assert described.error_code == ErrorCode.none, described
    return described.transaction_state, described.producer_epoch


def read_all(bootstrap: str, topic: str, partitions: int,
             isolation: str = "read_committed") -> dict[int, list[tuple[int, bytes]]]:
    """Every record of `topic` a confluent consumer gets at `isolation`, read to the end of each partition
    (its position must reach the high watermark: markers included)."""
    ends = {p: list_offset(bootstrap, topic, p, 0) for p in range(partitions)}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"audit-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "isolation.level": isolation, "fetch.wait.max.ms": 100})
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(partitions)}
    deadline = time.monotonic() + READ_DEADLINE_S
    try:
        while True:
            for message in consumer.consume(500, 0.2):
                assert message.error() is None, message.error()
                got[message.partition()].append((message.offset(), message.value()))
            positions = {tp.partition: tp.offset for tp in consumer.position(tps)}
            if all(positions[p] >= end for p, end in ends.items()):
                return got
            assert time.monotonic() < deadline, f"{isolation} consumer stuck at {positions}, ends {ends}"
    finally:
        consumer.close()


def poll_read_committed(bootstrap: str, topic: str, partitions: int, seconds: float) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of what a read_committed confluent consumer gets from offset 0 in `seconds`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"audit-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "isolation.level": "read_committed", "fetch.wait.max.ms": 100})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = []
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            for message in consumer.consume(500, min(left, 0.2)):
                assert message.error() is None, message.error()
                got.append((message.partition(), message.offset(), message.value()))
    finally:
        consumer.close()
    return got


def assert_transactions_closed(bootstrap: str, topic: str, partitions: int) -> None:
    for partition in range(partitions):
        high_watermark = list_offset(bootstrap, topic, partition, 0)
        assert list_offset(bootstrap, topic, partition, 1) == high_watermark, f"{topic}-{partition}: LSO < HW"


# --- 7. consume → transform → produce, SIGKILLed ------------------------------------------------------------------


class Processor:
    """`eos_processor.py` in a subprocess, its stdout lines in a queue."""

    def __init__(self, stderr_path: Path, *args: str) -> None:
        with open(stderr_path, "w") as stderr:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen([sys.executable, str(PROCESSOR), *args], stdout=subprocess.PIPE,
                                            stderr=stderr, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def wait_for(self, wanted: str, timeout_s: float) -> bool:
        """True once a line starting with `wanted` arrived; False if the process ended or time ran out."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                return False
            if line is None:
                return False
            if line.startswith(wanted):
                return True
        return False

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def finish(self, timeout_s: float) -> int:
        return self.process.wait(timeout_s)


def test_consume_transform_produce_is_exactly_once_across_sigkills(tmp_path: Path, topic_name: str) -> None:
    """2000 input records over 3 partitions go through `eos_processor.py`, which is SIGKILLed 5 times at
    seeded random moments (after 0-6 commits, 0-60 ms into the next transaction: while it polls, produces,
    sends offsets or commits) and restarted each time with the same transactional.id and group.
    Afterwards the output topic, read_committed, holds every input record transformed exactly once and in
    input order per partition; the group's committed offsets are the input's end offsets; no transaction is
    left open (LSO == HW everywhere); and read_uncommitted shows that kills did leave output of unfinished
    transactions in the log, which read_committed hid."""
    seed = 20240607
    rng = random.Random(seed)
    kills_wanted, records, partitions = 5, 2000, 3
    input_topic, output_topic = f"{topic_name}-in", f"{topic_name}-out"
    group_id, transactional_id = f"eos-{topic_name}", f"eos-processor-{topic_name}"
    session_timeout_ms = "1500"
    with embedded_broker(group_min_session_timeout_ms="1000") as bootstrap:
        create_topic(bootstrap, input_topic, partitions)
        create_topic(bootstrap, output_topic, partitions)
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
        inputs: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
        for index in range(records):
            value = b"in-%05d" % index
            inputs[index % partitions].append(value)
            producer.produce(input_topic, value=value, partition=index % partitions)
        assert producer.flush(CLIENT_TIMEOUT_S) == 0
        del producer

        args = (bootstrap, input_topic, output_topic, group_id, transactional_id, session_timeout_ms)
        deadline = time.monotonic() + 50
        for run in range(1, kills_wanted + 2):
            assert time.monotonic() < deadline, f"seed {seed}: processing did not finish in {run - 1} runs"
            stderr_path = tmp_path / f"processor-{run}.stderr"
            where = f"seed {seed}, run {run} (stderr in {stderr_path})"
            processor = Processor(stderr_path, *args)
            try:
                assert processor.wait_for("ready", 20), f"{where}: never got its partitions"
                if run > kills_wanted:
                    assert processor.wait_for("done", 30), f"{where}: the last run did not finish"
                    assert processor.finish(10) == 0
                    break
                # After 0-6 commits (at most 350 records, so every run is killed before the end), a random
                # moment into the next transaction.
                for _ in range(rng.randint(0, 6)):
                    assert processor.wait_for("committed", 10), f"{where}: stalled"
                time.sleep(rng.uniform(0.0, 0.06))
                processor.kill()
            finally:
                if processor.process.poll() is None:
                    processor.kill()

        output = read_all(bootstrap, output_topic, partitions)
        for partition in range(partitions):
            values = [value for _offset, value in output[partition]]
            assert len(values) == len(set(values)), f"seed {seed}: duplicates in output partition {partition}"
            assert values == [value + b"-out" for value in inputs[partition]], (
                f"seed {seed}: output partition {partition} is not the input exactly once, in order")
        assert offset_fetch_stable(bootstrap, group_id, input_topic, partitions) == {
            p: (0, len(inputs[p])) for p in range(partitions)}
        assert_transactions_closed(bootstrap, output_topic, partitions)
        # The kills did interrupt transactions whose output was already in the log: read_uncommitted shows
        # that aborted output, which read_committed hid.
        uncommitted = read_all(bootstrap, output_topic, partitions, "read_uncommitted")
        aborted = sum(len(got) for got in uncommitted.values()) - records
        assert aborted > 0, f"seed {seed}: no kill landed inside a transaction with output in the log"


# --- 8. the broker dies between Prepare* and the markers, or with a transaction open ----------------------------------


def open_transaction(bootstrap: str, topic: str, partitions: int, per_partition: int, transactional_id: str,
                     group_id: str, **config: object) -> Producer:
    """A confluent producer with a transaction open: `per_partition` records flushed to every partition
    (values b"p{partition}-{index}") and offsets 10 + partition for `group_id` on `topic` sent."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id,
                         "linger.ms": 5, "reconnect.backoff.max.ms": 200, **config})
    producer.init_transactions(CLIENT_TIMEOUT_S)
    producer.begin_transaction()
    for partition in range(partitions):
        for index in range(per_partition):
            producer.produce(topic, value=b"p%d-%d" % (partition, index), partition=partition)
    assert producer.flush(CLIENT_TIMEOUT_S) == 0
    metadata_source = Consumer({"bootstrap.servers": bootstrap, "group.id": group_id})
    group_metadata = metadata_source.consumer_group_metadata()
    metadata_source.close()
    producer.send_offsets_to_transaction([TopicPartition(topic, p, 10 + p) for p in range(partitions)],
                                         group_metadata, CLIENT_TIMEOUT_S)
    return producer


def wait_for_state(bootstrap: str, transactional_id: str, wanted: str, timeout_s: float) -> tuple[str, int]:
    deadline = time.monotonic() + timeout_s
    while (state := transaction_state(bootstrap, transactional_id))[0] != wanted:
        assert time.monotonic() < deadline, f"transaction stuck in {state}, expected {wanted}"
        time.sleep(0.1)
    return state


def run_new_transactions(bootstrap: str, topic: str, partitions: int, transactional_id: str) -> None:
    """A new producer instance with the same transactional.id commits two transactions."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id, "linger.ms": 5})
    producer.init_transactions(CLIENT_TIMEOUT_S)
    for round_ in range(2):
        producer.begin_transaction()
        for partition in range(partitions):
            producer.produce(topic, value=b"again-%d-%d" % (round_, partition), partition=partition)
        producer.commit_transaction(CLIENT_TIMEOUT_S)


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "abort"])
def test_end_completes_after_broker_dies_between_prepare_and_markers(
        tmp_path: Path, topic_name: str, commit: bool) -> None:
    """A transaction over 3 partitions plus offsets for a group: the broker process exits (137) as soon as
    PrepareCommit (PrepareAbort) is durable, before any marker, so the client's EndTxn fails. Restarted
    without the fault, the coordinator resumes: the transaction becomes CompleteCommit (CompleteAbort),
    every partition has exactly one marker (LSO == HW == records + 1), read_committed consumers see every
    record (none), the group's offsets are committed and stable (never committed), and a new producer with
    the same transactional.id runs further transactions whose records follow."""
    partitions, per_partition = 3, 5
    transactional_id, group_id = f"prepare-crash-{topic_name}", f"group-{topic_name}"
    broker = BrokerProcess(tmp_path / "data", overrides={"group.initial.rebalance.delay.ms": "0"},
                           env={"ONCELOG_FAULT_INJECTION": "after-prepare-before-markers"})
    bootstrap = broker.start()
    try:
        create_topic(bootstrap, topic_name, partitions)
        producer = open_transaction(bootstrap, topic_name, partitions, per_partition, transactional_id, group_id)
        end_error: KafkaException | None = None
        try:
            producer.commit_transaction(3) if commit else producer.abort_transaction(3)
        except KafkaException as error:
            end_error = error
        assert broker.process is not None
        assert broker.process.wait(10) == 137, "the broker did not die at the fault injection point"
        assert end_error is not None, "EndTxn succeeded although the broker died before its markers"
        del producer  # it knows only the dead broker's port

        broker.env = {}
        bootstrap = broker.start()
        state = wait_for_state(bootstrap, transactional_id, "CompleteCommit" if commit else "CompleteAbort", 15)
        for partition in range(partitions):
            assert list_offset(bootstrap, topic_name, partition, 0) == per_partition + 1, "one marker each"
            assert list_offset(bootstrap, topic_name, partition, 1) == per_partition + 1, "LSO == HW"
        written = {p: [(i, b"p%d-%d" % (p, i)) for i in range(per_partition)] for p in range(partitions)}
        assert read_all(bootstrap, topic_name, partitions) == (
            written if commit else {p: [] for p in range(partitions)})
        assert read_all(bootstrap, topic_name, partitions, "read_uncommitted") == written
        assert offset_fetch_stable(bootstrap, group_id, topic_name, partitions) == {
            p: (0, 10 + p if commit else -1) for p in range(partitions)}

        run_new_transactions(bootstrap, topic_name, partitions, transactional_id)
        assert transaction_state(bootstrap, transactional_id) == ("CompleteCommit", state[1] + 1)
        got = read_all(bootstrap, topic_name, partitions)
        for partition in range(partitions):
            assert [value for _offset, value in got[partition]] == [value for _o, value in written[partition]] * (
                commit) + [b"again-0-%d" % partition, b"again-1-%d" % partition]
        assert_transactions_closed(bootstrap, topic_name, partitions)
    finally:
        if broker.process is not None:
            broker.kill()


@pytest.mark.parametrize("ended_by", ["new-instance", "timeout"])
def test_open_transaction_survives_broker_sigkill(tmp_path: Path, topic_name: str, ended_by: str) -> None:
    """The broker is SIGKILLed while a transaction is open (records flushed, offsets sent). After restart
    the transaction is still Ongoing and still holds the LSO at its first record on every partition, its
    offsets are still pending (OffsetFetch RequireStable → UNSTABLE_OFFSET_COMMIT) and a read_committed
    consumer sees none of it. It is then aborted — by a new producer instance with the same
    transactional.id, or by the coordinator's timeout scan (transaction.timeout.ms survives the restart) —
    after which LSO == HW, its records and offsets never become visible, and new transactions work."""
    partitions, per_partition = 3, 5
    transactional_id, group_id = f"open-crash-{topic_name}", f"group-{topic_name}"
    timeout_ms = 8000 if ended_by == "timeout" else 60_000
    broker = BrokerProcess(tmp_path / "data", overrides={
        "group.initial.rebalance.delay.ms": "0",
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": "200"})
    bootstrap = broker.start()
    try:
        create_topic(bootstrap, topic_name, partitions)
        opened_at = time.monotonic()
        producer = open_transaction(bootstrap, topic_name, partitions, per_partition, transactional_id, group_id,
                                    **{"transaction.timeout.ms": timeout_ms})
        broker.kill()
        del producer

        bootstrap = broker.start()
        state = transaction_state(bootstrap, transactional_id)
        assert time.monotonic() - opened_at < timeout_ms / 1000 - 2, "too slow to see the transaction open"
        assert state[0] == "Ongoing"
        for partition in range(partitions):
            assert list_offset(bootstrap, topic_name, partition, 0) == per_partition
            assert list_offset(bootstrap, topic_name, partition, 1) == 0, "the open transaction holds the LSO"
        assert offset_fetch_stable(bootstrap, group_id, topic_name, partitions) == {
            p: (ErrorCode.unstable_offset_commit, -1) for p in range(partitions)}
        assert poll_read_committed(bootstrap, topic_name, partitions, QUIET_POLL_S) == []

        if ended_by == "new-instance":
            run_new_transactions(bootstrap, topic_name, partitions, transactional_id)
        else:
            wait_for_state(bootstrap, transactional_id, "CompleteAbort", timeout_ms / 1000 + 5)
            assert time.monotonic() - opened_at >= timeout_ms / 1000 * 0.9, "aborted before its timeout"
            run_new_transactions(bootstrap, topic_name, partitions, transactional_id)
        assert transaction_state(bootstrap, transactional_id)[0] == "CompleteCommit"
        got = read_all(bootstrap, topic_name, partitions)
        for partition in range(partitions):
            # the aborted records and their ABORT marker come first, then two committed transactions
            assert got[partition] == [(per_partition + 1, b"again-0-%d" % partition),
                                      (per_partition + 3, b"again-1-%d" % partition)]
        assert offset_fetch_stable(bootstrap, group_id, topic_name, partitions) == {
            p: (0, -1) for p in range(partitions)}
        assert_transactions_closed(bootstrap, topic_name, partitions)
    finally:
        if broker.process is not None:
            broker.kill()


def test_clean_stop_while_a_fenced_transaction_is_being_aborted(
        tmp_path: Path, topic_name: str, caplog: pytest.LogCaptureFixture) -> None:
    """A new instance's InitProducerId fences an open transaction — the answer is CONCURRENT_TRANSACTIONS
    and the abort (PrepareAbort, markers, CompleteAbort) goes on in the background — and the broker is
    stopped cleanly right after, as on SIGTERM. The stop must be clean: it returns within its grace period
    (the abort needs a few fsyncs, or is left for the next start) and nothing runs against closed logs (no
    error logged). After restart the transaction is CompleteAbort, LSO == HW (one ABORT marker, or two if
    the stop cut the abort between its markers and CompleteAbort: a resumed abort writes them again, which
    Kafka allows, docs/protocol.md), and its record is invisible read_committed."""
    transactional_id = f"stop-{topic_name}"
    data_dir = tmp_path / "data"
    caplog.set_level(logging.ERROR)
    with embedded_broker(data_dir=data_dir) as bootstrap:
        create_topic(bootstrap, topic_name, 1)
        with KafkaClient(bootstrap) as client:
            def init_producer_id() -> Any:
                return client.request(22, 3, {"transactional_id": transactional_id, "transaction_timeout": 60_000,
                                              "producer_id": -1, "producer_epoch": -1})

            first = init_producer_id()
            producer_id, epoch = int(first.producer_id), int(first.producer_epoch)
            added = client.request(24, 3, {
                "v3_and_below_transactional_id": transactional_id, "v3_and_below_producer_id": producer_id,
                "v3_and_below_producer_epoch": epoch,
                "v3_and_below_topics": [{"name": topic_name, "partitions": [0]}]})
            assert added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code == 0
            batch = build_batch([(None, b"open")], timestamp_ms=1_700_000_000_000, producer_id=producer_id,
                                producer_epoch=epoch, base_sequence=0, transactional=True)
            produced = client.request(0, 7, {"transactional_id": transactional_id, "acks": -1, "timeout": 5000,
                                             "topic_data": [{"name": topic_name,
                                                             "partition_data": [{"index": 0, "records": batch}]}]})
            assert produced.responses[0].partition_responses[0].error_code == ErrorCode.none
            assert init_producer_id().error_code == ErrorCode.concurrent_transactions  # the fence has begun
        stop_started = time.monotonic()
    stop_took_s = time.monotonic() - stop_started
    gc.collect()  # an exception left in a finished task is logged when the task is collected
    logged_during_stop = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]

    with embedded_broker(data_dir=data_dir) as bootstrap:
        deadline = time.monotonic() + 15
        while (state := transaction_state(bootstrap, transactional_id))[0] != "CompleteAbort":
            assert time.monotonic() < deadline, f"transaction stuck in {state} after restart"
            time.sleep(0.1)
        assert state[1] == epoch + 1, "aborted with the fencing epoch"
        high_watermark = list_offset(bootstrap, topic_name, 0, 0)
        assert high_watermark in (2, 3) and list_offset(bootstrap, topic_name, 0, 1) == high_watermark
        assert read_all(bootstrap, topic_name, 1) == {0: []}
        assert read_all(bootstrap, topic_name, 1, "read_uncommitted") == {0: [(0, b"open")]}
    assert logged_during_stop == [], logged_during_stop
    assert stop_took_s < SHUTDOWN_GRACE_S, f"the clean stop took {stop_took_s:.1f} s: it waited out its grace"


# --- 9. a lost EndTxn response ----------------------------------------------------------------------------------------


_SIZE = struct.Struct(">i")
END_TXN_KEY, METADATA_KEY, FIND_COORDINATOR_KEY = 26, 3, 10


class EndTxnResponseDropper:
    """A TCP proxy for Kafka frames that can lose EndTxn responses.

    Per client connection it opens one upstream connection and pumps frames both ways on an asyncio loop in
    a background thread. It remembers the api key and version of each request by correlation id; Metadata
    and FindCoordinator responses are rewritten to name the proxy (clients would otherwise connect to the
    broker directly); an EndTxn response chosen to be lost is swallowed and both sockets are closed, as when
    a network fails after the broker has done the work.
    """

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.host, self.port = "127.0.0.1", 0
        self.lock = threading.Lock()
        self.drop_end_txn = 0
        self.end_txn_requests = 0
        self.end_txn_dropped = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="end-txn-dropper", daemon=True)
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.handlers: set[asyncio.Task[None]] = set()

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def __enter__(self) -> EndTxnResponseDropper:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.close()  # each handler then sees its streams end and returns
        if self.handlers:
            await asyncio.wait(set(self.handlers), timeout=5)

    @staticmethod
    async def _frame(reader: asyncio.StreamReader) -> bytes | None:
        try:
            (size,) = _SIZE.unpack(await reader.readexactly(4))
            return await reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        task.add_done_callback(self.handlers.discard)
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        self.writers |= {client_writer, upstream_writer}
        pending: dict[int, tuple[int, int]] = {}
        pumps = [asyncio.create_task(self._requests(client_reader, upstream_writer, pending)),
                 asyncio.create_task(self._responses(upstream_reader, client_writer, pending))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for writer in (client_writer, upstream_writer):
                self.writers.discard(writer)
                writer.close()

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        pending: dict[int, tuple[int, int]]) -> None:
        while (frame := await self._frame(reader)) is not None:
            api_key, api_version, correlation_id = struct.unpack_from(">hhi", frame)
            pending[correlation_id] = (api_key, api_version)
            if api_key == END_TXN_KEY:
                with self.lock:
                    self.end_txn_requests += 1
            writer.write(_SIZE.pack(len(frame)) + frame)
            await writer.drain()

    async def _responses(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         pending: dict[int, tuple[int, int]]) -> None:
        while (frame := await self._frame(reader)) is not None:
            (correlation_id,) = struct.unpack_from(">i", frame)
            api_key, api_version = pending.pop(correlation_id, (-1, -1))
            if api_key == END_TXN_KEY:
                with self.lock:
                    lose = self.drop_end_txn > 0
                    if lose:
                        self.drop_end_txn -= 1
                        self.end_txn_dropped += 1
                if lose:
                    return  # both connections close with the response unsent
            if api_key in (METADATA_KEY, FIND_COORDINATOR_KEY):
                frame = self._rewrite(frame, api_key, api_version)
            writer.write(_SIZE.pack(len(frame)) + frame)
            await writer.drain()

    def _rewrite(self, frame: bytes, api_key: int, api_version: int) -> bytes:
        correlation_id, response = decode_response(frame, api_key, api_version)
        here = {"host": self.host, "port": self.port}
        if api_key == METADATA_KEY:
            brokers: Any = tuple(dataclasses.replace(broker, **here) for broker in response.brokers)
            response = dataclasses.replace(response, brokers=brokers)
        elif api_version >= 4:
            coordinators: Any = tuple(dataclasses.replace(c, **here) for c in response.coordinators)
            response = dataclasses.replace(response, coordinators=coordinators)
        elif response.error_code == ErrorCode.none:
            response = dataclasses.replace(response, **here)
        return encode_response(api_key, api_version, correlation_id, response)[_SIZE.size:]


def test_lost_end_txn_response_is_retried_and_commits_once(oncelog_broker: str, topic_name: str) -> None:
    """confluent-kafka commits through a proxy that loses the EndTxn response and closes the connection:
    the broker has committed (markers written, CompleteCommit) before answering, so librdkafka's retry is a
    retried EndTxn(commit) in CompleteCommit, answered NONE without another marker. The transaction ends
    exactly once, committed: one marker per partition, every record visible once read_committed, and the
    producer runs its next transaction normally."""
    partitions, per_partition = 2, 4
    create_topic(oncelog_broker, topic_name, partitions)
    transactional_id = f"lost-end-txn-{topic_name}"
    with EndTxnResponseDropper(oncelog_broker) as proxy:
        producer = Producer({"bootstrap.servers": proxy.bootstrap, "transactional.id": transactional_id,
                             "linger.ms": 5, "reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 100})
        producer.init_transactions(CLIENT_TIMEOUT_S)
        producer.begin_transaction()
        for partition in range(partitions):
            for index in range(per_partition):
                producer.produce(topic_name, value=b"p%d-%d" % (partition, index), partition=partition)
        assert producer.flush(CLIENT_TIMEOUT_S) == 0
        with proxy.lock:
            proxy.drop_end_txn = 1
        attempts = commit_until_done(producer)
        assert proxy.end_txn_dropped == 1
        assert proxy.end_txn_requests >= 2, "the EndTxn was not retried"
        assert transaction_state(oncelog_broker, transactional_id)[0] == "CompleteCommit"
        for partition in range(partitions):
            assert list_offset(oncelog_broker, topic_name, partition, 0) == per_partition + 1, "one marker each"
        assert_transactions_closed(oncelog_broker, topic_name, partitions)

        producer.begin_transaction()
        for partition in range(partitions):
            producer.produce(topic_name, value=b"next-%d" % partition, partition=partition)
        producer.commit_transaction(CLIENT_TIMEOUT_S)

    got = read_all(oncelog_broker, topic_name, partitions)
    for partition in range(partitions):
        assert got[partition] == [(i, b"p%d-%d" % (partition, i)) for i in range(per_partition)] + [
            (per_partition + 1, b"next-%d" % partition)], f"partition {partition} ({attempts} commit calls)"
    assert_transactions_closed(oncelog_broker, topic_name, partitions)


def commit_until_done(producer: Producer) -> int:
    """commit_transaction(), called again while it fails retriably (librdkafka's documented contract);
    returns how many calls it took. Any other failure fails the test."""
    for attempt in range(1, 6):
        try:
            producer.commit_transaction(CLIENT_TIMEOUT_S)
            return attempt
        except KafkaException as error:
            kafka_error: KafkaError = error.args[0]
            assert kafka_error.retriable(), f"commit failed for good: {kafka_error}"
    raise AssertionError("commit_transaction kept failing retriably")


@pytest.mark.parametrize("client", ["kafka-python", "aiokafka"])
def test_lost_end_txn_response_other_clients(oncelog_broker: str, topic_name: str, client: str) -> None:
    """The same lost EndTxn response for kafka-python and aiokafka: each reconnects and resends EndTxn,
    the broker answers the retry from CompleteCommit, and the transaction is committed exactly once."""
    partitions, per_partition = 2, 4
    create_topic(oncelog_broker, topic_name, partitions)
    with EndTxnResponseDropper(oncelog_broker) as proxy, aio_runner() as runner, \
            txn_producer(client, proxy.bootstrap, runner) as producer:
        producer.init()
        producer.begin()
        for partition in range(partitions):
            for index in range(per_partition):
                producer.send(topic_name, partition, b"p%d-%d" % (partition, index))
        producer.flush()
        with proxy.lock:
            proxy.drop_end_txn = 1
        producer.commit()
        assert proxy.end_txn_dropped == 1
        assert proxy.end_txn_requests >= 2, "the EndTxn was not retried"
        producer.begin()
        producer.send(topic_name, 0, b"next")
        producer.commit()

    got = read_all(oncelog_broker, topic_name, partitions)
    assert got == {0: [(i, b"p0-%d" % i) for i in range(per_partition)] + [(per_partition + 1, b"next")],
                   1: [(i, b"p1-%d" % i) for i in range(per_partition)]}
    for partition, markers in ((0, 2), (1, 1)):
        assert list_offset(oncelog_broker, topic_name, partition, 0) == len(got[partition]) + markers
    assert_transactions_closed(oncelog_broker, topic_name, partitions)


def test_retried_end_txn_is_answered_from_the_completed_state(oncelog_broker: str, topic_name: str) -> None:
    """Raw EndTxn v3 against the EndTxn rules of docs/protocol.md, as a client retrying after a lost response sees
    it: commit → NONE; the same commit again → NONE with no second marker; abort after the commit →
    INVALID_TXN_STATE (48); EndTxn with no transaction open (Empty) → INVALID_TXN_STATE."""
    create_topic(oncelog_broker, topic_name, 1)
    transactional_id = f"raw-{topic_name}"
    with KafkaClient(oncelog_broker) as client:
        init = client.request(22, 3, {"transactional_id": transactional_id, "transaction_timeout": 60_000,
                                      "producer_id": -1, "producer_epoch": -1})
        assert init.error_code == ErrorCode.none
        producer_id, epoch = int(init.producer_id), int(init.producer_epoch)

        def end_txn(commit: bool) -> int:
            return int(client.request(26, 3, {"transactional_id": transactional_id, "producer_id": producer_id,
                                              "producer_epoch": epoch, "committed": commit}).error_code)

        assert end_txn(True) == ErrorCode.invalid_txn_state, "nothing to commit in Empty"
        added = client.request(24, 3, {
            "v3_and_below_transactional_id": transactional_id, "v3_and_below_producer_id": producer_id,
            "v3_and_below_producer_epoch": epoch, "v3_and_below_topics": [{"name": topic_name, "partitions": [0]}]})
        assert added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code == 0
        batch = build_batch([(None, b"a"), (None, b"b")], timestamp_ms=1_700_000_000_000, producer_id=producer_id,
                            producer_epoch=epoch, base_sequence=0, transactional=True)
        produced = client.request(0, 7, {"transactional_id": transactional_id, "acks": -1, "timeout": 5000,
                                         "topic_data": [{"name": topic_name,
                                                         "partition_data": [{"index": 0, "records": batch}]}]})
        assert produced.responses[0].partition_responses[0].error_code == ErrorCode.none
        assert list_offset(oncelog_broker, topic_name, 0, 1) == 0, "open transaction holds the LSO"

        assert end_txn(True) == ErrorCode.none
        assert list_offset(oncelog_broker, topic_name, 0, 0) == 3
        assert end_txn(True) == ErrorCode.none, "a retried commit of a completed commit"
        assert end_txn(False) == ErrorCode.invalid_txn_state
        assert int(ErrorCode.invalid_txn_state) == 48
    assert list_offset(oncelog_broker, topic_name, 0, 0) == 3, "the retries wrote no marker"
    assert list_offset(oncelog_broker, topic_name, 0, 1) == 3
    assert transaction_state(oncelog_broker, transactional_id) == ("CompleteCommit", epoch)
