"""`oncelog transactions list|describe|find-hanging|abort`, like Kafka's kafka-transactions.sh."""

from __future__ import annotations

import argparse
import struct
import time
from dataclasses import dataclass
from typing import Any

from oncelog.admin import NotFound, _metadata, print_report
from oncelog.client import ClientError, KafkaClient, connect
from oncelog.errors import ErrorCode
from oncelog.protocol.framing import read_uvarint, skip_tagged_fields
from oncelog.report import Report

DESCRIBE_PRODUCERS, DESCRIBE_TRANSACTIONS, LIST_TRANSACTIONS, WRITE_TXN_MARKERS = 61, 65, 66, 27


def _list(client: KafkaClient, states: list[str]) -> Report:
    response = client.request(LIST_TRANSACTIONS, 1, {"state_filters": states, "producer_id_filters": [],
                                                      "duration_filter": -1})
    if response.unknown_state_filters:
        raise ClientError("unknown state(s): " + ", ".join(response.unknown_state_filters) + " (states: Empty, "
                          "Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort)")
    rows: list[Any] = [(t.transactional_id, t.producer_id, t.transaction_state) for t in response.transaction_states]
    return Report(empty="no transactions").add("transactions", ["TRANSACTIONAL ID", "PRODUCER ID", "STATE"], rows)


@dataclass(frozen=True, slots=True)
class TransactionState:
    error_code: ErrorCode
    transactional_id: str
    transaction_state: str
    transaction_timeout_ms: int
    transaction_start_time_ms: int
    producer_id: int
    producer_epoch: int
    topics: list[tuple[str, list[int]]]


class _Body:
    """A cursor over a flexible response body: kio cannot read DescribeTransactions, whose start time is -1
    for ids without a transaction (it refuses negative timestamps), so this one is read by hand."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def fixed(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.position)
        self.position += struct.calcsize(fmt)
        return int(value)

    def uvarint(self) -> int:
        value, self.position = read_uvarint(self.data, self.position)
        return value

    def string(self) -> str:
        length = self.uvarint() - 1
        text = self.data[self.position : self.position + max(length, 0)].decode()
        self.position += max(length, 0)
        return text

    def tags(self) -> None:
        self.position = skip_tagged_fields(self.data, self.position)


def describe_transaction(client: KafkaClient, transactional_id: str) -> TransactionState:
    body = _Body(client.request_body(DESCRIBE_TRANSACTIONS, 0, {"transactional_ids": [transactional_id]}))
    body.fixed(">i")  # throttle time
    if body.uvarint() - 1 != 1:
        raise ClientError("DescribeTransactions answered for other than the one id asked")
    error_code, name, state = ErrorCode(body.fixed(">h")), body.string(), body.string()
    timeout_ms, start_ms, producer_id, epoch = body.fixed(">i"), body.fixed(">q"), body.fixed(">q"), body.fixed(">h")
    topics = []
    for _ in range(body.uvarint() - 1):
        topic = body.string()
        partitions = [body.fixed(">i") for _ in range(body.uvarint() - 1)]
        body.tags()
        topics.append((topic, partitions))
    return TransactionState(error_code, name, state, timeout_ms, start_ms, producer_id, epoch, topics)


def _describe(client: KafkaClient, transactional_id: str) -> Report:
    state = describe_transaction(client, transactional_id)
    if state.error_code == ErrorCode.transactional_id_not_found:
        raise NotFound(f"transactional id {transactional_id} does not exist (TRANSACTIONAL_ID_NOT_FOUND)")
    if state.error_code != ErrorCode.none:
        raise ClientError(f"transactional id {transactional_id}: {state.error_code.name.upper()}")
    start_ms = state.transaction_start_time_ms
    duration = f"{(time.time() * 1000 - start_ms) / 1000:.1f}s" if start_ms >= 0 else "-"
    partitions = ", ".join(f"{topic}-{p}" for topic, ps in state.topics for p in ps) or "-"
    return Report().add(
        "transactions", ["TRANSACTIONAL ID", "PRODUCER ID", "EPOCH", "STATE", "TIMEOUT MS", "DURATION", "PARTITIONS"],
        [(state.transactional_id, state.producer_id, state.producer_epoch, state.transaction_state,
          state.transaction_timeout_ms, duration, partitions)])


def _open_transactions(client: KafkaClient, topics: list[str] | None) -> list[tuple[str, int, Any]]:
    """(topic, partition, producer state) of every producer with an open transaction on a partition."""
    metadata = _metadata(client, topics)
    found = []
    for topic in metadata.topics:
        if topic.error_code != 0:
            continue
        partitions = [p.partition_index for p in topic.partitions]
        response = client.request(DESCRIBE_PRODUCERS, 0, {"topics": [{"name": topic.name,
                                                                       "partition_indexes": partitions}]})
        for result in response.topics[0].partitions:
            for producer in result.active_producers:
                if producer.current_txn_start_offset >= 0:
                    found.append((topic.name, int(result.partition_index), producer))
    return found


def _find_hanging(client: KafkaClient, topics: list[str] | None, max_timeout_ms: int) -> Report:
    """Open transactions older than the max timeout that the coordinator does not hold as Ongoing with that
    partition (Kafka's FindHangingTransactionsCommand)."""
    listed = client.request(LIST_TRANSACTIONS, 1, {"state_filters": [], "producer_id_filters": [],
                                                    "duration_filter": -1}).transaction_states
    by_producer = {t.producer_id: t.transactional_id for t in listed}
    now_ms = int(time.time() * 1000)
    rows: list[Any] = []
    for topic, partition, producer in _open_transactions(client, topics):
        age_ms = now_ms - producer.last_timestamp
        if age_ms < max_timeout_ms:
            continue
        transactional_id = by_producer.get(producer.producer_id)
        if transactional_id is not None:
            state = describe_transaction(client, transactional_id)
            in_transaction = any(name == topic and partition in ps for name, ps in state.topics)
            if state.transaction_state == "Ongoing" and in_transaction:
                continue
        rows.append((topic, partition, producer.producer_id, producer.producer_epoch, producer.coordinator_epoch,
                     producer.current_txn_start_offset, producer.last_timestamp, f"{age_ms / 60000:.1f}",
                     transactional_id or "-"))
    headers = ["TOPIC", "PARTITION", "PRODUCER ID", "EPOCH", "COORDINATOR EPOCH", "START OFFSET",
               "LAST TIMESTAMP", "DURATION MIN", "TRANSACTIONAL ID"]
    return Report(empty="no hanging transactions").add("hanging", headers, rows)


def _abort(client: KafkaClient, topic: str, partition: int, start_offset: int) -> str:
    candidates = [p for t, index, p in _open_transactions(client, [topic])
                  if index == partition and p.current_txn_start_offset == start_offset]
    if not candidates:
        raise ClientError(f"no open transaction starts at offset {start_offset} of {topic}-{partition} "
                          "(see `oncelog transactions find-hanging`)")
    producer = candidates[0]
    response = client.request(WRITE_TXN_MARKERS, 1, {"markers": [{
        "producer_id": producer.producer_id, "producer_epoch": producer.producer_epoch, "transaction_result": False,
        "topics": [{"name": topic, "partition_indexes": [partition]}],
        "coordinator_epoch": producer.coordinator_epoch}]})
    code = response.markers[0].topics[0].partitions[0].error_code
    if code != 0:
        raise ClientError(f"abort failed: {code.name.upper()}")
    return (f"aborted the transaction of producer {producer.producer_id} (epoch {producer.producer_epoch}) "
            f"starting at offset {start_offset} of {topic}-{partition}")


def run_transactions(args: argparse.Namespace) -> int:
    with connect(args) as client:
        if args.action == "list":
            output: Report | str = _list(client, args.state or [])
        elif args.action == "describe":
            output = _describe(client, args.transactional_id)
        elif args.action == "find-hanging":
            output = _find_hanging(client, args.topic or None, args.max_transaction_timeout_ms)
        else:
            output = _abort(client, args.topic, args.partition, args.start_offset)
    print_report(output, args)
    return 0
