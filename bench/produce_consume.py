"""Produce N records of a given size with confluent-kafka, then read them back; print MB/s and records/s.

    python bench/produce_consume.py --records 200000 --size 1024 --acks all
    python bench/produce_consume.py --bootstrap 127.0.0.1:9092   # against a running broker

Without --bootstrap it starts `oncelog serve` in a subprocess on a temp dir (so broker and client run in
separate processes, as in production). Figures, not assertions: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from oncelog.testing import BrokerProcess


def produce(bootstrap: str, topic: str, records: int, size: int, acks: str, **extra: object) -> float:
    producer = Producer({
        "bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 5, "batch.size": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576, "queue.buffering.max.messages": 1_000_000, **extra,
    })
    value = b"x" * size
    failures = 0

    def delivered(error: object, _message: object) -> None:
        nonlocal failures
        if error is not None:
            failures += 1

    # Warm up: connections, metadata and (idempotent producers) the producer id are client start-up costs
    # of hundreds of milliseconds in librdkafka, not throughput; keep them out of the timed part.
    producer.produce(topic, value=value, partition=0, on_delivery=delivered)
    producer.flush(30)
    started = time.perf_counter()
    for _ in range(records):
        while True:
            try:
                producer.produce(topic, value=value, partition=0, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(120)
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{failures} deliveries failed")
    return elapsed


def consume(bootstrap: str, topic: str, records: int, **extra: object) -> float:
    records += 1  # the warm-up record
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "bench", "enable.partition.eof": True, "enable.auto.commit": False,
        "fetch.max.bytes": 52_428_800, "max.partition.fetch.bytes": 8_388_608,
        "queued.max.messages.kbytes": 1_048_576, **extra,
    })
    consumer.assign([TopicPartition(topic, 0, 0)])
    received = 0
    started = time.perf_counter()
    while received < records:
        for message in consumer.consume(10_000, 1.0):
            error = message.error()
            if error is None:
                received += 1
            elif error.code() != KafkaError._PARTITION_EOF:
                raise SystemExit(f"consume error: {error}")
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def report(what: str, records: int, size: int, elapsed: float) -> None:
    megabytes = records * size / 1e6
    print(f"{what:<28} {records:>9} records  {elapsed:7.2f} s  {megabytes / elapsed:8.1f} MB/s  "
          f"{records / elapsed:10.0f} records/s", flush=True)


@contextmanager
def running_broker(bootstrap: str | None) -> Iterator[str]:
    """`bootstrap` if given, else a broker subprocess on a temp dir for the duration."""
    if bootstrap is not None:
        yield bootstrap
        return
    with tempfile.TemporaryDirectory(prefix="oncelog-bench-") as directory:
        broker = BrokerProcess(Path(directory) / "data")
        try:
            yield broker.start()
        finally:
            broker.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", help="a running broker (default: start one)")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=1024, help="value bytes per record")
    parser.add_argument("--acks", choices=["1", "all", "both"], default="both")
    args = parser.parse_args()
    with running_broker(args.bootstrap) as bootstrap:
        for acks in (["1", "all"] if args.acks == "both" else [args.acks]):
            topic = f"bench-{uuid.uuid4().hex[:8]}"
            report(f"produce acks={acks}", args.records, args.size,
                   produce(bootstrap, topic, args.records, args.size, acks))
            report(f"read back (acks={acks} topic)", args.records, args.size,
                   consume(bootstrap, topic, args.records))


if __name__ == "__main__":
    main()
