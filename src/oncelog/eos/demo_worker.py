"""The demo's worker processes: the processor and the sink, in three delivery modes.

    python -m oncelog.eos.demo_worker processor|sink MODE --bootstrap B --input T --output T --group G --db URL

- exactly-once: the `Processor` (offsets in the Kafka transaction) and the `DatabaseSink` (offsets in
  the database transaction).
- at-least-once: the naive way the seed describes — write first (produce and flush, or insert and
  commit the rows), then commit the consumed offsets to Kafka. A crash in between repeats the batch.
- at-most-once: the other naive way — commit the consumed offsets to Kafka first, then write. A crash in
  between loses the batch.

Workers are paced: each batch takes a little "processing" time, so the demo's random kills land
mid-stream. In the naive modes that time falls between the two steps, where a real application does its
work; the exactly-once mode has no such window to fall into. Every worker uses static membership
(`group.instance.id`), so a restarted worker takes its partitions back at once instead of waiting out the
dead one's session timeout.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Iterator

from confluent_kafka import Consumer, Message, Producer

from .database import Database, connect
from .processor import Output, Processor, ProcessorConfig
from .sink import DatabaseSink, SinkConfig

BATCH_RECORDS = 50
PAUSE_S = 0.02
ROWS_TABLE = "orders_enriched_rows"


def enrich(message: Message, output_topic: str) -> Iterator[Output]:
    order = json.loads(message.value() or b"{}")
    order["enriched"] = True
    order["total_cents"] = order.get("quantity", 0) * order.get("price_cents", 0)
    yield Output(output_topic, message.key(), json.dumps(order).encode())


def create_rows_table(database: Database) -> None:
    database.execute(f"CREATE TABLE IF NOT EXISTS {ROWS_TABLE} (order_id INTEGER NOT NULL, payload TEXT NOT NULL, "
                     "source_partition INTEGER NOT NULL, source_offset BIGINT NOT NULL)")
    database.commit()


def insert_rows(database: Database, messages: list[Message]) -> None:
    for message in messages:
        order = json.loads(message.value() or b"{}")
        database.execute(f"INSERT INTO {ROWS_TABLE} (order_id, payload, source_partition, source_offset) "
                         "VALUES (?, ?, ?, ?)", (order["order_id"], json.dumps(order), message.partition(),
                                                 message.offset()))


class _Paced:
    """The enrich transform with the demo's pause per batch of records."""

    def __init__(self, output_topic: str) -> None:
        self.output_topic = output_topic
        self.count = 0

    def __call__(self, message: Message) -> Iterator[Output]:
        self.count += 1
        if self.count % BATCH_RECORDS == 0:
            time.sleep(PAUSE_S)
        yield from enrich(message, self.output_topic)


def _membership(role: str) -> dict[str, object]:
    return {"group.instance.id": f"demo-{role}", "session.timeout.ms": 6000}


def _naive_consumer(args: argparse.Namespace, topic: str) -> Consumer:
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                         **_membership(args.role)})
    consumer.subscribe([topic])
    return consumer


def _batches(consumer: Consumer, stopping: list[bool]) -> Iterator[list[Message]]:
    while not stopping[0]:
        messages = [m for m in consumer.consume(BATCH_RECORDS, 0.2) if m.error() is None]
        if messages:
            yield messages


def run_processor(args: argparse.Namespace, stopping: list[bool]) -> None:
    if args.mode == "exactly-once":
        processor = Processor(ProcessorConfig(args.bootstrap, args.group, [args.input], f"{args.group}-tx",
                                              batch_records_max=BATCH_RECORDS, progress_interval_s=3600,
                                              consumer_config=_membership("processor")),
                              _Paced(args.output))
        signal.signal(signal.SIGTERM, lambda *_: processor.stop())
        processor.run(install_signal_handlers=False)
        return
    consumer = _naive_consumer(args, args.input)
    producer = Producer({"bootstrap.servers": args.bootstrap, "acks": "all", "enable.idempotence": True})
    for messages in _batches(consumer, stopping):
        if args.mode == "at-most-once":
            consumer.commit(asynchronous=False)  # offsets first: a crash from here on loses the batch
            time.sleep(PAUSE_S)
        for message in messages:
            for output in enrich(message, args.output):
                producer.produce(args.output, key=output.key, value=output.value)
        producer.flush(30)
        if args.mode == "at-least-once":
            time.sleep(PAUSE_S)  # outputs first: a crash from here to the commit repeats the batch
            consumer.commit(asynchronous=False)
    consumer.close()


def run_sink(args: argparse.Namespace, stopping: list[bool]) -> None:
    database = connect(args.db)
    create_rows_table(database)
    if args.mode == "exactly-once":
        database.close()
        sink = DatabaseSink(SinkConfig(args.bootstrap, args.group, [args.output], args.db,
                                       batch_records_max=BATCH_RECORDS, consumer_config=_membership("sink")),
                            _paced_insert)
        signal.signal(signal.SIGTERM, lambda *_: sink.stop())
        sink.run(install_signal_handlers=False)
        return
    consumer = _naive_consumer(args, args.output)
    for messages in _batches(consumer, stopping):
        if args.mode == "at-most-once":
            consumer.commit(asynchronous=False)
            time.sleep(PAUSE_S)
        insert_rows(database, messages)
        database.commit()
        if args.mode == "at-least-once":
            time.sleep(PAUSE_S)
            consumer.commit(asynchronous=False)
    consumer.close()
    database.close()


def _paced_insert(database: Database, messages: list[Message]) -> None:
    insert_rows(database, messages)
    time.sleep(PAUSE_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oncelog.eos.demo_worker")
    parser.add_argument("role", choices=["processor", "sink"])
    parser.add_argument("mode", choices=["at-most-once", "at-least-once", "exactly-once"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--db", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    stopping = [False]
    signal.signal(signal.SIGTERM, lambda *_: stopping.__setitem__(0, True))
    (run_processor if args.role == "processor" else run_sink)(args, stopping)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
