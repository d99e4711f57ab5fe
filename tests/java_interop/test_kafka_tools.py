"""Kafka's own command-line tools (kafka-tools 4.4.0, run by their main classes) against oncelog."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from .conftest import KafkaJava

pytestmark = pytest.mark.timeout(180)

TOPICS = "org.apache.kafka.tools.TopicCommand"
GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
TRANSACTIONS = "org.apache.kafka.tools.TransactionsCommand"
CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
CONFIGS = "org.apache.kafka.tools.ConfigCommand"
DELETE_RECORDS = "org.apache.kafka.tools.DeleteRecordsCommand"
LOG_DIRS = "org.apache.kafka.tools.LogDirsCommand"
PRODUCER_PERFORMANCE = "org.apache.kafka.tools.ProducerPerformance"


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return result.stdout


def test_kafka_topics_and_configs(kafka_java: KafkaJava, oncelog_broker: str, topic_name: str) -> None:
    server = ["--bootstrap-server", oncelog_broker]
    _ok(kafka_java.run(TOPICS, *server, "--create", "--topic", topic_name, "--partitions", "2",
                       "--config", "retention.ms=3600000"))
    assert topic_name in _ok(kafka_java.run(TOPICS, *server, "--list")).split()
    _ok(kafka_java.run(TOPICS, *server, "--alter", "--topic", topic_name, "--partitions", "4"))
    described = _ok(kafka_java.run(TOPICS, *server, "--describe", "--topic", topic_name))
    assert "PartitionCount: 4" in described and "retention.ms=3600000" in described
    _ok(kafka_java.run(CONFIGS, *server, "--alter", "--entity-type", "topics", "--entity-name", topic_name,
                       "--add-config", "segment.ms=600000", "--delete-config", "retention.ms"))
    configs = _ok(kafka_java.run(CONFIGS, *server, "--describe", "--entity-type", "topics", "--entity-name",
                                 topic_name))
    assert "segment.ms=600000" in configs and "retention.ms=" not in configs
    _ok(kafka_java.run(CONFIGS, *server, "--alter", "--entity-type", "brokers", "--entity-default",
                       "--add-config", "log.retention.ms=7200000"))  # a dynamic default every broker follows
    defaults = _ok(kafka_java.run(CONFIGS, *server, "--describe", "--entity-type", "brokers", "--entity-default"))
    assert "log.retention.ms=7200000" in defaults
    refused = kafka_java.run(CONFIGS, *server, "--alter", "--entity-type", "brokers", "--entity-default",
                             "--add-config", "num.partitions=7")
    assert refused.returncode != 0 and "num.partitions" in refused.stdout + refused.stderr
    _ok(kafka_java.run(CONFIGS, *server, "--alter", "--entity-type", "brokers", "--entity-default",
                       "--delete-config", "log.retention.ms"))
    _ok(kafka_java.run(CONFIGS, *server, "--alter", "--entity-type", "groups", "--entity-name", "billing",
                       "--add-config", "consumer.heartbeat.interval.ms=6000"))
    groups = _ok(kafka_java.run(CONFIGS, *server, "--describe", "--entity-type", "groups", "--entity-name",
                                "billing"))
    assert "consumer.heartbeat.interval.ms=6000" in groups
    _ok(kafka_java.run(TOPICS, *server, "--delete", "--topic", topic_name))
    deadline = time.monotonic() + 10
    while topic_name in _ok(kafka_java.run(TOPICS, *server, "--list")).split() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert topic_name not in _ok(kafka_java.run(TOPICS, *server, "--list")).split()


def test_console_tools_and_consumer_groups(kafka_java: KafkaJava, oncelog_broker: str, topic_name: str) -> None:
    server = ["--bootstrap-server", oncelog_broker]
    _ok(kafka_java.run(TOPICS, *server, "--create", "--topic", topic_name, "--partitions", "1"))
    lines = "".join(f"key-{i}:value-{i}\n" for i in range(10))
    _ok(kafka_java.run(CONSOLE_PRODUCER, *server, "--topic", topic_name, "--property", "parse.key=true",
                       "--property", "key.separator=:", stdin=lines))
    consumed = _ok(kafka_java.run(CONSOLE_CONSUMER, *server, "--topic", topic_name, "--from-beginning",
                                  "--max-messages", "10", "--group", "java-console",
                                  "--isolation-level", "read_committed", "--formatter-property", "print.key=true"))
    assert consumed.splitlines() == [f"key-{i}\tvalue-{i}" for i in range(10)]
    groups = _ok(kafka_java.run(GROUPS, *server, "--describe", "--group", "java-console"))
    assert topic_name in groups
    row = next(line.split() for line in groups.splitlines() if line.startswith("java-console"))
    assert row[2:6] == ["0", "10", "10", "0"]  # partition, current offset, log end offset, lag
    plan = _ok(kafka_java.run(GROUPS, *server, "--reset-offsets", "--group", "java-console", "--topic", topic_name,
                              "--to-offset", "4", "--execute"))
    assert "4" in plan
    after = _ok(kafka_java.run(GROUPS, *server, "--describe", "--group", "java-console"))
    row = next(line.split() for line in after.splitlines() if line.startswith("java-console"))
    assert row[3] == "4"
    assert "java-console" in _ok(kafka_java.run(GROUPS, *server, "--list")).split()


def test_kafka_transactions_find_and_abort_a_hanging_transaction(kafka_java: KafkaJava, oncelog_broker: str,
                                                                 topic_name: str) -> None:
    """kafka-transactions.sh: list, describe, describe-producers, find-hanging and abort (the admin client
    refused abort before WriteTxnMarkers was advertised)."""
    server = ["--bootstrap-server", oncelog_broker]
    producer = Producer({"bootstrap.servers": oncelog_broker, "transactional.id": "java-tools-txn", "log_level": 0})
    producer.init_transactions(10)
    producer.begin_transaction()
    producer.produce(topic_name, b"pending", partition=0)
    producer.flush(10)
    assert "java-tools-txn" in _ok(kafka_java.run(TRANSACTIONS, *server, "list"))
    described = _ok(kafka_java.run(TRANSACTIONS, *server, "describe", "--transactional-id", "java-tools-txn"))
    assert "Ongoing" in described and f"{topic_name}-0" in described
    producers = _ok(kafka_java.run(TRANSACTIONS, *server, "describe-producers", "--topic", topic_name,
                                   "--partition", "0"))
    assert "0" in producers.split()  # CurrentTransactionStartOffset 0
    hanging = _ok(kafka_java.run(TRANSACTIONS, *server, "find-hanging", "--broker-id", "1",
                                 "--max-transaction-timeout", "0"))
    assert topic_name not in hanging  # the coordinator knows it: not hanging
    _ok(kafka_java.run(TRANSACTIONS, *server, "abort", "--topic", topic_name, "--partition", "0",
                       "--start-offset", "0"))
    consumer = Consumer({"bootstrap.servers": oncelog_broker, "group.id": "lso", "log_level": 0,
                         "isolation.level": "read_committed"})
    try:
        assert consumer.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=10) == (0, 2)
    finally:
        consumer.close()


def test_delete_records_log_dirs_and_producer_performance(kafka_java: KafkaJava, oncelog_broker: str,
                                                         topic_name: str, tmp_path: Path) -> None:
    server = ["--bootstrap-server", oncelog_broker]
    _ok(kafka_java.run(TOPICS, *server, "--create", "--topic", topic_name, "--partitions", "1"))
    performance = _ok(kafka_java.run(
        PRODUCER_PERFORMANCE, "--topic", topic_name, "--num-records", "3000", "--record-size", "200",
        "--throughput", "-1", "--producer-props", f"bootstrap.servers={oncelog_broker}", "acks=all",
        "enable.idempotence=true"))
    assert "3000 records sent" in performance
    plan = tmp_path / "delete.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [{"topic": topic_name, "partition": 0,
                                                               "offset": 1000}]}))
    deleted = _ok(kafka_java.run(DELETE_RECORDS, *server, "--offset-json-file", str(plan)))
    assert "low_watermark: 1000" in deleted
    dirs = _ok(kafka_java.run(LOG_DIRS, *server, "--describe", "--topic-list", topic_name))
    report = json.loads(next(line for line in dirs.splitlines() if line.startswith("{")))
    [partition] = [p for d in report["brokers"][0]["logDirs"] for p in d["partitions"]]
    assert partition["partition"] == f"{topic_name}-0" and partition["size"] > 3000 * 200 * 0.5
