"""Kafka Streams with processing.guarantee=exactly_once_v2 on oncelog: a stateful word count (a
repartition topic, a changelog-backed store) SIGKILLed several times while words stream in. The last
committed total of every word (read_committed) must be exactly its count: one record processed twice,
or lost, would show."""

from __future__ import annotations

import random
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from .conftest import KafkaJava

pytestmark = pytest.mark.timeout(300)

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]


def _totals(bootstrap: str) -> dict[str, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "totals-audit", "log_level": 0,
                         "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                         "enable.partition.eof": True})
    metadata = consumer.list_topics("totals", timeout=10).topics["totals"]
    consumer.assign([TopicPartition("totals", p, 0) for p in metadata.partitions])
    latest: dict[str, int] = {}
    at_end: set[int] = set()
    deadline = time.monotonic() + 30
    while len(at_end) < len(metadata.partitions) and time.monotonic() < deadline:
        for message in consumer.consume(500, 0.5):
            if message.error() is not None:
                if message.partition() is not None:
                    at_end.add(message.partition())
                continue
            latest[(message.key() or b"").decode()] = int(message.value() or b"0")
    consumer.close()
    return latest


def test_a_killed_exactly_once_streams_app_counts_every_word_once(kafka_java: KafkaJava, oncelog_broker: str,
                                                                tmp_path: Path) -> None:
    rng = random.Random(1208)
    admin = AdminClient({"bootstrap.servers": oncelog_broker})
    for name in ("words", "totals"):
        admin.create_topics([NewTopic(name, 2)])[name].result(15)
    expected: Counter[str] = Counter()
    producer = Producer({"bootstrap.servers": oncelog_broker, "enable.idempotence": True, "log_level": 0})
    streaming = threading.Event()

    def send_steadily() -> None:  # words keep arriving while the app is killed: some are mid-flight
        while not streaming.is_set():
            for _ in range(20):
                word = rng.choice(WORDS)
                expected[word] += 1
                producer.produce("words", word.encode(), key=str(rng.random()).encode())
            producer.poll(0)
            time.sleep(0.05)
        assert producer.flush(30) == 0

    def app() -> subprocess.Popen[str]:
        return kafka_java.start("EosWordCount", oncelog_broker, "eos-word-count", str(tmp_path / "state"))

    def processing(process: subprocess.Popen[str]) -> None:
        """Wait until the app runs (a killed member's session must expire first), then let it work."""
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip() == "state RUNNING":
                break
        time.sleep(rng.uniform(1.0, 2.5))

    running = app()
    sender = threading.Thread(target=send_steadily)
    sender.start()
    try:
        for _ in range(4):
            processing(running)
            running.kill()  # mid-stream: words are being processed, some not yet committed
            running.wait(30)
            running = app()
        streaming.set()
        sender.join(60)
        deadline = time.monotonic() + 120
        totals: dict[str, int] = {}
        while time.monotonic() < deadline:
            totals = _totals(oncelog_broker)
            if totals == dict(expected) or any(totals.get(w, 0) > n for w, n in expected.items()):
                break
            assert running.poll() is None, running.communicate()[1][-3000:]
            time.sleep(2)
        assert totals == dict(expected)
    finally:
        streaming.set()
        sender.join(60)
        running.kill()
        running.wait(30)
