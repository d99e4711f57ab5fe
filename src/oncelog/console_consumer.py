"""`oncelog consume TOPIC`: print a topic's records, as Kafka's console consumer.

Values one per line by default; `--property print.key=true` (and print.headers, print.partition,
print.offset, print.timestamp, key.separator) as Kafka's DefaultMessageFormatter, or `--output json`
for one JSON object per record. Without `--group` it reads every partition (or `--partition`) from
the end, `--from-beginning`, or `--offset`; with `--group` it joins the group (consumer_group.py),
starts from the committed offsets and commits what it printed. `--isolation-level read_committed`
hides aborted and undecided transactions, as Kafka's consumers do (protocol.records.visible_batches).
It stops after `--max-messages`, after `--timeout-ms` without a record, or on Ctrl-C, and then says
how many it processed (on standard error, as Kafka's tool does).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import re
import sys
import time
from typing import Any, TextIO

from oncelog.client import ClientError
from oncelog.cluster_client import ClusterClient, TopicLayout
from oncelog.config import ConfigError
from oncelog.consumer_group import GroupMember
from oncelog.errors import ErrorCode
from oncelog.protocol.compression import CompressionError, decompress
from oncelog.protocol.records import BATCH_HEADER_BYTES, Record, decode_records, iter_batches, visible_batches

FETCH_VERSION = 11
LIST_OFFSETS_VERSION = 5
FETCH_MAX_BYTES = 8 << 20
FETCH_WAIT_MS = 500
FETCH_INFLATED_MAX = 64 << 20
"""Decompressed bytes taken from one fetch at most (each batch is capped too, protocol.compression): the
batches after are fetched again, so a fetch full of well-compressed batches cannot exhaust memory."""
PRINT_PROPERTIES = ("print.key", "print.headers", "print.partition", "print.offset", "print.timestamp")


def add_parser(subparsers: Any, with_bootstrap: Any) -> None:
    consume = with_bootstrap(subparsers.add_parser(
        "consume", help="print a topic's records, one per line",
        description="Print records as they arrive (as kafka-console-consumer): values by default, more with "
        "--property print.*=true or --output json. Ctrl-C stops it."))
    consume.add_argument("topic", metavar="TOPIC")
    consume.add_argument("--from-beginning", action="store_true",
                         help="start at the earliest offset (default: only new records), where no offset is committed")
    consume.add_argument("--partition", type=int, default=None, help="only this partition")
    consume.add_argument("--offset", default=None, metavar="N|earliest|latest",
                         help="start offset (needs --partition, as in Kafka)")
    consume.add_argument("--group", default=None, metavar="GROUP",
                         help="consume as a member of this consumer group, committing what was printed")
    consume.add_argument("--isolation-level", choices=["read_uncommitted", "read_committed"],
                         default="read_uncommitted",
                         help="read_committed hides aborted and still-open transactions (default read_uncommitted)")
    consume.add_argument("--max-messages", type=int, default=None, metavar="N", help="stop after N records")
    consume.add_argument("--timeout-ms", type=int, default=None, metavar="MS",
                         help="stop when no record arrived for this long")
    consume.add_argument("--property", action="append", default=[], metavar="KEY=VALUE",
                         help="Kafka's formatter properties: print.key, print.headers, print.partition, "
                         "print.offset, print.timestamp (true/false), key.separator, line.separator")
    consume.add_argument("--output", choices=["text", "json"], default="text",
                         help="text (default) or one JSON object per record (key/value as UTF-8, or base64 "
                         "in key_base64/value_base64 when they are not text)")


class Formatter:
    def __init__(self, pairs: list[str], output: str) -> None:
        self.json = output == "json"
        self.flags = dict.fromkeys(PRINT_PROPERTIES, False)
        self.key_separator, self.line_separator = "\t", "\n"
        for pair in pairs:
            name, sep, value = pair.partition("=")
            if not sep:
                raise ConfigError(f"--property {pair!r} is not KEY=VALUE")
            if name in self.flags:
                if value.lower() not in ("true", "false"):
                    raise ConfigError(f"--property {name} takes true or false, not {value!r}")
                self.flags[name] = value.lower() == "true"
            elif name == "key.separator":
                self.key_separator = unescape(value)
            elif name == "line.separator":
                self.line_separator = unescape(value)
            else:
                raise ConfigError(f"--property {name}: unknown; use {', '.join(PRINT_PROPERTIES)}, key.separator "
                                  "or line.separator")

    def write(self, out: TextIO, topic: str, partition: int, record: Record) -> None:
        if self.json:
            entry: dict[str, Any] = {"topic": topic, "partition": partition, "offset": record.offset,
                                     "timestamp": record.timestamp}
            _put_bytes(entry, "key", record.key)
            _put_bytes(entry, "value", record.value)
            entry["headers"] = [_put_bytes({"key": name}, "value", value) for name, value in record.headers]
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")
            return
        parts = []
        if self.flags["print.timestamp"]:
            parts.append(f"CreateTime:{record.timestamp}")
        if self.flags["print.partition"]:
            parts.append(f"Partition:{partition}")
        if self.flags["print.offset"]:
            parts.append(f"Offset:{record.offset}")
        if self.flags["print.headers"]:
            parts.append(",".join(f"{name}:{_text(value)}" for name, value in record.headers) or "NO_HEADERS")
        if self.flags["print.key"]:
            parts.append(_text(record.key))
        parts.append(_text(record.value))
        out.write(self.key_separator.join(parts) + self.line_separator)


def unescape(value: str) -> str:
    """`\\t`, `\\n`, `\\r` and `\\\\` as the characters a shell makes hard to type; anything else as given."""
    return re.sub(r"\\([tnr\\])", lambda match: {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}[match.group(1)],
                  value)


def _text(value: bytes | None) -> str:
    return "null" if value is None else value.decode(errors="backslashreplace")


def _put_bytes(entry: dict[str, Any], name: str, value: bytes | None) -> dict[str, Any]:
    try:
        entry[name] = None if value is None else value.decode()
    except UnicodeDecodeError:
        entry[f"{name}_base64"] = base64.b64encode(value or b"").decode()
    return entry


class _Reader:
    def __init__(self, cluster: ClusterClient, layout: TopicLayout, read_committed: bool, reset_to: int) -> None:
        self.cluster = cluster
        self.layout = layout
        self.read_committed = read_committed
        self.reset_to = reset_to
        """Where an out-of-range position goes: -2 earliest (--from-beginning), -1 latest, as Kafka's
        console consumer sets auto.offset.reset."""

    def list_offset(self, partition: int, timestamp: int) -> int:
        """-2: earliest, -1: latest (the LSO for read_committed)."""
        response = self.cluster.for_node(self.layout, partition).request(2, LIST_OFFSETS_VERSION, {
            "replica_id": -1, "isolation_level": int(self.read_committed), "topics": [
                {"name": self.layout.topic, "partitions": [{"partition_index": partition, "current_leader_epoch": -1,
                                                            "timestamp": timestamp}]}]})
        answer = response.topics[0].partitions[0]
        code = ErrorCode(int(answer.error_code))
        if code != ErrorCode.none:
            raise ClientError(f"cannot find the offsets of {self.layout.topic}-{partition}: {code.name.upper()}")
        return int(answer.offset)

    def fetch(self, positions: dict[int, int]) -> list[tuple[int, list[Record], int]]:
        """(partition, records, next position) for every partition that answered, from one broker at a time."""
        by_node: dict[int, list[int]] = {}
        for partition in positions:
            by_node.setdefault(self.layout.leaders[partition], []).append(partition)
        results: list[tuple[int, list[Record], int]] = []
        for partitions in by_node.values():
            client = self.cluster.for_node(self.layout, partitions[0])
            response = client.request(1, FETCH_VERSION, {
                "replica_id": -1, "max_wait": FETCH_WAIT_MS // len(by_node), "min_bytes": 1,
                "max_bytes": FETCH_MAX_BYTES, "isolation_level": int(self.read_committed), "session_id": 0,
                "session_epoch": -1, "forgotten_topics_data": [], "rack_id": "",
                "topics": [{"topic": self.layout.topic, "partitions": [
                    {"partition": partition, "current_leader_epoch": -1, "fetch_offset": positions[partition],
                     "log_start_offset": -1, "partition_max_bytes": 1 << 20} for partition in partitions]}]})
            for data in response.responses[0].partitions:
                partition = int(data.partition_index)
                code = ErrorCode(int(data.error_code))
                if code == ErrorCode.offset_out_of_range:
                    results.append((partition, [], self.list_offset(partition, self.reset_to)))
                    continue
                if code != ErrorCode.none:
                    raise ClientError(f"fetch from {self.layout.topic}-{partition} failed: {code.name.upper()}")
                results.append((partition, *self._records(data, positions[partition])))
        return results

    def _records(self, data: Any, fetch_position: int) -> tuple[list[Record], int]:
        raw = bytes(data.records or b"")
        aborted = [(int(a.first_offset), int(a.producer_id)) for a in (data.aborted_transactions or ())]
        visible = {start for start, _header in visible_batches(raw, aborted, self.read_committed)}
        records: list[Record] = []
        next_position = fetch_position
        inflated = 0
        for start, header in iter_batches(raw):
            if inflated > FETCH_INFLATED_MAX:  # the rest of this fetch waits for the next one
                return records, max(fetch_position, header.base_offset)
            next_position = max(next_position, header.next_offset)
            if start not in visible:  # a control batch, or an aborted transaction's (read_committed)
                continue
            try:
                body = decompress(header.compression, raw[start + BATCH_HEADER_BYTES:start + header.size])
                inflated += len(body)
                records += [r for r in decode_records(body, header) if r.offset >= fetch_position]
            except (CompressionError, ValueError) as error:
                raise ClientError(f"cannot read a batch of {self.layout.topic} at offset {header.base_offset}: "
                                  f"{error}") from error
        return records, next_position


def run(args: argparse.Namespace) -> int:
    formatter = Formatter(args.property, args.output)
    if args.offset is not None and args.partition is None:
        raise ConfigError("--offset needs --partition (as Kafka's console consumer)")
    if args.offset is not None and args.group is not None:
        raise ConfigError("--offset and --group do not go together: a group starts from its committed offsets")
    cluster = ClusterClient(args)
    member: GroupMember | None = None
    counted = [0]
    try:
        layout = cluster.layout(args.topic, create=False)
        if args.partition is not None and args.partition not in layout.leaders:
            print(f"oncelog: {args.topic} has no partition {args.partition}", file=sys.stderr)
            return 1
        reader = _Reader(cluster, layout, args.isolation_level == "read_committed",
                         -2 if args.from_beginning or args.offset == "earliest" else -1)
        if args.group is not None:
            member = GroupMember(args, cluster.bootstrap, args.group, args.topic, len(layout.leaders))
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends it as cleanly as --max-messages
            _consume(args, reader, formatter, member, counted)
        print(f"Processed a total of {counted[0]} messages", file=sys.stderr)
    finally:
        if member is not None:
            member.leave()
        cluster.close()
    return 0


def _start_positions(args: argparse.Namespace, reader: _Reader, partitions: list[int],
                     committed: dict[int, int]) -> dict[int, int]:
    positions = {}
    for partition in partitions:
        if committed.get(partition, -1) >= 0:
            positions[partition] = committed[partition]
        elif args.offset is not None and args.offset not in ("earliest", "latest"):
            try:
                positions[partition] = int(args.offset)
            except ValueError:
                raise ConfigError(f"--offset {args.offset!r}: a number, earliest or latest") from None
        else:
            earliest = args.from_beginning or args.offset == "earliest"
            positions[partition] = reader.list_offset(partition, -2 if earliest else -1)
    return positions


def _consume(args: argparse.Namespace, reader: _Reader, formatter: Formatter, member: GroupMember | None,
             counted: list[int]) -> None:
    """Print records until a stop condition; `counted[0]` is how many so far (kept through a Ctrl-C)."""
    last_record = time.monotonic()
    positions: dict[int, int] = {}
    committed: dict[int, int] = {}
    joined = False
    while True:
        if member is not None and not joined:
            partitions = member.join()
            committed = member.committed()
            positions = _start_positions(args, reader, partitions, committed)
            joined = True
        elif member is None and not positions:
            partitions = [args.partition] if args.partition is not None else reader.layout.partitions
            positions = _start_positions(args, reader, partitions, {})
        if not positions:  # a group member with nothing assigned waits for the next rebalance
            time.sleep(FETCH_WAIT_MS / 1000)
            results = []
        else:
            results = reader.fetch(positions)
        for partition, records, next_position in results:
            for record in records:
                if args.max_messages is not None and counted[0] >= args.max_messages:
                    break
                formatter.write(sys.stdout, reader.layout.topic, partition, record)
                counted[0] += 1
                positions[partition] = record.offset + 1
                last_record = time.monotonic()
            else:
                positions[partition] = next_position
        sys.stdout.flush()
        if member is not None:
            changed = {p: offset for p, offset in positions.items() if committed.get(p) != offset}
            if not member.commit(changed) or not member.heartbeat_due():
                joined = False
            committed.update(changed)
        if args.max_messages is not None and counted[0] >= args.max_messages:
            return
        if args.timeout_ms is not None and (time.monotonic() - last_record) * 1000 >= args.timeout_ms:
            return
