"""Simulated Kafka clients: the request sequences real clients send, with their retry rules.

Theory of operation: each client is a generator program run by `network.ClientDriver` (one request in
flight at a time). The rules are those of librdkafka and the Java client, reduced to what matters for
the guarantees: an idempotent producer retries a batch with the same producer id, epoch and sequence
until it is answered, and if it gives up, the batch's fate is unknown and it starts over with a new
producer id; a transactional producer adds partitions, produces, may commit offsets for its group
inside the transaction, then commits or aborts (EndTxn retried as it is idempotent), aborts on any
produce it could not get acknowledged, and re-initialises when fenced; a poller fetches every partition
from its positions with long polls, dropping aborted transactions' records for read_committed as
clients do with the aborted-transactions list. Every send, transaction and poll goes to `History`.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from oncelog.errors import ErrorCode
from oncelog.protocol.records import build_batch, iter_batches, iter_records, visible_batches

from .history import History, Send
from .network import Call, Disconnected, Program, Sleep

TOPIC = "sim"
RETRIABLE = {
    ErrorCode.request_timed_out, ErrorCode.kafka_storage_error, ErrorCode.not_leader_or_follower,
    ErrorCode.not_enough_replicas, ErrorCode.not_enough_replicas_after_append, ErrorCode.unknown_topic_or_partition,
    ErrorCode.coordinator_not_available, ErrorCode.coordinator_load_in_progress, ErrorCode.not_coordinator,
    ErrorCode.concurrent_transactions, ErrorCode.unknown_server_error,
}
"""What a client retries (UNKNOWN_SERVER_ERROR included: the simulation reports its cause separately)."""
ATTEMPTS = 6
TRANSACTION_TIMEOUT_MS = 5_000


@dataclass
class Workload:
    """What the clients share: the history, the random source, the clock, and when to stop."""

    history: History
    random: Any
    clock: Any
    partitions: int
    note: Any = print
    """Adds a line to the run's trace."""
    stopping: bool = False
    producers_done: bool = False
    group_stop: bool = False
    """The group has consumed everything: its members leave."""
    group_committed: dict[int, int] = field(default_factory=dict)
    """partition -> the highest offset a group member's commit was acknowledged for."""
    next_group_offset: dict[str, int] = field(default_factory=dict)


def _code(value: Any) -> ErrorCode:
    return ErrorCode(int(value))


def create_topic(w: Workload) -> Program:
    while True:
        try:
            response = yield Call(19, 5, {"topics": [{
                "name": TOPIC, "num_partitions": w.partitions, "replication_factor": 1, "assignments": [],
                "configs": []}], "timeout": 1000, "validate_only": False})
        except Disconnected:
            continue
        if _code(response.topics[0].error_code) in (ErrorCode.none, ErrorCode.topic_already_exists):
            return
        yield Sleep(100)


def _init_producer(w: Workload, transactional_id: str | None) -> Generator[Call | Sleep, Any, tuple[int, int]]:
    while True:
        try:
            response = yield Call(22, 4, {"transactional_id": transactional_id,
                                          "transaction_timeout": TRANSACTION_TIMEOUT_MS,
                                          "producer_id": -1, "producer_epoch": -1})
        except Disconnected:
            continue
        if _code(response.error_code) == ErrorCode.none:
            w.note(f"{transactional_id or 'idempotent'}: producer id {response.producer_id} epoch "
                   f"{response.producer_epoch}")
            return int(response.producer_id), int(response.producer_epoch)
        yield Sleep(w.random.randint(20, 200))


@dataclass
class Unanswered:
    """Requests a client gave up waiting for (they may still reach the broker later)."""

    count: int = 0


def _produce(w: Workload, send: Send, batch: bytes, transactional_id: str | None,
             unanswered: Unanswered) -> Generator[Call | Sleep, Any, bool]:
    """Send one batch until it is acknowledged (True) or the client gives up (False, fate recorded)."""
    definite_failure = True
    for _attempt in range(ATTEMPTS):
        try:
            response = yield Call(0, 9, {"transactional_id": transactional_id, "acks": -1, "timeout": 2000,
                                         "topic_data": [{"name": TOPIC, "partition_data": [
                                             {"index": send.partition, "records": batch}]}]})
        except Disconnected:
            definite_failure = False
            unanswered.count += 1
            continue
        result = response.responses[0].partition_responses[0]
        code = _code(result.error_code)
        if code == ErrorCode.none:
            send.outcome, send.offset = "ok", int(result.base_offset)
            w.note(f"{send.producer}: {send.values[0]}.. acknowledged at {send.partition}@{send.offset}")
            return True
        if code not in RETRIABLE:
            w.note(f"{send.producer}: produce to partition {send.partition} answered {code!r}")
            break
        definite_failure = definite_failure and code != ErrorCode.kafka_storage_error \
            and code != ErrorCode.request_timed_out and code != ErrorCode.unknown_server_error
        yield Sleep(w.random.randint(10, 100))
    # Kafka's answers to an attempt are definite only if no earlier attempt may still be in the log.
    send.outcome = "failed" if definite_failure else "unknown"
    w.note(f"{send.producer}: {send.values[0]}.. to partition {send.partition} {send.outcome}")
    return False


def idempotent_producer(w: Workload, name: str) -> Program:
    producer_id, epoch = yield from _init_producer(w, None)
    sequences = [0] * w.partitions
    number = 0
    while not w.stopping:
        partition = w.random.randrange(w.partitions)
        count = w.random.randint(1, 3)
        values = [f"{name}-{number + i}" for i in range(count)]
        number += count
        send = w.history.send(name, partition, values)
        batch = build_batch([(None, value.encode()) for value in values], producer_id=producer_id,
                            producer_epoch=epoch, base_sequence=sequences[partition], timestamp_ms=w.clock())
        if (yield from _produce(w, send, batch, None, Unanswered())):
            sequences[partition] += count
        else:  # the sequence is ambiguous now: start over as a new producer (librdkafka resets the id)
            producer_id, epoch = yield from _init_producer(w, None)
            sequences = [0] * w.partitions
        yield Sleep(w.random.randint(0, 30))


def _transaction_call(call: Call, unanswered: Unanswered,
                      attempts: int = ATTEMPTS) -> Generator[Call | Sleep, Any, ErrorCode | None]:
    """A coordinator request retried on disconnects and retriable errors; its error code, or None if it
    never got an answer."""
    code: ErrorCode | None = None
    for _attempt in range(attempts):
        try:
            response = yield call
        except Disconnected:
            code = None
            unanswered.count += 1
            continue
        code = _response_code(call.api_key, response)
        if code not in RETRIABLE:
            return code
        yield Sleep(50)
    return code if code not in RETRIABLE else None


def _response_code(api_key: int, response: Any) -> ErrorCode:
    if api_key == 24:  # AddPartitionsToTxn v3: per partition
        codes = [_code(p.partition_error_code) for t in response.results_by_topic_v3_and_below
                 for p in t.results_by_partition]
        return next((code for code in codes if code != ErrorCode.none), ErrorCode.none)
    if api_key == 28:  # TxnOffsetCommit: per partition
        codes = [_code(p.error_code) for t in response.topics for p in t.partitions]
        return next((code for code in codes if code != ErrorCode.none), ErrorCode.none)
    return _code(response.error_code)


def transactional_producer(w: Workload, name: str, transactional_id: str, vanish: float) -> Program:
    """Transactions until told to stop; with chance `vanish` per transaction, dies in the middle of one."""
    group = f"eos-{transactional_id}"
    producer_id, epoch = yield from _init_producer(w, transactional_id)
    sequences = [0] * w.partitions
    number = 0
    while not w.stopping:
        number += 1
        transaction = w.history.begin(f"{name}.{number}", producer_id, epoch)
        unanswered = Unanswered()
        ids = {"transactional_id": transactional_id, "producer_id": producer_id, "producer_epoch": epoch}
        partitions = sorted(w.random.sample(range(w.partitions), w.random.randint(1, w.partitions)))
        code = yield from _transaction_call(Call(24, 3, {
            "v3_and_below_transactional_id": transactional_id, "v3_and_below_producer_id": producer_id,
            "v3_and_below_producer_epoch": epoch, "v3_and_below_topics": [{"name": TOPIC, "partitions": partitions}]}),
            unanswered)
        healthy = code == ErrorCode.none
        for partition in partitions if healthy else []:
            values = [f"{name}.{number}-{partition}-{i}" for i in range(w.random.randint(1, 2))]
            send = w.history.send(name, partition, values, transaction)
            batch = build_batch([(None, value.encode()) for value in values], producer_id=producer_id,
                                producer_epoch=epoch, base_sequence=sequences[partition], transactional=True,
                                timestamp_ms=w.clock())
            if not (yield from _produce(w, send, batch, transactional_id, unanswered)):
                healthy = False
                break
            sequences[partition] += len(values)
        if healthy and w.random.random() < 0.5:
            code = yield from _transaction_call(Call(25, 3, {**ids, "group_id": group}), unanswered)
            offset = w.next_group_offset[group] = w.next_group_offset.get(group, 0) + 1
            if code == ErrorCode.none:
                code = yield from _transaction_call(Call(28, 3, {
                    **ids, "group_id": group, "generation_id": -1, "member_id": "", "group_instance_id": None,
                    "topics": [{"name": TOPIC, "partitions": [{"partition_index": 0, "committed_offset": offset,
                                                               "committed_leader_epoch": -1,
                                                               "committed_metadata": None}]}]}), unanswered)
                if code == ErrorCode.none:
                    transaction.group, transaction.committed_offset = group, offset
            healthy = code == ErrorCode.none
        if w.random.random() < vanish:
            return  # the process died: the coordinator must time the transaction out
        commit = healthy and w.random.random() < 0.7
        code = yield from _transaction_call(Call(26, 3, {**ids, "committed": commit}), unanswered)
        w.note(f"{transaction.name}: EndTxn({'commit' if commit else 'abort'}) answered {code!r}")
        if code == ErrorCode.none:
            transaction.outcome = "committed" if commit else "aborted"
        if code == ErrorCode.none and (unanswered.count or any(send.outcome != "ok" for send in transaction.sends)):
            # A batch whose fate is unknown leaves its sequence ambiguous: bump the epoch before the next
            # transaction, as KIP-360 clients do after aborting one. And a request of this transaction
            # that is still on its way could act in the next one if the epoch stayed (a late EndTxn
            # commits it, a late TxnOffsetCommit joins it): transaction version 1 cannot tell them apart,
            # which KIP-890 part 2 closes by bumping the epoch at every EndTxn. The bump here does the
            # same, so what the simulation checks is the broker, not that known protocol gap.
            producer_id, epoch = yield from _init_producer(w, transactional_id)
            sequences = [0] * w.partitions
        elif code != ErrorCode.none:
            transaction.outcome = "unknown"
            producer_id, epoch = yield from _init_producer(w, transactional_id)  # fences the old epoch
            sequences = [0] * w.partitions
        yield Sleep(w.random.randint(0, 50))


def _fetch_call(w: Workload, positions: list[int], read_committed: bool, wait_ms: int,
                partitions: list[int] | None = None) -> Call:
    """Fetch `partitions` (default: all) from `positions` (one per partition asked for)."""
    return Call(1, 11, {
        "replica_id": -1, "max_wait": wait_ms, "min_bytes": 1, "max_bytes": 1 << 20,
        "isolation_level": 1 if read_committed else 0, "session_id": 0, "session_epoch": -1,
        "topics": [{"topic": TOPIC, "partitions": [
            {"partition": partition, "current_leader_epoch": -1, "fetch_offset": position, "log_start_offset": -1,
             "partition_max_bytes": 1 << 16}
            for partition, position in zip(partitions or range(len(positions)), positions, strict=True)]}],
        "forgotten_topics_data": [], "rack_id": ""}, timeout_ms=wait_ms + 3_000)


def visible_records(data: Any, read_committed: bool) -> tuple[list[tuple[int, str]], int | None]:
    """The (offset, value) a client hands its application from one partition's fetch data, and the
    offset after the last batch (None if there was none): control batches skipped, and for
    read_committed the records of aborted transactions, as clients filter them."""
    records = bytes(data.records or b"")
    aborted = [(int(a.first_offset), int(a.producer_id)) for a in (data.aborted_transactions or ())]
    seen: list[tuple[int, str]] = []
    for position, _header in visible_batches(records, aborted, read_committed):
        seen += [(record.offset, (record.value or b"").decode()) for record in iter_records(records, position)]
    last = None
    for _position, header in iter_batches(records):
        last = header.next_offset
    return seen, last


def poller(w: Workload, name: str, read_committed: bool) -> Program:
    """Assign-style consumer of every partition from offset 0; records everything it is handed."""
    if read_committed:
        w.history.read_committed.add(name)
    positions = [0] * w.partitions
    quiet = 0
    while quiet < 3:
        try:
            response = yield _fetch_call(w, positions, read_committed, w.random.choice((0, 50, 200)))
        except Disconnected:
            continue
        progressed = False
        for data in response.responses[0].partitions if response.responses else ():
            partition = int(data.partition_index)
            code = _code(data.error_code)
            if code == ErrorCode.offset_out_of_range:
                w.history.polls[name].append((partition, positions[partition], "<out of range>"))
                continue
            if code != ErrorCode.none:
                continue
            seen, next_offset = visible_records(data, read_committed)
            for offset, value in seen:
                if offset >= positions[partition]:
                    w.history.polls[name].append((partition, offset, value))
            if next_offset is not None and next_offset > positions[partition]:
                positions[partition] = next_offset
                progressed = True
        w.history.positions[name] = dict(enumerate(positions))
        quiet = quiet + 1 if w.producers_done and not progressed else 0
        if not progressed:
            yield Sleep(w.random.randint(0, 50))
