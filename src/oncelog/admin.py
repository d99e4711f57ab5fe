"""`oncelog topics ...` and `oncelog producers ...`: administration of a running broker, as tables."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from oncelog.client import ClientError, KafkaClient, connect
from oncelog.config import ConfigError

METADATA, LIST_OFFSETS, CREATE_TOPICS, DELETE_TOPICS, DESCRIBE_CONFIGS, DESCRIBE_PRODUCERS = 3, 2, 19, 20, 32, 61


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces, a header line and a rule."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _metadata(client: KafkaClient, names: list[str] | None) -> Any:
    topics = None if names is None else [{"name": name, "topic_id": None} for name in names]
    return client.request(METADATA, 12, {"topics": topics, "allow_auto_topic_creation": False,
                                          "include_cluster_authorized_operations": False,
                                          "include_topic_authorized_operations": False})


def _offsets(client: KafkaClient, topic: str, partitions: int, timestamp: int) -> dict[int, int]:
    response = client.request(LIST_OFFSETS, 5, {
        "replica_id": -1, "isolation_level": 0,
        "topics": [{"name": topic, "partitions": [{"partition_index": p, "timestamp": timestamp,
                                                   "current_leader_epoch": -1} for p in range(partitions)]}],
    })
    return {int(p.partition_index): int(p.offset) for t in response.topics for p in t.partitions}


def _list(client: KafkaClient) -> str:
    response = _metadata(client, None)
    rows = sorted((t.name, len(t.partitions), "yes" if t.is_internal else "") for t in response.topics)
    return table(["TOPIC", "PARTITIONS", "INTERNAL"], rows) if rows else "no topics"


def _describe(client: KafkaClient, names: list[str]) -> str:
    response = _metadata(client, names or None)
    blocks = []
    missing = []
    for topic in sorted(response.topics, key=lambda t: t.name or ""):
        if topic.error_code != 0:
            missing.append(f"topic {topic.name}: {topic.error_code.name.upper()}")
            continue
        count = len(topic.partitions)
        start = _offsets(client, topic.name, count, -2)
        end = _offsets(client, topic.name, count, -1)
        rows = [(p, start.get(p, -1), end.get(p, -1), end.get(p, 0) - start.get(p, 0)) for p in range(count)]
        configs = client.request(DESCRIBE_CONFIGS, 1, {"resources": [
            {"resource_type": 2, "resource_name": topic.name, "configuration_keys": None}],
            "include_synonyms": False})
        overrides = [f"{c.name}={c.value}" for r in configs.results for c in r.configs if c.config_source == 1]
        blocks.append(
            f"Topic: {topic.name}  id: {topic.topic_id}  partitions: {count}  "
            f"configs: {', '.join(overrides) or '(defaults)'}\n"
            + table(["PARTITION", "LOG START", "HIGH WATERMARK", "RECORDS"], rows)
        )
    if missing:  # as kafka-topics.sh --describe: what exists is shown, and a missing topic fails the command
        if blocks:
            print("\n\n".join(blocks))
        raise ClientError("; ".join(missing))
    return "\n\n".join(blocks) if blocks else "no topics"


def _create(client: KafkaClient, name: str, partitions: int, configs: list[str]) -> str:
    pairs = []
    for pair in configs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--config {pair!r} is not KEY=VALUE")
        pairs.append({"name": key, "value": value})
    response = client.request(CREATE_TOPICS, 5, {"topics": [{
        "name": name, "num_partitions": partitions, "replication_factor": -1, "assignments": [],
        "configs": pairs}], "timeout": 30000, "validate_only": False})
    result = response.topics[0]
    if result.error_code != 0:
        raise ClientError(f"cannot create topic {name}: {result.error_code.name.upper()}: {result.error_message or ''}")
    return f"created topic {name} with {result.num_partitions} partition(s)"


def _delete(client: KafkaClient, names: list[str]) -> str:
    response = client.request(DELETE_TOPICS, 4, {"topic_names": names, "timeout": 30000})
    lines = []
    failed = []
    for result in response.responses:
        if result.error_code == 0:
            lines.append(f"deleted topic {result.name}")
        else:
            failed.append(f"cannot delete topic {result.name}: {result.error_code.name.upper()}")
    if failed:
        raise ClientError("; ".join(lines + failed))
    return "\n".join(lines)


def run_topics(args: argparse.Namespace) -> int:
    with connect(args) as client:
        if args.action == "list":
            output = _list(client)
        elif args.action == "describe":
            output = _describe(client, args.names)
        elif args.action == "create":
            output = _create(client, args.name, args.partitions, args.config)
        else:
            output = _delete(client, args.names)
    print(output)
    return 0


def _describe_producers(client: KafkaClient, topic: str, partition: int | None) -> str:
    metadata = _metadata(client, [topic])
    entry = metadata.topics[0]
    if entry.error_code != 0:
        raise ClientError(f"topic {topic}: {entry.error_code.name.upper()}")
    partitions = [partition] if partition is not None else list(range(len(entry.partitions)))
    response = client.request(DESCRIBE_PRODUCERS, 0, {"topics": [{"name": topic, "partition_indexes": partitions}]})
    rows = []
    for result in response.topics[0].partitions:
        if result.error_code != 0:
            raise ClientError(f"partition {topic}-{result.partition_index}: {result.error_code.name.upper()}")
        for producer in result.active_producers:
            rows.append((result.partition_index, producer.producer_id, producer.producer_epoch,
                         producer.last_sequence, producer.last_timestamp, producer.coordinator_epoch,
                         producer.current_txn_start_offset if producer.current_txn_start_offset >= 0 else "None"))
    if not rows:
        return f"no active producers on {topic}"
    headers = ["PARTITION", "PRODUCER ID", "EPOCH", "LAST SEQUENCE", "LAST TIMESTAMP", "COORDINATOR EPOCH",
               "CURRENT TXN START OFFSET"]
    return table(headers, sorted(rows))


def run_producers(args: argparse.Namespace) -> int:
    with connect(args) as client:
        print(_describe_producers(client, args.topic, args.partition))
    return 0
