"""Measure the broker alone: replay pre-encoded Produce requests over raw sockets.

    python bench/loadgen.py --seconds 10 --connections 2 --batch-records 100 --size 1024 --acks -1

Each connection keeps up to --in-flight requests outstanding (like librdkafka's pipelining). Requests are
encoded once; only the correlation id changes. Without --bootstrap a broker subprocess is started.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from oncelog.client import KafkaClient
from oncelog.protocol.codec import build_request, encode_request
from oncelog.protocol.records import build_batch
from produce_consume import running_broker


def encoded_produce(topic: str, partition: int, records: int, size: int, acks: int) -> bytes:
    batch = build_batch([(None, b"x" * size)] * records)
    request = build_request(0, 7, {"transactional_id": None, "acks": acks, "timeout": 30_000, "topic_data": [
        {"name": topic, "partition_data": [{"index": partition, "records": batch}]}]})
    return encode_request(0, 7, 0, "loadgen", request)


async def connection(host: str, port: int, request: bytes, in_flight: int, acks: int, stop_at: float,
                     counts: list[int], latencies: list[float] | None = None) -> None:
    """Pipeline `request` (up to `in_flight` unanswered) until `stop_at`, counting answers in counts[0]
    and, if `latencies` is given, appending each request's seconds from send to answer."""
    reader, writer = await asyncio.open_connection(host, port)
    window = asyncio.Semaphore(in_flight)
    correlation = 0
    sent: dict[int, float] = {}

    async def read_responses() -> None:
        while True:
            try:
                header = await reader.readexactly(4)
            except asyncio.IncompleteReadError:
                return
            (size,) = struct.unpack(">i", header)
            body = await reader.readexactly(size)
            if latencies is not None:
                latencies.append(time.perf_counter() - sent.pop(struct.unpack_from(">i", body)[0]))
            counts[0] += 1
            window.release()

    responder = asyncio.create_task(read_responses()) if acks != 0 else None
    buffer = bytearray(request)
    while time.perf_counter() < stop_at:
        if acks != 0:
            await window.acquire()
        correlation += 1
        struct.pack_into(">i", buffer, 8, correlation)
        if latencies is not None:
            sent[correlation] = time.perf_counter()
        writer.write(bytes(buffer))
        if acks == 0:
            counts[0] += 1
        await writer.drain()
    if responder is not None:
        for _ in range(in_flight):
            await window.acquire()
        responder.cancel()
    writer.close()


async def run(bootstrap: str, args: argparse.Namespace) -> None:
    host, port = bootstrap.rsplit(":", 1)
    topic = f"loadgen-{uuid.uuid4().hex[:8]}"
    with KafkaClient(bootstrap) as client:
        client.request(19, 5, {"topics": [{"name": topic, "num_partitions": args.connections,
                                           "replication_factor": 1, "assignments": [], "configs": []}],
                               "timeout": 10_000, "validate_only": False})
    requests = [encoded_produce(topic, p, args.batch_records, args.size, args.acks) for p in range(args.connections)]
    counts = [0]
    started = time.perf_counter()
    stop_at = started + args.seconds
    await asyncio.gather(*(connection(host, int(port), requests[p], args.in_flight, args.acks, stop_at, counts)
                           for p in range(args.connections)))
    elapsed = time.perf_counter() - started
    records = counts[0] * args.batch_records
    print(f"loadgen acks={args.acks} connections={args.connections} batch={args.batch_records}x{args.size}B: "
          f"{counts[0] / elapsed:8.0f} requests/s  {records * args.size / elapsed / 1e6:8.1f} MB/s  "
          f"{records / elapsed:10.0f} records/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--in-flight", type=int, default=5)
    parser.add_argument("--batch-records", type=int, default=100)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--acks", type=int, choices=[-1, 0, 1], default=-1)
    args = parser.parse_args()
    with running_broker(args.bootstrap) as bootstrap:
        asyncio.run(run(bootstrap, args))


if __name__ == "__main__":
    main()
