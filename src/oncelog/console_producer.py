"""`oncelog produce TOPIC`: one record per line of standard input, as Kafka's console producer.

Idempotent by default with acks=all (as Kafka's producer since 3.0): one producer id, a sequence per partition, and a
batch that must be re-sent after a lost answer or a retriable error is re-sent with the same sequence,
so the broker writes it once. Records are sent when a batch is full (`--batch-size`) or when standard
input has nothing more to give right now, so typing a line sends it and a pipe is sent in batches.

Kafka's `--property` names parse each line: `parse.key=true` with `key.separator` (default TAB) splits
off the key; `parse.headers=true` reads `headers.delimiter` (default TAB)-terminated headers first,
`k1:v1,k2:v2` (`headers.separator`, `headers.key.separator`). A keyed record goes to the partition
Kafka's default partitioner picks (murmur2 of the key), so keys land where Java clients put them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from oncelog.client import ClientError
from oncelog.cluster_client import ClusterClient, TopicLayout
from oncelog.config import ConfigError
from oncelog.console_consumer import unescape
from oncelog.errors import ErrorCode
from oncelog.protocol.compression import CODECS, compress
from oncelog.protocol.records import build_batch

PRODUCE_VERSION = 7
BATCH_BYTES = 256 << 10
"""Input bytes per batch at most (a line longer than this goes alone): well under message.max.bytes."""
RETRIES = 10
RETRY_BACKOFF_S = 0.2
RETRIABLE = frozenset({
    ErrorCode.not_leader_or_follower, ErrorCode.leader_not_available, ErrorCode.request_timed_out,
    ErrorCode.not_enough_replicas, ErrorCode.kafka_storage_error, ErrorCode.unknown_topic_or_partition,
    ErrorCode.network_exception, ErrorCode.coordinator_load_in_progress})
Headers = tuple[tuple[str, bytes | None], ...]


def add_parser(subparsers: Any, with_bootstrap: Any) -> None:
    produce = with_bootstrap(subparsers.add_parser(
        "produce", help="send standard input to a topic, one record per line",
        description="Read standard input and send each line as one record (as kafka-console-producer). "
        "Idempotent: retries never duplicate. Ends at end of input; exit code 1 if a record was refused."))
    produce.add_argument("topic", metavar="TOPIC")
    produce.add_argument("--partition", type=int, default=None,
                         help="send every record to this partition (default: by key, else spread)")
    produce.add_argument("--property", action="append", default=[], metavar="KEY=VALUE",
                         help="Kafka's line-parsing properties: parse.key=true, key.separator=SEP, "
                         "parse.headers=true, headers.delimiter, headers.separator, headers.key.separator")
    produce.add_argument("--acks", choices=["all", "-1", "1", "0"], default="all",
                         help="all (default): answered once durable; 1: once appended; 0: no answer")
    produce.add_argument("--compression-codec", choices=sorted(CODECS), default="none",
                         help="compress batches (gzip built in; snappy, lz4, zstd need `pip install cramjam`)")
    produce.add_argument("--batch-size", type=int, default=500, metavar="N", help="records per batch (default 500)")


@dataclass(slots=True)
class LineFormat:
    parse_key: bool = False
    key_separator: bytes = b"\t"
    parse_headers: bool = False
    headers_delimiter: bytes = b"\t"
    headers_separator: bytes = b","
    headers_key_separator: bytes = b":"

    @classmethod
    def from_properties(cls, pairs: list[str]) -> LineFormat:
        names = {"parse.key": "parse_key", "key.separator": "key_separator", "parse.headers": "parse_headers",
                 "headers.delimiter": "headers_delimiter", "headers.separator": "headers_separator",
                 "headers.key.separator": "headers_key_separator"}
        result = cls()
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or key not in names:
                raise ConfigError(f"--property {pair!r}: expected KEY=VALUE with KEY one of {', '.join(names)}")
            if key.startswith("parse."):
                if value.lower() not in ("true", "false"):
                    raise ConfigError(f"--property {key} takes true or false, not {value!r}")
                setattr(result, names[key], value.lower() == "true")
            elif not value:
                raise ConfigError(f"--property {key} must not be empty")
            else:
                setattr(result, names[key], unescape(value).encode())
        return result

    def parse(self, line: bytes) -> tuple[bytes | None, bytes, Headers]:
        """(key, value, headers) of one input line (without its newline)."""
        headers: Headers = ()
        if self.parse_headers:
            text, sep, line = line.partition(self.headers_delimiter)
            if not sep:
                raise ValueError("no headers delimiter in the line")
            parsed = []
            for item in filter(None, text.split(self.headers_separator)):
                name, sep, value = item.partition(self.headers_key_separator)
                parsed.append((name.decode(errors="replace"), value if sep else None))
            headers = tuple(parsed)
        key: bytes | None = None
        if self.parse_key:
            key, sep, line = line.partition(self.key_separator)
            if not sep:
                raise ValueError("no key separator in the line")
        return key, line, headers


def murmur2(data: bytes) -> int:
    """Kafka's `Utils.murmur2` (signed 32-bit), which its default partitioner applies to keys."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    for index in range(0, length - length % 4, 4):
        k = int.from_bytes(data[index:index + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail = length & ~3
    remaining = length % 4
    if remaining == 3:
        h ^= data[tail + 2] << 16
    if remaining >= 2:
        h ^= data[tail + 1] << 8
    if remaining >= 1:
        h ^= data[tail]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def key_partition(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def input_batches(stream: BinaryIO, batch_size: int, batch_bytes: int = BATCH_BYTES) -> Iterator[list[bytes]]:
    """Lines of `stream` (newline stripped), in batches that end when `batch_size` lines or `batch_bytes`
    bytes are in (as the Java producer's batch.size) or when the input has nothing ready right now (so a
    line typed at a terminal is sent at once)."""
    descriptor = stream.fileno()
    pending = b""
    batch: list[bytes] = []
    size = 0
    while True:
        ready = select.select([descriptor], [], [], 0)[0] if batch else [descriptor]
        if not ready:
            yield batch
            batch, size = [], 0
            continue
        chunk = os.read(descriptor, 1 << 16)
        if not chunk:
            if pending:
                batch.append(pending.rstrip(b"\r"))
            if batch:
                yield batch
            return
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            if batch and size + len(line) > batch_bytes:
                yield batch
                batch, size = [], 0
            batch.append(line.rstrip(b"\r"))
            size += len(line)
            if len(batch) >= batch_size:
                yield batch
                batch, size = [], 0


@dataclass(slots=True)
class _Producer:
    cluster: ClusterClient
    layout: TopicLayout
    acks: int
    codec: int
    producer_id: int = -1
    producer_epoch: int = -1
    sequences: dict[int, int] = field(default_factory=dict)
    next_spread: int = 0

    def init(self) -> None:
        response = self.cluster.bootstrap.request(22, 1, {"transactional_id": None, "transaction_timeout": 60_000})
        code = ErrorCode(int(response.error_code))
        if code != ErrorCode.none:
            raise ClientError(f"the broker refused a producer id: {code.name.upper()}" + (
                " (idempotent writes need the IdempotentWrite ACL on the cluster)"
                if code == ErrorCode.cluster_authorization_failed else ""))
        self.producer_id, self.producer_epoch = int(response.producer_id), int(response.producer_epoch)

    def send(self, partition: int, records: list[tuple[bytes | None, bytes, Headers]]) -> None:
        sequence = self.sequences.get(partition, 0) if self.producer_id >= 0 else -1
        codec = self.codec
        batch = build_batch([(key, value) for key, value, _ in records], headers=[h for _, _, h in records],
                            timestamp_ms=int(time.time() * 1000), producer_id=self.producer_id,
                            producer_epoch=self.producer_epoch, base_sequence=sequence,
                            compress=(lambda body: compress(codec, body)) if codec else None, compression=codec)
        problem = ErrorCode.none
        for _attempt in range(RETRIES):
            try:
                client = self.cluster.for_node(self.layout, partition)
                response = client.request(0, PRODUCE_VERSION, {
                    "transactional_id": None, "acks": self.acks, "timeout": 30_000,
                    "topic_data": [{"name": self.layout.topic,
                                    "partition_data": [{"index": partition, "records": batch}]}]},
                    expect_response=self.acks != 0)
            except ClientError:
                # A new connection, the leader looked up again, the same batch again: its sequence makes it
                # once-only if the first attempt was written after all.
                problem = ErrorCode.network_exception
                self.cluster.forget(self.layout, partition)
                time.sleep(RETRY_BACKOFF_S)
                with contextlib.suppress(ClientError):
                    self.layout = self.cluster.layout(self.layout.topic, create=False)
                continue
            if response is None:
                break
            answer = response.responses[0].partition_responses[0]
            problem = ErrorCode(int(answer.error_code))
            if problem == ErrorCode.none:
                break
            if problem not in RETRIABLE:
                detail = getattr(answer, "error_message", None)  # Produce v8+ only
                message = f": {detail}" if detail else ""
                raise ClientError(f"{self.layout.topic}-{partition} refused {len(records)} records: "
                                  f"{problem.name.upper()}{message}")
            time.sleep(RETRY_BACKOFF_S)
            if problem in (ErrorCode.not_leader_or_follower, ErrorCode.leader_not_available):
                self.layout = self.cluster.layout(self.layout.topic, create=False)
        else:
            raise ClientError(f"{self.layout.topic}-{partition}: gave up after {RETRIES} attempts "
                              f"({problem.name.upper()})")
        if self.producer_id >= 0:
            self.sequences[partition] = (sequence + len(records)) & 0x7FFFFFFF

    def partition_of(self, key: bytes | None, fixed: int | None) -> int:
        partitions = self.layout.partitions
        if fixed is not None:
            return fixed
        if key is not None:
            return key_partition(key, len(partitions))
        return partitions[self.next_spread % len(partitions)]


def run(args: argparse.Namespace) -> int:
    line_format = LineFormat.from_properties(args.property)
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    cluster = ClusterClient(args)
    try:
        layout = cluster.layout(args.topic, create=True)
        if args.partition is not None and args.partition not in layout.leaders:
            print(f"oncelog: {args.topic} has no partition {args.partition} (it has {len(layout.leaders)})",
                  file=sys.stderr)
            return 1
        producer = _Producer(cluster, layout, -1 if args.acks == "all" else int(args.acks),
                             CODECS[args.compression_codec])
        if producer.acks == -1:  # idempotence needs acks=all (as Kafka's producer insists)
            producer.init()
        for number, lines in enumerate(input_batches(sys.stdin.buffer, args.batch_size)):
            by_partition: dict[int, list[tuple[bytes | None, bytes, Headers]]] = {}
            for line in lines:
                try:
                    key, value, headers = line_format.parse(line)
                except ValueError as error:
                    print(f"oncelog: cannot parse input line {line[:60]!r}: {error}", file=sys.stderr)
                    return 1
                by_partition.setdefault(producer.partition_of(key, args.partition), []).append((key, value, headers))
            producer.next_spread = number + 1
            for partition, records in sorted(by_partition.items()):
                producer.send(partition, records)
    finally:
        cluster.close()
    return 0
