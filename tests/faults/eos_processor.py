"""A consume → transform → produce process with exactly-once semantics, for tests that SIGKILL it.

    python eos_processor.py BOOTSTRAP INPUT_TOPIC OUTPUT_TOPIC GROUP_ID TRANSACTIONAL_ID SESSION_TIMEOUT_MS

It is the loop of librdkafka's `examples/transactions.c` with confluent-kafka: a group consumer
(read_committed, no auto commit) and a transactional producer with a fixed transactional.id, so a restarted
instance fences its killed predecessor and aborts whatever transaction that one left open. Per batch of
polled records it begins a transaction, produces `value + b"-out"` to the same partition of the output
topic, flushes it, pauses PROCESSING_PAUSE_S (so a kill often lands inside a transaction whose output is
in the log), adds the consumer's positions with `send_offsets_to_transaction` and commits. If the commit
fails with an abortable error it aborts and rewinds to the last committed offsets.

It prints, flushed at once, `ready` once it has its assignment, `committed N` after each commit (N =
input records handled by this process), and `done` when its committed positions have reached the end of
every input partition (the input is written completely before the processor starts); it then exits 0.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

BATCH_MAX = 50
POLL_S = 0.2
TIMEOUT_S = 10.0
PROCESSING_PAUSE_S = 0.03
"""A pause with the transaction's output in the log, before its offsets and commit: a kill then often
leaves output that must be aborted."""


def _say(line: str) -> None:
    print(line, flush=True)


def _rewind(consumer: Consumer, assignment: list[TopicPartition]) -> None:
    """After an aborted transaction, go back to what the group has committed."""
    for committed in consumer.committed(assignment, TIMEOUT_S):
        consumer.seek(committed if committed.offset >= 0 else TopicPartition(committed.topic, committed.partition, 0))


def _reached(consumer: Consumer, assignment: list[TopicPartition], ends: dict[int, int]) -> bool:
    """Has every partition been handled up to its end? A partition this process has not read from yet has
    no position: its committed offset tells (a predecessor may have finished it)."""
    positions = {tp.partition: tp.offset for tp in consumer.position(assignment)}
    unknown = [tp for tp in assignment if positions[tp.partition] < 0]
    if unknown:
        positions.update({tp.partition: tp.offset for tp in consumer.committed(unknown, TIMEOUT_S)})
    return all(positions.get(p, -1) >= end for p, end in ends.items())


def _end_offset(consumer: Consumer, partition: TopicPartition) -> int:
    """The partition's high watermark, asked again while the cluster changes under us (a broker that just
    died may still be its leader; librdkafka then fails the request with a local error)."""
    deadline = time.monotonic() + TIMEOUT_S * 3
    while True:
        try:
            return int(consumer.get_watermark_offsets(partition, TIMEOUT_S, cached=False)[1])
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _retrying(call: Callable[[], object], attempts: int = 5) -> None:
    """librdkafka's transactions.c: a retriable error (a timeout while brokers die) means call it again."""
    for attempt in range(attempts):
        try:
            call()
            return
        except KafkaException as error:
            if not error.args[0].retriable() or attempt == attempts - 1:
                raise
            _say(f"retrying after {error.args[0]}")


def main(argv: list[str]) -> int:
    bootstrap, input_topic, output_topic, group_id, transactional_id, session_timeout_ms = argv[:6]
    debug = {"debug": os.environ["EOS_PROCESSOR_DEBUG"]} if os.environ.get("EOS_PROCESSOR_DEBUG") else {}
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id, "linger.ms": 5,
                         "transaction.timeout.ms": 30_000, **debug})
    producer.init_transactions(TIMEOUT_S * 3)  # fences the previous instance, aborts its open transaction
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group_id, "client.id": "eos-processor",
        "isolation.level": "read_committed", "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "session.timeout.ms": int(session_timeout_ms), "heartbeat.interval.ms": 200, **debug,
    })
    partitions = len(consumer.list_topics(input_topic, TIMEOUT_S).topics[input_topic].partitions)
    ends = {p: _end_offset(consumer, TopicPartition(input_topic, p)) for p in range(partitions)}
    consumer.subscribe([input_topic])
    handled = 0
    ready = False
    while True:
        messages = consumer.consume(BATCH_MAX, POLL_S)
        assignment = consumer.assignment()
        if not ready and len(assignment) == partitions:
            ready = True
            _say("ready")
        records = [m for m in messages if m.error() is None]
        for message in messages:
            if message.error() is not None:
                raise KafkaException(message.error())
        if records:
            producer.begin_transaction()
            for message in records:
                producer.produce(output_topic, value=message.value() + b"-out", key=message.key(),
                                 partition=message.partition())
            producer.flush(TIMEOUT_S)
            time.sleep(PROCESSING_PAUSE_S)
            positions = consumer.position(assignment)
            try:
                metadata = consumer.consumer_group_metadata()
                _retrying(lambda: producer.send_offsets_to_transaction(positions, metadata, TIMEOUT_S))  # noqa: B023
                _retrying(lambda: producer.commit_transaction(TIMEOUT_S))
            except KafkaException as error:
                if not error.args[0].txn_requires_abort():
                    raise
                producer.abort_transaction(TIMEOUT_S)
                _rewind(consumer, assignment)
                continue
            handled += len(records)
            _say(f"committed {handled}")
        if not records and ready and len(assignment) == partitions and _reached(consumer, assignment, ends):
            _say("done")
            consumer.close()
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
