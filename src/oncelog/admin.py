"""`oncelog topics ...` and `oncelog producers ...`: administration of a running broker, as tables."""

from __future__ import annotations

import argparse
from typing import Any

from oncelog.client import ClientError, KafkaClient, connect
from oncelog.config import ConfigError
from oncelog.report import Flag, Report

METADATA, LIST_OFFSETS, CREATE_TOPICS, DELETE_TOPICS, DESCRIBE_CONFIGS, DESCRIBE_PRODUCERS = 3, 2, 19, 20, 32, 61
CREATE_PARTITIONS, DELETE_RECORDS, INCREMENTAL_ALTER_CONFIGS = 37, 21, 44


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


def _list(client: KafkaClient) -> Report:
    response = _metadata(client, None)
    rows: list[Any] = sorted(((t.name, len(t.partitions), Flag(t.is_internal)) for t in response.topics),
                             key=lambda row: row[0])
    return Report(empty="no topics").add("topics", ["TOPIC", "PARTITIONS", "INTERNAL"], rows)


def _describe(client: KafkaClient, names: list[str]) -> Report:
    response = _metadata(client, names or None)
    report = Report(empty="no topics")
    missing = []
    for topic in sorted(response.topics, key=lambda t: t.name or ""):
        if topic.error_code != 0:
            missing.append(f"topic {topic.name}: {topic.error_code.name.upper()}")
            continue
        count = len(topic.partitions)
        start = _offsets(client, topic.name, count, -2)
        end = _offsets(client, topic.name, count, -1)
        rows: list[Any] = [(p, start.get(p, -1), end.get(p, -1), end.get(p, 0) - start.get(p, 0)) for p in range(count)]
        configs = client.request(DESCRIBE_CONFIGS, 1, {"resources": [
            {"resource_type": 2, "resource_name": topic.name, "configuration_keys": None}],
            "include_synonyms": False})
        overrides = [f"{c.name}={c.value}" for r in configs.results for c in r.configs if c.config_source == 1]
        report.children.append(Report({"Topic": topic.name, "id": topic.topic_id, "partitions": count,
                                       "configs": ", ".join(overrides) or "(defaults)"}).add(
            "partitions_detail", ["PARTITION", "LOG START", "HIGH WATERMARK", "RECORDS"], rows))
    if missing:  # as kafka-topics.sh --describe: what exists is shown, and a missing topic fails the command
        raise NotFound("; ".join(missing), report)
    return report


def _create(client: KafkaClient, name: str, partitions: int, configs: list[str]) -> str:
    pairs = [{"name": key, "value": value} for key, value in _pairs(configs, "--config").items()]
    response = client.request(CREATE_TOPICS, 5, {"topics": [{
        "name": name, "num_partitions": partitions, "replication_factor": -1, "assignments": [],
        "configs": pairs}], "timeout": 30000, "validate_only": False})
    result = response.topics[0]
    if result.error_code != 0:
        raise ClientError(f"cannot create topic {name}: {result.error_code.name.upper()}: {result.error_message or ''}")
    return f"created topic {name} with {result.num_partitions} partition(s)"


def _alter(client: KafkaClient, name: str, partitions: int | None, configs: list[str], deleted: list[str]) -> str:
    if partitions is None and not configs and not deleted:
        raise ConfigError("nothing to alter: give --partitions N, --config KEY=VALUE or --delete-config KEY")
    done = []
    if configs or deleted:
        changes = [{"name": key, "config_operation": 0, "value": value}
                   for key, value in _pairs(configs, "--config").items()]
        changes += [{"name": key, "config_operation": 1, "value": None} for key in deleted]
        response = client.request(INCREMENTAL_ALTER_CONFIGS, 1, {"validate_only": False, "resources": [
            {"resource_type": 2, "resource_name": name, "configs": changes}]})
        result = response.responses[0]
        if result.error_code != 0:
            error = NotFound if result.error_code.name == "unknown_topic_or_partition" else ClientError
            raise error(f"cannot alter topic {name}: {result.error_code.name.upper()}: {result.error_message or ''}")
        done.append(f"topic {name} configs changed")
    if partitions is not None:
        response = client.request(CREATE_PARTITIONS, 3, {"topics": [{"name": name, "count": partitions,
                                                                     "assignments": None}],
                                                         "timeout": 30000, "validate_only": False})
        result = response.results[0]
        if result.error_code != 0:
            error = NotFound if result.error_code.name == "unknown_topic_or_partition" else ClientError
            raise error(f"cannot alter topic {name}: {result.error_code.name.upper()}: {result.error_message or ''}")
        done.append(f"topic {name} now has {partitions} partitions")
    return "\n".join(done)


def _pairs(pairs: list[str], flag: str) -> dict[str, str]:
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"{flag} {pair!r} is not KEY=VALUE")
        values[key] = value
    return values


def _delete_records(client: KafkaClient, name: str, partition: int, before: int) -> str:
    response = client.request(DELETE_RECORDS, 2, {"topics": [{"name": name, "partitions": [
        {"partition_index": partition, "offset": before}]}], "timeout": 30000})
    result = response.topics[0].partitions[0]
    if result.error_code != 0:
        error = NotFound if result.error_code.name == "unknown_topic_or_partition" else ClientError
        raise error(f"cannot delete records of {name}-{partition}: {result.error_code.name.upper()}")
    return f"{name}-{partition} now starts at offset {result.low_watermark}"


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


class NotFound(ClientError):
    """Something asked for does not exist (exit code 1); `partial` is what was found, printed first."""

    def __init__(self, message: str, partial: Report | None = None) -> None:
        super().__init__(message)
        self.partial = partial


def print_report(report: Report | str, args: argparse.Namespace) -> None:
    if isinstance(report, str):
        print(report)
    else:
        print(report.render(getattr(args, "output", "text")))


def run_topics(args: argparse.Namespace) -> int:
    with connect(args) as client:
        if args.action == "list":
            output: Report | str = _list(client)
        elif args.action == "describe":
            try:
                output = _describe(client, args.names)
            except NotFound as error:
                if error.partial is not None and not error.partial.is_empty():
                    print_report(error.partial, args)
                raise
        elif args.action == "create":
            output = _create(client, args.name, args.partitions, args.config)
        elif args.action == "alter":
            output = _alter(client, args.name, args.partitions, args.config, args.delete_config)
        elif args.action == "delete-records":
            output = _delete_records(client, args.name, args.partition, args.before)
        else:
            output = _delete(client, args.names)
    print_report(output, args)
    return 0


def _describe_producers(client: KafkaClient, topic: str, partition: int | None) -> Report:
    metadata = _metadata(client, [topic])
    entry = metadata.topics[0]
    if entry.error_code != 0:
        raise NotFound(f"topic {topic}: {entry.error_code.name.upper()}")
    partitions = [partition] if partition is not None else list(range(len(entry.partitions)))
    response = client.request(DESCRIBE_PRODUCERS, 0, {"topics": [{"name": topic, "partition_indexes": partitions}]})
    rows: list[Any] = []
    for result in response.topics[0].partitions:
        if result.error_code != 0:
            raise NotFound(f"partition {topic}-{result.partition_index}: {result.error_code.name.upper()}")
        for producer in result.active_producers:
            rows.append((result.partition_index, producer.producer_id, producer.producer_epoch,
                         producer.last_sequence, producer.last_timestamp, producer.coordinator_epoch,
                         producer.current_txn_start_offset if producer.current_txn_start_offset >= 0 else "-"))
    headers = ["PARTITION", "PRODUCER ID", "EPOCH", "LAST SEQUENCE", "LAST TIMESTAMP", "COORDINATOR EPOCH",
               "CURRENT TXN START OFFSET"]
    return Report(empty=f"no active producers on {topic}").add("producers", headers, sorted(rows))


def run_producers(args: argparse.Namespace) -> int:
    with connect(args) as client:
        print_report(_describe_producers(client, args.topic, args.partition), args)
    return 0
