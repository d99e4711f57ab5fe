"""`/metrics` on the broker's HTTP listener, read by Prometheus's own parser after real clients worked."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from oncelog.config import broker_config
from oncelog.testing import EmbeddedBroker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    embedded = EmbeddedBroker(broker_config({"http.port": "0", "group.initial.rebalance.delay.ms": "0"},
                                            data_dir=tmp_path / "data", port=0))
    embedded.start()
    try:
        yield embedded
    finally:
        embedded.stop()


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
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.server.http_port}/metrics", timeout=10) as response:
        families = list(text_string_to_metric_families(response.read().decode()))
    # Sample names, and declared counters that have not counted anything yet (no failure so far).
    served = {sample.name for family in families for sample in family.samples}
    served |= {f"{family.name}_total" for family in families if family.type == "counter"}
    dashboard = json.loads((Path(__file__).parents[2] / "docs" / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    wanted = {name for expr in expressions for name in re.findall(r"\boncelog_[a-z_]+", expr)}
    assert wanted and wanted <= served, sorted(wanted - served)
