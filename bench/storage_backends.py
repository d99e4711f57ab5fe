"""Local files vs PostgreSQL with one and three brokers: produce throughput, acks=all latency, read-back.

    python bench/storage_backends.py --seconds 8

For each backend a fresh cluster is started (PostgreSQL from Debian's binaries, initdb into a temp dir,
fsync on, synchronous_commit on), a topic is created, and `--connections` raw-socket producers pipeline
`--in-flight` pre-encoded Produce requests (acks=all) each, spread over the brokers and partitions. Every
request's time from send to response gives p50/p99 latency. Then one reader fetches everything back from
one broker with 8 MiB fetches. Workloads: the one users run most (small batches on one partition) and a
wider one (100-record batches on six partitions).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.postgres import postgres_server

from loadgen import connection, encoded_produce
from oncelog.client import KafkaClient
from oncelog.testing import BrokerProcess


@contextmanager
def cluster(kind: str, brokers: int, directory: Path, url: str | None) -> Iterator[list[str]]:
    processes = []
    try:
        for node in range(1, brokers + 1):
            overrides = {"broker.id": str(node)}
            if url is not None:
                overrides["storage"] = url
            process = BrokerProcess(directory / f"{kind}-{node}", overrides)
            process.start()
            processes.append(process)
        yield [process.bootstrap for process in processes]
    finally:
        for process in processes:
            process.terminate()


def read_back(bootstrap: str, topic: str, partitions: int) -> tuple[int, float]:
    """Bytes fetched and seconds taken to read every partition from offset 0 to its end."""
    total = 0
    started = time.perf_counter()
    with KafkaClient(bootstrap) as client:
        for partition in range(partitions):
            offset = 0
            while True:
                response = client.request(1, 11, {
                    "replica_id": -1, "max_wait": 0, "min_bytes": 1, "max_bytes": 8 << 20, "isolation_level": 0,
                    "session_id": 0, "session_epoch": -1, "rack_id": "", "forgotten_topics_data": [],
                    "topics": [{"topic": topic, "partitions": [{
                        "partition": partition, "current_leader_epoch": -1, "fetch_offset": offset,
                        "log_start_offset": -1, "partition_max_bytes": 8 << 20}]}]})
                data = response.responses[0].partitions[0]
                records = data.records or b""
                if not records:
                    break
                total += len(records)
                position = 0
                while position + 12 <= len(records):  # walk the batches to the next offset
                    base, length = struct.unpack_from(">qi", records, position)
                    last_delta = struct.unpack_from(">i", records, position + 23)[0]
                    offset = base + last_delta + 1
                    position += 12 + length
                if offset >= data.high_watermark:
                    break
    return total, time.perf_counter() - started


async def produce(bootstraps: list[str], partitions: int, records: int, size: int, connections: int,
                  in_flight: int, seconds: float) -> tuple[str, int, list[float], float]:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    with KafkaClient(bootstraps[0]) as client:
        client.request(19, 5, {"topics": [{"name": topic, "num_partitions": partitions, "replication_factor": 1,
                                           "assignments": [], "configs": []}], "timeout": 10_000,
                               "validate_only": False})
    await asyncio.sleep(1.0 if len(bootstraps) > 1 else 0.1)  # other brokers learn the topic (NOTIFY)
    latencies: list[float] = []
    answered = [0]
    started = time.perf_counter()
    stop_at = started + seconds
    addresses = [bootstrap.rsplit(":", 1) for bootstrap in bootstraps]
    await asyncio.gather(*(
        connection(addresses[index % len(addresses)][0], int(addresses[index % len(addresses)][1]),
                   encoded_produce(topic, index % partitions, records, size, -1), in_flight, -1, stop_at, answered,
                   latencies)
        for index in range(connections)))
    return topic, answered[0], latencies, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=6)
    parser.add_argument("--in-flight", type=int, default=5)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--backends", default="local,postgresql-1,postgresql-3")
    args = parser.parse_args()
    workloads = [("1 partition, 16-record batches", 1, 16), ("6 partitions, 100-record batches", 6, 100)]
    print(f"{'backend':<14} {'workload':<34} {'MB/s':>7} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'read MB/s':>9}")
    with tempfile.TemporaryDirectory(prefix="oncelog-bench-") as temporary, postgres_server() as url:
        for backend in args.backends.split(","):
            kind, _, count = backend.partition("-")
            brokers = int(count or 1)
            for name, partitions, records in workloads:
                database = None
                if kind == "postgresql":
                    import psycopg

                    database = f"bench_{uuid.uuid4().hex[:8]}"
                    with psycopg.connect(url, autocommit=True) as connection:
                        connection.execute(f"CREATE DATABASE {database}")
                directory = Path(temporary) / uuid.uuid4().hex[:6]
                directory.mkdir()
                storage_url = None if database is None else url.rsplit("/", 1)[0] + "/" + database
                with cluster(kind, brokers, directory, storage_url) as bootstraps:
                    topic, requests, latencies, elapsed = asyncio.run(produce(
                        bootstraps, partitions, records, args.size, args.connections, args.in_flight, args.seconds))
                    read_bytes, read_s = read_back(bootstraps[0], topic, partitions)
                quantiles = statistics.quantiles(latencies, n=100)
                print(f"{backend:<14} {name:<34} {requests * records * args.size / elapsed / 1e6:7.1f} "
                      f"{requests / elapsed:7.0f} {quantiles[49] * 1000:7.2f} {quantiles[98] * 1000:7.2f} "
                      f"{read_bytes / read_s / 1e6:9.1f}", flush=True)


if __name__ == "__main__":
    main()
