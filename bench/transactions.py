"""Transactional vs plain produce throughput (confluent-kafka, acks=all) and commit latency.

    python bench/transactions.py --seconds 10 --size 1024 --commit-interval-ms 100

The transactional producer commits every --commit-interval-ms; the plain one is idempotent (what a
transactional producer is underneath). Both run against one broker subprocess on fresh topics. Prints
MB/s for each, the ratio (goal ≥ 0.9) and commit latency p50/p99 (EndTxn round trip after the
transaction's records were delivered: markers written and fsynced, CompleteCommit durable).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer

from oncelog.testing import BrokerProcess

CONFIG = {"linger.ms": 5, "batch.size": 1_000_000, "queue.buffering.max.kbytes": 1_048_576,
          "queue.buffering.max.messages": 1_000_000, "acks": "all", "enable.idempotence": True}


def _produce_until(producer: Producer, topic: str, value: bytes, deadline: float) -> int:
    sent = 0
    while time.perf_counter() < deadline:
        try:
            producer.produce(topic, value=value, partition=0)
            sent += 1
        except BufferError:
            producer.poll(0.005)
    return sent


def plain(bootstrap: str, seconds: float, size: int) -> float:
    producer = Producer({"bootstrap.servers": bootstrap, **CONFIG})
    topic = f"bench-plain-{uuid.uuid4().hex[:6]}"
    producer.produce(topic, value=b"warm-up", partition=0)
    producer.flush(30)
    started = time.perf_counter()
    sent = _produce_until(producer, topic, b"x" * size, started + seconds)
    producer.flush(120)
    return sent * size / (time.perf_counter() - started) / 1e6


def transactional(bootstrap: str, seconds: float, size: int, interval_ms: int) -> tuple[float, list[float]]:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"bench-{uuid.uuid4().hex[:6]}",
                         **CONFIG})
    topic = f"bench-txn-{uuid.uuid4().hex[:6]}"
    producer.init_transactions(30)
    value = b"x" * size
    latencies: list[float] = []
    sent = 0
    started = time.perf_counter()
    end = started + seconds
    while time.perf_counter() < end:
        producer.begin_transaction()
        sent += _produce_until(producer, topic, value, min(end, time.perf_counter() + interval_ms / 1000))
        producer.flush(60)  # time the commit protocol itself, not the delivery of the batch's data
        commit_started = time.perf_counter()
        producer.commit_transaction(60)
        latencies.append((time.perf_counter() - commit_started) * 1000)
    return sent * size / (time.perf_counter() - started) / 1e6, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--commit-interval-ms", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="oncelog-bench-") as directory:
        broker = BrokerProcess(Path(directory) / "data")
        bootstrap = broker.start()
        try:
            plain_mb = plain(bootstrap, args.seconds, args.size)
            txn_mb, latencies = transactional(bootstrap, args.seconds, args.size, args.commit_interval_ms)
        finally:
            broker.terminate()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"plain (idempotent) produce      {plain_mb:8.1f} MB/s")
    print(f"transactional produce           {txn_mb:8.1f} MB/s  ({len(latencies)} commits, "
          f"every {args.commit_interval_ms} ms)")
    print(f"transactional / plain           {txn_mb / plain_mb:8.2f}")
    print(f"commit latency p50 {statistics.median(latencies):.1f} ms  p99 {p99:.1f} ms")


if __name__ == "__main__":
    main()
