"""`/metrics` on the broker's HTTP listener, read by Prometheus's own parser after real clients worked."""

from __future__ import annotations

import struct
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from oncelog.client import KafkaClient
from oncelog.protocol.records import build_batch
from oncelog.testing import EmbeddedBroker
from tests.faults.test_idempotence_faults import init_producer_id, produce_raw
from tests.observability.conftest import StartBroker


@pytest.fixture
def broker(start_http_broker: StartBroker) -> EmbeddedBroker:
    return start_http_broker(**{"transaction.abort.timed.out.transaction.cleanup.interval.ms": "100"})


def _scrape(broker: EmbeddedBroker) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.server.http_port}/metrics", timeout=10) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


@pytest.mark.timeout(60)
def test_metrics_follow_what_clients_did(broker: EmbeddedBroker) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "m", "log_level": 0})
    producer.init_transactions(10)
    producer.begin_transaction()
    for index in range(10):
        producer.produce("metered", f"v{index}".encode(), partition=0)
    producer.flush(10)
    open_now = _scrape(broker)
    assert open_now[("oncelog_transactions", (("state", "Ongoing"),))] == 1
    assert open_now[("oncelog_partition_last_stable_offset", (("partition", "0"), ("topic", "metered")))] == 0
    producer.commit_transaction(10)
    metrics = _scrape(broker)
    partition = (("partition", "0"), ("topic", "metered"))
    assert metrics[("oncelog_partition_high_watermark", partition)] == 11  # ten records and the COMMIT marker
    assert metrics[("oncelog_partition_last_stable_offset", partition)] == 11
    assert metrics[("oncelog_partition_log_start_offset", partition)] == 0
    assert metrics[("oncelog_topic_messages_in_total", (("topic", "metered"),))] == 10
    assert metrics[("oncelog_topic_bytes_in_total", (("topic", "metered"),))] > 10 * 2
    assert metrics[("oncelog_transactions", (("state", "CompleteCommit"),))] == 1
    produce_requests = sum(value for (name, labels), value in metrics.items()
                           if name == "oncelog_requests_total" and dict(labels)["api"] == "produce")
    assert produce_requests >= 1
    end_txn = [value for (name, labels), value in metrics.items()
               if name == "oncelog_request_seconds_count" and dict(labels) == {"api": "end_txn"}]
    assert end_txn == [1.0]
    assert metrics[("oncelog_connections", ())] >= 1


def _sum(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(value for (found, found_labels), value in metrics.items()
               if found == name and labels.items() <= dict(found_labels).items())


@pytest.mark.timeout(60)
def test_errors_duplicates_and_fsync_rounds_are_counted(broker: EmbeddedBroker) -> None:
    with KafkaClient(broker.bootstrap) as client:
        assert client.request(19, 4, {"topics": [{"name": "counted", "num_partitions": 1, "replication_factor": 1,
                                                  "assignments": [], "configs": []}],
                                      "timeout": 5000, "validate_only": False}).topics[0].error_code == 0
        producer_id = init_producer_id(client)
        batch = build_batch([(None, b"once")], producer_id=producer_id, producer_epoch=0, base_sequence=0)
        assert produce_raw(client, "counted", batch) == (0, 0)
        assert produce_raw(client, "counted", batch) == (0, 0)  # the retry: answered, not written again
        client.request(2, 7, {"replica_id": -1, "isolation_level": 0, "topics": [
            {"name": "counted", "partitions": [{"partition_index": 7, "current_leader_epoch": -1,
                                                "timestamp": -1}]}]})
    metrics = _scrape(broker)
    assert metrics[("oncelog_duplicate_batches_total", (("topic", "counted"),))] == 1
    assert metrics[("oncelog_topic_messages_in_total", (("topic", "counted"),))] == 1
    assert _sum(metrics, "oncelog_request_errors_total", api="list_offsets", error="UNKNOWN_TOPIC_OR_PARTITION") == 1
    assert _sum(metrics, "oncelog_request_errors_total", api="produce") == 0
    assert _sum(metrics, "oncelog_fsync_seconds_count") >= 1
    assert _sum(metrics, "oncelog_fsync_batch_waiters_sum") >= 1  # an acks=all produce waited on a round
    assert _sum(metrics, "oncelog_fsync_failures_total") == 0


@pytest.mark.timeout(60)
def test_transaction_outcomes_and_fenced_producers_are_counted(broker: EmbeddedBroker) -> None:
    def producer(transactional_id: str, timeout_ms: int = 60_000) -> Producer:
        made = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": transactional_id,
                         "transaction.timeout.ms": timeout_ms, "log_level": 0})
        made.init_transactions(10)
        made.begin_transaction()
        made.produce("outcomes", b"x", partition=0)
        made.flush(10)
        return made

    producer("committer").commit_transaction(10)
    producer("aborter").abort_transaction(10)
    zombie = producer("zombie")
    successor = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "zombie", "log_level": 0})
    successor.init_transactions(10)
    with pytest.raises(KafkaException):
        zombie.commit_transaction(10)  # fenced by the new producer of its id
    producer("sleeper", timeout_ms=1000)
    for _ in range(100):
        metrics = _scrape(broker)
        if metrics[("oncelog_transactions_ended_total", (("result", "timeout"),))] >= 1:
            break
        time.sleep(0.1)
    assert metrics[("oncelog_transactions_ended_total", (("result", "timeout"),))] == 1
    assert metrics[("oncelog_transactions_ended_total", (("result", "commit"),))] == 1
    # the aborter's, the zombie's (aborted when its id was taken over) and the sleeper's
    assert metrics[("oncelog_transactions_ended_total", (("result", "abort"),))] == 3
    assert _sum(metrics, "oncelog_fenced_producers_total") >= 1


@pytest.mark.timeout(60)
def test_group_state_rebalances_and_lag(broker: EmbeddedBroker) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "log_level": 0})
    for index in range(10):
        producer.produce("lagging", f"{index}".encode(), partition=0)
    producer.flush(10)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "slow", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "log_level": 0})
    try:
        consumer.subscribe(["lagging"])
        deadline = time.monotonic() + 30
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(0.2)
        consumer.commit(offsets=[TopicPartition("lagging", 0, 4)], asynchronous=False)
        metrics = _scrape(broker)
    finally:
        consumer.close()
    assert metrics[("oncelog_consumer_group_lag", (("group", "slow"), ("partition", "0"), ("topic", "lagging")))] == 6
    assert metrics[("oncelog_consumer_groups", (("state", "Stable"),))] == 1
    assert metrics[("oncelog_group_rebalances_total", ())] >= 1


def test_made_up_versions_do_not_mint_metric_series(broker: EmbeddedBroker) -> None:
    with KafkaClient(broker.bootstrap) as client:
        client.request(18, 0, {})
        for version in range(100, 160):  # ApiVersions answers these (UNSUPPORTED_VERSION) and keeps the connection
            body = struct.pack(">hhih", 18, version, version, 5) + b"probe"
            client.send_raw(struct.pack(">i", len(body)) + body)
            client.receive_frame()
    metrics = _scrape(broker)
    versions = {dict(labels)["version"] for (name, labels) in metrics
                if name == "oncelog_requests_total" and dict(labels)["api"] == "api_versions"}
    assert versions == {"-1", "0"}
    assert _sum(metrics, "oncelog_requests_total", api="api_versions", version="-1") == 60


def test_only_get_metrics_is_served(broker: EmbeddedBroker) -> None:
    base = f"http://127.0.0.1:{broker.server.http_port}"
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{base}/nothing", timeout=5)
    assert missing.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as posted:
        urllib.request.urlopen(urllib.request.Request(f"{base}/metrics", data=b"x", method="POST"), timeout=5)
    assert posted.value.code == 405


def test_the_example_dashboard_asks_only_for_metrics_the_broker_serves(broker: EmbeddedBroker) -> None:
    import json
    import re

    producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "d", "log_level": 0})
    producer.init_transactions(10)
    producer.begin_transaction()
    producer.produce("dashboard", b"x", partition=0)
    producer.commit_transaction(10)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "dashboard", "log_level": 0})
    consumer.commit(offsets=[TopicPartition("dashboard", 0, 1)], asynchronous=False)  # a group, and its lag
    consumer.close()
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.server.http_port}/metrics", timeout=10) as response:
        families = list(text_string_to_metric_families(response.read().decode()))
    # Sample names, and declared counters that have not counted anything yet (no failure so far).
    served = {sample.name for family in families for sample in family.samples}
    served |= {f"{family.name}_total" for family in families if family.type == "counter"}
    dashboard = json.loads((Path(__file__).parents[2] / "docs" / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    wanted = {name for expr in expressions for name in re.findall(r"\boncelog_[a-z_]+", expr)}
    assert wanted and wanted <= served, sorted(wanted - served)
