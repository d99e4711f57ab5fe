"""A broker core on a fault-injecting file system, driven through its handlers without sockets or sleeps.

`DiskHarness` builds the real `Broker` over `FaultyFileSystem(OsFileSystem)`, a manual clock and a
synchronous stand-in for the flusher (durability is asked for, then granted by fsyncing through the
same file system, so fsync faults reach the log exactly as they would from the flusher). Requests go
through the real handler functions with kio request objects. `crash()` drops the broker without any
clean shutdown (the files keep whatever reached them, as after kill -9) and `start()` opens a new one on
the same directory, which recovers.

`Workload` drives a fixed mix over it and records what was acknowledged: idempotent produce with retries
(two partitions, small segments so they roll and snapshot, small index interval so indexes are written),
transactions that commit or abort, offset commits (with a small `__consumer_offsets` segment size so the
cleaner has work), checkpoints, retention and compaction passes. `check()` verifies, after a restart,
that every acknowledged record is there exactly once at the offset it was acknowledged with, that batch
offsets run on without reuse or holes, that read_committed readers see committed transactions and no
aborted ones, that committed group offsets are the last acknowledged (or a later unacknowledged) one,
and that the broker takes new writes.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oncelog.broker import Broker
from oncelog.config import broker_config
from oncelog.coordinator.runtime import ManualScheduler
from oncelog.errors import ErrorCode
from oncelog.fs import OS_FILE_SYSTEM, Fault, FaultPlan, FaultyFileSystem
from oncelog.handlers import HANDLERS
from oncelog.handlers.base import AwaitCompletion, AwaitData, RequestContext
from oncelog.log.partition import PartitionLog
from oncelog.protocol.codec import build_request
from oncelog.protocol.records import build_batch, iter_batches
from oncelog.simulation.clients import visible_records

TOPIC = "orders"
PARTITIONS = 2
GROUP = "audit"
TRANSACTIONAL_ID = "copier"
START_MS = 1_700_000_000_000
ROUNDS = 10

BROKER_PROPERTIES = {
    "log.segment.bytes": "1024",
    "message.max.bytes": "512",
    "log.index.interval.bytes": "64",
    "offsets.topic.num.partitions": "2",
    "transaction.state.log.num.partitions": "2",
    "offsets.topic.segment.bytes": "512",
    "transaction.state.log.segment.bytes": "1024",
    "log.retention.bytes": "2048",
    "log.cleaner.delete.retention.ms": "0",
    "group.initial.rebalance.delay.ms": "0",
}


class DiskHarness:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.plan = FaultPlan()
        self.fs = FaultyFileSystem(OS_FILE_SYSTEM, self.plan)
        self.config = broker_config(BROKER_PROPERTIES, data_dir=directory, port=0)
        self.scheduler = ManualScheduler(START_MS)
        self._pending: list[tuple[PartitionLog, int, Any]] = []
        self.broker: Broker | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Broker:
        broker = Broker(self.config, clock=self.scheduler.clock, fs=self.fs)
        broker.start(self.scheduler, self._durability)
        self.broker = broker
        self.settle()  # transactions resumed from Prepare* write their markers now
        return broker

    def crash(self) -> None:
        """Drop the broker as kill -9 would: no flush, no checkpoint, no clean-shutdown marker."""
        assert self.broker is not None
        for log in self.broker.logs.logs():
            for segment in log.segments:
                segment.close()
        if self.broker.logs._unlock is not None:
            self.broker.logs._unlock()
        self._pending.clear()
        self.broker = None
        # The dead broker's timers die with it; the clock goes on.
        self.scheduler = ManualScheduler(self.scheduler.now_ms)

    # --- durability: the flusher, synchronously ------------------------------------------------------

    def _durability(self, log: PartitionLog, offset: int, callback: Any) -> None:
        self._pending.append((log, offset, callback))

    def flush(self, log: PartitionLog) -> bool:
        """fsync what the log holds, as one flusher round would; False if it failed or is offline."""
        if log.offline:
            return False
        end_offset, segments = log.flush_snapshot()
        try:
            for segment in segments:
                segment.fsync()
        except OSError as error:
            log.fsync_failed(error)
            return False
        log.mark_flushed(end_offset)
        return True

    def durable(self, log: PartitionLog, offset: int) -> bool:
        return log.recovery_point >= offset or (self.flush(log) and log.recovery_point >= offset)

    def settle(self) -> None:
        """Grant or fail every durability request made so far (and those the callbacks make)."""
        while self._pending:
            log, offset, callback = self._pending.pop(0)
            callback(self.durable(log, offset))

    # --- requests ----------------------------------------------------------------------------------

    def request(self, api_key: int, version: int, fields: dict[str, Any]) -> Any:
        assert self.broker is not None
        api = HANDLERS[api_key]
        request = build_request(api_key, version, fields)
        context = RequestContext(self.broker, api_key, version, 1, "harness", "test:1")
        outcome = api.handle(context, request)
        for _ in range(100):
            if isinstance(outcome, AwaitCompletion):
                self.settle()
                if not outcome.completion.done:  # a coordinator retry timer (markers)
                    self.scheduler.advance(1000)
                    self.settle()
                    continue
                outcome = outcome.respond(outcome.completion.value())
            elif isinstance(outcome, AwaitData):
                outcome = outcome.retry(True)
            else:
                return outcome
        raise ClientTimeout(f"{api.name} got no answer within 100 s")

    def run_job(self, job: Any) -> None:
        """A maintenance job, as the server runs it: its I/O errors are logged and retried later."""
        with contextlib.suppress(OSError):
            job()
        self.settle()


class ClientTimeout(Exception):
    """The request was not answered in time (a transaction waiting for markers to an offline partition):
    the client gives up on it, as librdkafka's request timeout would."""


# --- the workload ------------------------------------------------------------------------------------


@dataclass
class Acknowledged:
    records: dict[int, dict[bytes, int]] = field(default_factory=lambda: defaultdict(dict))
    """partition -> value -> offset, for every acknowledged plain or committed record."""
    aborted: set[bytes] = field(default_factory=set)
    """Values of transactions whose abort was acknowledged."""
    undecided: set[bytes] = field(default_factory=set)
    """Values of transactions whose end was not acknowledged (either outcome is fine)."""
    committed_offsets: list[int] = field(default_factory=list)
    """Group offsets whose commit was acknowledged, in order."""
    failed_offsets: list[int] = field(default_factory=list)
    """Group offsets whose commit failed after the last acknowledged one (each may or may not stick)."""
    acknowledged_offsets: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))


def _code(response: Any) -> ErrorCode:
    return ErrorCode(int(response.error_code))


class Workload:
    def __init__(self, harness: DiskHarness) -> None:
        self.harness = harness
        self.acked = Acknowledged()
        self.producer_id = -1
        self.producer_epoch = 0
        self.sequences = [0] * PARTITIONS
        self.topic_created = False

    def create_topic(self) -> bool:
        response = self.harness.request(19, 5, {"topics": [{
            "name": TOPIC, "num_partitions": PARTITIONS, "replication_factor": 1, "assignments": [],
            "configs": []}], "timeout": 1000, "validate_only": False})
        code = _code(response.topics[0])
        # A create that failed after topics.json reached its new name may have happened after all (the
        # client was told KAFKA_STORAGE_ERROR): after a restart the topic may exist, empty.
        already = code == ErrorCode.topic_already_exists and not self.topic_created
        self.topic_created = code == ErrorCode.none or already
        return self.topic_created

    def init_producer(self) -> bool:
        try:
            response = self.harness.request(22, 4, {"transactional_id": None, "transaction_timeout": 60_000,
                                                    "producer_id": -1, "producer_epoch": -1})
        except ClientTimeout:
            return False
        if _code(response) != ErrorCode.none:
            return False
        self.producer_id, self.producer_epoch = int(response.producer_id), int(response.producer_epoch)
        self.sequences = [0] * PARTITIONS
        return True

    def produce(self, partition: int, values: list[bytes], attempts: int = 3) -> bool:
        """One idempotent batch, retried like a client on retriable errors; True once acknowledged."""
        batch = build_batch([(None, value) for value in values], producer_id=self.producer_id,
                            producer_epoch=self.producer_epoch, base_sequence=self.sequences[partition],
                            timestamp_ms=self.harness.scheduler.now_ms)
        for _ in range(attempts):
            try:
                response = self.harness.request(0, 9, {"transactional_id": None, "acks": -1, "timeout": 1000,
                                                       "topic_data": [{"name": TOPIC, "partition_data": [
                                                           {"index": partition, "records": batch}]}]})
            except ClientTimeout:
                continue
            result = response.responses[0].partition_responses[0]
            if ErrorCode(int(result.error_code)) == ErrorCode.none:
                self.sequences[partition] += len(values)
                base = int(result.base_offset)
                self.acked.acknowledged_offsets[partition].append(base)
                for index, value in enumerate(values):
                    self.acked.records[partition][value] = base + index
                return True
        return False

    def commit_offset(self, offset: int) -> None:
        try:
            self._commit_offset(offset)
        except ClientTimeout:
            self.acked.failed_offsets.append(offset)

    def _commit_offset(self, offset: int) -> None:
        response = self.harness.request(8, 8, {
            "group_id": GROUP, "generation_id_or_member_epoch": -1, "member_id": "", "group_instance_id": None,
            "topics": [{"name": TOPIC, "partitions": [{"partition_index": 0, "committed_offset": offset,
                                                       "committed_leader_epoch": -1, "committed_metadata": ""}]}]})
        if ErrorCode(int(response.topics[0].partitions[0].error_code)) == ErrorCode.none:
            self.acked.committed_offsets.append(offset)
            self.acked.failed_offsets.clear()
        else:
            self.acked.failed_offsets.append(offset)
            # Validate, then apply: a commit that failed never shows, while the broker runs.
            last = self.acked.committed_offsets[-1:] or [-1]
            assert self.fetch_offset() in last, "a failed commit moved the offset"

    def fetch_offset(self) -> int:
        response = self.harness.request(9, 7, {"group_id": GROUP, "topics": [
            {"name": TOPIC, "partition_indexes": [0]}], "require_stable": False})
        return int(response.topics[0].partitions[0].committed_offset)

    def transaction(self, number: int, commit: bool) -> None:
        try:
            self._transaction(number, commit)
        except ClientTimeout:
            self.acked.undecided |= {f"txn-{number}-{partition}".encode() for partition in range(PARTITIONS)}

    def _transaction(self, number: int, commit: bool) -> None:
        request = self.harness.request
        init = request(22, 4, {"transactional_id": TRANSACTIONAL_ID, "transaction_timeout": 60_000,
                               "producer_id": -1, "producer_epoch": -1})
        if _code(init) != ErrorCode.none:
            return
        producer_id, epoch = int(init.producer_id), int(init.producer_epoch)
        added = request(24, 3, {"v3_and_below_transactional_id": TRANSACTIONAL_ID,
                                "v3_and_below_producer_id": producer_id, "v3_and_below_producer_epoch": epoch,
                                "v3_and_below_topics": [{"name": TOPIC, "partitions": [0, 1]}]})
        if any(ErrorCode(int(p.partition_error_code)) != ErrorCode.none
               for t in added.results_by_topic_v3_and_below for p in t.results_by_partition):
            return
        written: dict[int, tuple[bytes, int]] = {}
        for partition in range(PARTITIONS):
            value = f"txn-{number}-{partition}".encode()
            batch = build_batch([(None, value)], producer_id=producer_id, producer_epoch=epoch, base_sequence=0,
                                transactional=True, timestamp_ms=self.harness.scheduler.now_ms)
            response = request(0, 9, {"transactional_id": TRANSACTIONAL_ID, "acks": -1, "timeout": 1000,
                                      "topic_data": [{"name": TOPIC, "partition_data": [
                                          {"index": partition, "records": batch}]}]})
            result = response.responses[0].partition_responses[0]
            if ErrorCode(int(result.error_code)) == ErrorCode.none:
                written[partition] = (value, int(result.base_offset))
        values = {value for value, _offset in written.values()}
        self.acked.undecided |= values  # until EndTxn answers
        ended = request(26, 3, {"transactional_id": TRANSACTIONAL_ID, "producer_id": producer_id,
                                "producer_epoch": epoch, "committed": commit})
        self.acked.undecided -= values
        if _code(ended) != ErrorCode.none:
            self.acked.undecided |= values
        elif commit:
            for partition, (value, offset) in written.items():
                self.acked.records[partition][value] = offset
        else:
            self.acked.aborted |= values

    def run(self) -> None:
        """The whole mix; any step may fail under an injected fault, none may lose what was acknowledged."""
        harness = self.harness
        broker = harness.broker
        assert broker is not None
        if not self.create_topic():
            return
        self.init_producer()
        for round_number in range(ROUNDS):
            for partition in range(PARTITIONS):
                values = [f"p{partition}-r{round_number}-{i}".encode() * 4 for i in range(4)]
                self.produce(partition, values)
            self.commit_offset(100 + round_number)
            self.transaction(round_number, commit=round_number % 2 == 0)
            harness.scheduler.advance(10)
            harness.run_job(broker.logs.write_checkpoints)
            if round_number % 3 == 2:
                harness.run_job(lambda: broker.logs.apply_retention(harness.scheduler.now_ms))
                harness.run_job(lambda: broker.logs.compact(harness.scheduler.now_ms))
                harness.run_job(broker.groups.expire_offsets)


# --- after a restart ---------------------------------------------------------------------------------


def _fetch(harness: DiskHarness, partition: int, offset: int, read_committed: bool) -> Any:
    response = harness.request(1, 11, {
        "replica_id": -1, "max_wait": 0, "min_bytes": 0, "max_bytes": 1 << 24,
        "isolation_level": 1 if read_committed else 0, "session_id": 0, "session_epoch": -1,
        "topics": [{"topic": TOPIC, "partitions": [{"partition": partition, "fetch_offset": offset,
                                                    "partition_max_bytes": 1 << 24}]}],
        "forgotten_topics_data": [], "rack_id": ""})
    return response.responses[0].partitions[0]


def log_start_offset(harness: DiskHarness, partition: int) -> int:
    return int(_fetch(harness, partition, 0, False).log_start_offset)


def read_partition(harness: DiskHarness, partition: int, read_committed: bool) -> list[tuple[int, bytes]]:
    """Every (offset, value) a consumer sees from the log start, with read_committed filtering done as
    clients do it."""
    data = _fetch(harness, partition, log_start_offset(harness, partition), read_committed)
    assert ErrorCode(int(data.error_code)) == ErrorCode.none, data
    next_offset = None
    for _position, header in iter_batches(bytes(data.records or b"")):
        assert next_offset is None or header.base_offset == next_offset, "offsets reused or skipped"
        next_offset = header.next_offset
    seen, _end = visible_records(data, read_committed)
    return [(offset, value.encode()) for offset, value in seen]


def check(harness: DiskHarness, workload: Workload) -> None:
    acked = workload.acked
    assert harness.broker is not None
    # Transactions left open by a failed EndTxn hold the last stable offset until they time out.
    harness.scheduler.advance(120_000)
    harness.run_job(harness.broker.transactions.abort_timed_out)
    if not workload.topic_created:
        assert not acked.records and not acked.committed_offsets, "acknowledged writes to a topic never created"
        assert workload.create_topic(), "the restarted broker cannot create the topic"
    for partition in range(PARTITIONS):
        everything = read_partition(harness, partition, read_committed=False)
        committed = read_partition(harness, partition, read_committed=True)
        offsets = [offset for offset, _value in everything]
        assert offsets == sorted(set(offsets)), f"partition {partition}: an offset is stored twice"
        where: dict[bytes, list[int]] = defaultdict(list)
        for offset, value in everything:
            where[value].append(offset)
        start = log_start_offset(harness, partition)
        retained = {value: offset for value, offset in acked.records[partition].items() if offset >= start}
        for value, offset in retained.items():
            assert where.get(value) == [offset], (
                f"partition {partition}: acknowledged {value!r} at {offset} is at {where.get(value)}")
        visible = {value for _offset, value in committed}
        assert not visible & acked.aborted, f"partition {partition}: read_committed sees aborted records"
        assert set(retained) <= visible, f"partition {partition}: acknowledged records hidden"
        acknowledged = acked.acknowledged_offsets[partition]
        assert len(acknowledged) == len(set(acknowledged)), f"partition {partition}: an offset acknowledged twice"
    if acked.committed_offsets or acked.failed_offsets:
        allowed = set(acked.committed_offsets[-1:] or [-1]) | set(acked.failed_offsets)
        assert workload.fetch_offset() in allowed, "the committed offset is not the last acknowledged one"
    # The restarted broker takes new writes on every partition.
    assert workload.init_producer()
    for partition in range(PARTITIONS):
        assert workload.produce(partition, [b"after-restart"], attempts=1), f"partition {partition} refuses writes"


def run_workload(directory: Path, fault: Fault | None = None, disk_bytes: int | None = None
                 ) -> tuple[DiskHarness, Workload]:
    """A fresh broker in `directory`, `fault` injected and the disk limited to `disk_bytes`, the workload run."""
    harness = DiskHarness(directory)
    harness.start()
    if fault is not None:
        harness.plan.add(fault)
    harness.plan.disk_bytes_left = disk_bytes
    workload = Workload(harness)
    workload.run()
    return harness, workload


def restart_and_check(harness: DiskHarness, workload: Workload) -> None:
    """Drop the broker as kill -9 would, clear the faults, restart, check, and drop it again."""
    harness.crash()
    harness.plan.clear()
    harness.start()
    try:
        check(harness, workload)
    finally:
        harness.crash()
