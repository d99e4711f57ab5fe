"""The broker's Prometheus metrics, and Kafka's names for them.

Theory of operation: each broker owns one `CollectorRegistry` (several brokers may share a process in
tests). Counters and histograms are updated where the work happens (the connection counts requests and
times them); everything that is state — partition offsets, open connections, transactions — is read
at scrape time by a collector, so keeping it costs nothing between scrapes.

| oncelog metric | Kafka's |
|---|---|
| `oncelog_requests_total{api,version}` | kafka.network:type=RequestMetrics,name=RequestsPerSec,request=,version= |
| `oncelog_request_seconds{api}` (histogram) | kafka.network:type=RequestMetrics,name=TotalTimeMs,request= |
| `oncelog_request_failures_total{api}` | (UNKNOWN_SERVER_ERROR answers: a handler raised) |
| `oncelog_topic_bytes_in_total{topic}` | kafka.server:type=BrokerTopicMetrics,name=BytesInPerSec,topic= |
| `oncelog_topic_messages_in_total{topic}` | kafka.server:type=BrokerTopicMetrics,name=MessagesInPerSec,topic= |
| `oncelog_topic_bytes_out_total{topic}` | kafka.server:type=BrokerTopicMetrics,name=BytesOutPerSec,topic= |
| `oncelog_connections` | kafka.server:type=socket-server-metrics,name=connection-count |
| `oncelog_partition_log_end_offset{topic,partition}` | kafka.log:type=Log,name=LogEndOffset |
| `oncelog_partition_log_start_offset{topic,partition}` | kafka.log:type=Log,name=LogStartOffset |
| `oncelog_partition_high_watermark{topic,partition}` | kafka.cluster:type=Partition (HighWatermark) |
| `oncelog_partition_last_stable_offset{topic,partition}` | (LSO; read_committed consumers stop here) |
| `oncelog_partition_size_bytes{topic,partition}` | kafka.log:type=Log,name=Size |
| `oncelog_transactions{state}` | (transaction coordinator: transactional ids per state) |
| `oncelog_transaction_oldest_open_seconds` | (age of the oldest Ongoing transaction: a hanging one pins the LSO) |
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from oncelog.broker import Broker

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class BrokerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("oncelog_requests", "Requests received, by API and version", ["api", "version"],
                                registry=self.registry)
        self.failures = Counter("oncelog_request_failures", "Requests a handler failed on (answered "
                                "UNKNOWN_SERVER_ERROR)", ["api"], registry=self.registry)
        self.latency = Histogram("oncelog_request_seconds", "Time from taking a request to having its answer, "
                                 "including waits for fsync, long polls and coordinators", ["api"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.bytes_in = Counter("oncelog_topic_bytes_in", "Record batch bytes appended, by topic", ["topic"],
                                registry=self.registry)
        self.messages_in = Counter("oncelog_topic_messages_in", "Records appended, by topic", ["topic"],
                                   registry=self.registry)
        self.bytes_out = Counter("oncelog_topic_bytes_out", "Record batch bytes served to fetches, by topic",
                                 ["topic"], registry=self.registry)

        # Label children looked up once: `labels()` costs more than the increment on the produce path.
        self._per_request: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._per_topic: dict[str, tuple[Any, Any, Any]] = {}

    def observe_request(self, api: str, version: int, started: float) -> Callable[[], None]:
        """Count a request now; the returned function records its latency once it is answered."""
        children = self._per_request.get((api, version))
        if children is None:
            children = self._per_request[(api, version)] = (self.requests.labels(api, str(version)),
                                                            self.latency.labels(api))
        children[0].inc()
        latency = children[1]
        return lambda: latency.observe(time.perf_counter() - started)

    def _topic(self, topic: str) -> tuple[Any, Any, Any]:
        children = self._per_topic.get(topic)
        if children is None:
            children = self._per_topic[topic] = (self.bytes_in.labels(topic), self.messages_in.labels(topic),
                                                 self.bytes_out.labels(topic))
        return children

    def appended(self, topic: str, size: int, records: int) -> None:
        bytes_in, messages_in, _out = self._topic(topic)
        bytes_in.inc(size)
        messages_in.inc(records)

    def served(self, topic: str, size: int) -> None:
        self._topic(topic)[2].inc(size)

    def watch(self, broker: Broker, connections: Callable[[], int]) -> None:
        self.registry.register(_StateCollector(broker, connections))


class _StateCollector(Collector):
    """Read at scrape time: nothing is kept up to date between scrapes."""

    def __init__(self, broker: Broker, connections: Callable[[], int]) -> None:
        self._broker = broker
        self._connections = connections

    def collect(self) -> Iterator[Any]:
        connections = GaugeMetricFamily("oncelog_connections", "Open client connections")
        connections.add_metric([], self._connections())
        yield connections
        yield from self._partitions()
        yield from self._transactions()

    def _partitions(self) -> Iterator[Any]:
        logs = getattr(self._broker, "logs", None)  # local storage; shared storage lives in the database
        if logs is None:
            return
        families = {name: GaugeMetricFamily(f"oncelog_partition_{name}", text, labels=["topic", "partition"])
                    for name, text in (("log_end_offset", "Next offset to be written"),
                                       ("log_start_offset", "First offset still kept"),
                                       ("high_watermark", "Offsets below it are durable and visible"),
                                       ("last_stable_offset", "read_committed consumers read up to here"),
                                       ("size_bytes", "Bytes of the partition's segments"))}
        for log in logs.logs():
            labels = [log.topic, str(log.partition)]
            families["log_end_offset"].add_metric(labels, log.log_end_offset)
            families["log_start_offset"].add_metric(labels, log.log_start_offset)
            families["high_watermark"].add_metric(labels, log.high_watermark)
            families["last_stable_offset"].add_metric(labels, log.last_stable_offset)
            families["size_bytes"].add_metric(labels, log.size_bytes)
        yield from families.values()

    def _transactions(self) -> Iterator[Any]:
        coordinator = getattr(self._broker, "transactions", None)
        entries = getattr(coordinator, "transactions", None)
        if not isinstance(entries, dict):
            return
        by_state: dict[str, int] = {}
        oldest_start = None
        for metadata in entries.values():
            value = metadata.current
            by_state[value.state.display_name] = by_state.get(value.state.display_name, 0) + 1
            if value.state.display_name == "Ongoing" and value.start_ms >= 0:
                oldest_start = value.start_ms if oldest_start is None else min(oldest_start, value.start_ms)
        states = GaugeMetricFamily("oncelog_transactions", "Transactional ids by state", labels=["state"])
        for state, count in sorted(by_state.items()):
            states.add_metric([state], count)
        yield states
        oldest = GaugeMetricFamily("oncelog_transaction_oldest_open_seconds",
                                   "Age of the oldest ongoing transaction (0: none)")
        oldest.add_metric([], 0 if oldest_start is None else max(0, self._broker.clock() - oldest_start) / 1000)
        yield oldest
