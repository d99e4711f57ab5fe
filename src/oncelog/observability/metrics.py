"""The broker's Prometheus metrics, and Kafka's names for them.

Theory of operation: each broker owns one `CollectorRegistry` (several brokers may share a process in
tests). Counters and histograms are updated where the work happens (the connection counts requests and
times them); everything that is state — partition offsets, open connections, transactions — is read
at scrape time by a collector, so keeping it costs nothing between scrapes.

| oncelog metric | Kafka's |
|---|---|
| `oncelog_requests_total{api,version}` (-1: unsupported) | kafka.network:type=RequestMetrics,name=RequestsPerSec |
| `oncelog_request_seconds{api}` (histogram) | kafka.network:type=RequestMetrics,name=TotalTimeMs,request= |
| `oncelog_request_errors_total{api,error}` | kafka.network:type=RequestMetrics,name=ErrorsPerSec,request=,error= |
| `oncelog_request_failures_total{api}` | (UNKNOWN_SERVER_ERROR answers: a handler raised) |
| `oncelog_fenced_producers_total{api}` | (answers PRODUCER_FENCED or INVALID_PRODUCER_EPOCH: a zombie was refused) |
| `oncelog_duplicate_batches_total{topic}` | (retried idempotent batches answered, not written again) |
| `oncelog_topic_bytes_in_total{topic}` | kafka.server:type=BrokerTopicMetrics,name=BytesInPerSec,topic= |
| `oncelog_topic_messages_in_total{topic}` | kafka.server:type=BrokerTopicMetrics,name=MessagesInPerSec,topic= |
| `oncelog_topic_bytes_out_total{topic}` | kafka.server:type=BrokerTopicMetrics,name=BytesOutPerSec,topic= |
| `oncelog_fsync_seconds` (histogram) | kafka.log:type=LogFlushStats,name=LogFlushRateAndTimeMs |
| `oncelog_fsync_batch_waiters` (histogram) | (acks=all requests and coordinator writes released by one fsync round) |
| `oncelog_fsync_batch_partitions` (histogram) | (partitions fsynced by one round) |
| `oncelog_fsync_failures_total` | (failed fsyncs; each takes its partition offline) |
| `oncelog_connections` | kafka.server:type=socket-server-metrics,name=connection-count |
| `oncelog_partition_log_end_offset{topic,partition}` | kafka.log:type=Log,name=LogEndOffset |
| `oncelog_partition_log_start_offset{topic,partition}` | kafka.log:type=Log,name=LogStartOffset |
| `oncelog_partition_high_watermark{topic,partition}` | kafka.cluster:type=Partition (HighWatermark) |
| `oncelog_partition_last_stable_offset{topic,partition}` | (LSO; read_committed consumers stop here) |
| `oncelog_partition_size_bytes{topic,partition}` | kafka.log:type=Log,name=Size (local storage only) |
| `oncelog_transactions{state}` | (transaction coordinator: transactional ids per state) |
| `oncelog_transaction_oldest_open_seconds` | (age of the oldest open transaction: a hanging one pins the LSO) |
| `oncelog_transactions_ended_total{result}` | (commit, abort; timeout: aborts the coordinator began) |
| `oncelog_consumer_groups{state}` | kafka.coordinator.group:type=GroupMetadataManager,name=NumGroups<State> |
| `oncelog_group_rebalances_total` | group-coordinator-metrics classic-group-completed-rebalance-count |
| `oncelog_consumer_group_lag{group,topic,partition}` | (high watermark minus committed offset, as LAG) |

Metrics about state come from one `view.BrokerView` taken per scrape (`refresh`), so every gauge of a
scrape describes the same moment and the database backend is asked once.
"""

from __future__ import annotations

import dataclasses
import time
import typing
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from oncelog.errors import ErrorCode

from .view import BrokerView, take_view

if TYPE_CHECKING:
    from oncelog.broker import Broker

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)
FENCED = frozenset({ErrorCode.producer_fenced, ErrorCode.invalid_producer_epoch})


class BrokerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter("oncelog_requests", "Requests received, by API and version", ["api", "version"],
                                registry=registry)
        self.errors = Counter("oncelog_request_errors", "Error codes answered (other than NONE), by API and error; "
                              "a response with errors on several partitions counts each", ["api", "error"],
                              registry=registry)
        self.failures = Counter("oncelog_request_failures", "Requests a handler failed on (answered "
                                "UNKNOWN_SERVER_ERROR)", ["api"], registry=registry)
        self.fenced = Counter("oncelog_fenced_producers", "Answers that fenced a producer (PRODUCER_FENCED or "
                              "INVALID_PRODUCER_EPOCH)", ["api"], registry=registry)
        self.latency = Histogram("oncelog_request_seconds", "Time from taking a request to having its answer, "
                                 "including waits for fsync, long polls and coordinators", ["api"],
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.bytes_in = Counter("oncelog_topic_bytes_in", "Record batch bytes appended, by topic", ["topic"],
                                registry=registry)
        self.messages_in = Counter("oncelog_topic_messages_in", "Records appended, by topic", ["topic"],
                                   registry=registry)
        self.bytes_out = Counter("oncelog_topic_bytes_out", "Record batch bytes served to fetches, by topic",
                                 ["topic"], registry=registry)
        self.duplicates = Counter("oncelog_duplicate_batches", "Retried idempotent batches recognised and not "
                                  "written again, by topic", ["topic"], registry=registry)
        self.fsync_seconds = Histogram("oncelog_fsync_seconds", "Duration of one flusher round (its fsyncs)",
                                       buckets=FSYNC_BUCKETS, registry=registry)
        self.fsync_waiters = Histogram("oncelog_fsync_batch_waiters", "Writes waiting on one flusher round (the "
                                       "group commit's batch size)", buckets=BATCH_BUCKETS, registry=registry)
        self.fsync_partitions = Histogram("oncelog_fsync_batch_partitions", "Partitions fsynced by one round",
                                          buckets=BATCH_BUCKETS, registry=registry)
        self.fsync_failures = Counter("oncelog_fsync_failures", "Failed fsyncs (each takes its partition offline)",
                                      registry=registry)
        self._broker: Broker | None = None
        self.view: BrokerView | None = None
        """The state the last scrape described (`refresh`)."""

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

    def answered(self, api: str, response: Any) -> None:
        """Count the error codes in a response (Kafka's ErrorsPerSec)."""
        codes = error_codes(response)
        if not codes:
            return
        for code in codes:
            self.errors.labels(api, code.name.upper()).inc()
        if not FENCED.isdisjoint(codes):
            self.fenced.labels(api).inc()

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

    def topic_totals(self, topic: str) -> tuple[float, float, float]:
        """(bytes in, records in, bytes out) since the start: the console turns them into rates."""
        children = self._per_topic.get(topic)
        if children is None:
            return 0.0, 0.0, 0.0
        return tuple(child._value.get() for child in children)

    def flushed(self, waiters: int, partitions: int, seconds: float, failures: int) -> None:
        """One flusher round finished."""
        self.fsync_seconds.observe(seconds)
        self.fsync_waiters.observe(waiters)
        self.fsync_partitions.observe(partitions)
        if failures:
            self.fsync_failures.inc(failures)

    def watch(self, broker: Broker, connections: Callable[[], int]) -> None:
        self._broker = broker
        self.registry.register(_StateCollector(self, broker, connections))

    async def refresh(self) -> None:
        """Take the view the next scrape describes (call on the broker's loop before rendering)."""
        if self._broker is not None:
            self.view = await take_view(self._broker)


# --- error codes in a response -------------------------------------------------------------------------------

_Plan = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]
"""Per response class: its ErrorCode fields, nested entity fields, and tuple-of-entity fields that can hold
error codes somewhere below."""
_plans: dict[type, _Plan | None] = {}


def _plan(cls: type) -> _Plan | None:
    if cls in _plans:
        return _plans[cls]
    _plans[cls] = None  # recursion guard; replaced below
    hints = typing.get_type_hints(cls)
    codes, nested, listed = [], [], []
    for item in dataclasses.fields(cls):
        kind = hints.get(item.name)
        if kind is ErrorCode:
            codes.append(item.name)
            continue
        inner = [arg for arg in typing.get_args(kind) if arg is not Ellipsis and arg is not type(None)]
        if typing.get_origin(kind) is tuple and len(inner) == 1 and dataclasses.is_dataclass(inner[0]):
            if _plan(inner[0]) is not None:  # type: ignore[arg-type]
                listed.append(item.name)
        elif dataclasses.is_dataclass(kind) or (inner and dataclasses.is_dataclass(inner[0])):
            target = kind if dataclasses.is_dataclass(kind) else inner[0]
            if _plan(target) is not None:  # type: ignore[arg-type]
                nested.append(item.name)
    plan = (tuple(codes), tuple(nested), tuple(listed)) if codes or nested or listed else None
    _plans[cls] = plan
    return plan


def error_codes(response: Any) -> list[ErrorCode]:
    """Every error code other than NONE anywhere in a decoded-shape response entity."""
    found: list[ErrorCode] = []
    _collect(response, found)
    return found


def _collect(entity: Any, found: list[ErrorCode]) -> None:
    kind = type(entity)
    plan = _plans[kind] if kind in _plans else _plan(kind) if dataclasses.is_dataclass(entity) else None
    if plan is None:
        return
    codes, nested, listed = plan
    for name in codes:
        code = getattr(entity, name)
        if code is not ErrorCode.none:
            found.append(code)
    for name in nested:
        _collect(getattr(entity, name), found)
    for name in listed:
        for item in getattr(entity, name):
            _collect(item, found)


# --- state read at scrape time -------------------------------------------------------------------------------


class _StateCollector(Collector):
    """Gauges from the view the scrape took, and counters the coordinators keep."""

    def __init__(self, metrics: BrokerMetrics, broker: Broker, connections: Callable[[], int]) -> None:
        self._metrics = metrics
        self._broker = broker
        self._connections = connections

    def collect(self) -> Iterator[Any]:
        connections = GaugeMetricFamily("oncelog_connections", "Open client connections")
        connections.add_metric([], self._connections())
        yield connections
        yield from self._coordinator_counters()
        view = self._metrics.view
        if view is not None:
            yield from self._partitions(view)
            yield from self._transactions(view)
            yield from self._groups(view)

    def _coordinator_counters(self) -> Iterator[Any]:
        ended = CounterMetricFamily("oncelog_transactions_ended", "Transactions completed (commit, abort) and "
                                    "aborted by the coordinator for running past their timeout (timeout)",
                                    labels=["result"])
        counts = getattr(self._broker.transactions, "ended", {})
        for result in ("commit", "abort", "timeout"):
            ended.add_metric([result], counts.get(result, 0))
        yield ended
        rebalances = CounterMetricFamily("oncelog_group_rebalances", "Rebalances completed (new generations) by "
                                         "the groups this broker coordinates")
        rebalances.add_metric([], self._broker.groups.membership.rebalances)
        yield rebalances

    def _partitions(self, view: BrokerView) -> Iterator[Any]:
        families = {name: GaugeMetricFamily(f"oncelog_partition_{name}", text, labels=["topic", "partition"])
                    for name, text in (("log_end_offset", "Next offset to be written"),
                                       ("log_start_offset", "First offset still kept"),
                                       ("high_watermark", "Offsets below it are durable and visible"),
                                       ("last_stable_offset", "read_committed consumers read up to here"),
                                       ("size_bytes", "Bytes of the partition's segments"))}
        for topic in view.topics:
            for partition in topic.partitions:
                labels = [topic.name, str(partition.partition)]
                families["log_end_offset"].add_metric(labels, partition.log_end_offset)
                families["log_start_offset"].add_metric(labels, partition.log_start_offset)
                families["high_watermark"].add_metric(labels, partition.high_watermark)
                families["last_stable_offset"].add_metric(labels, partition.last_stable_offset)
                if partition.size_bytes is not None:
                    families["size_bytes"].add_metric(labels, partition.size_bytes)
        yield from families.values()

    def _transactions(self, view: BrokerView) -> Iterator[Any]:
        states = GaugeMetricFamily("oncelog_transactions", "Transactional ids by state", labels=["state"])
        for state, count in sorted(view.transaction_states.items()):
            states.add_metric([state], count)
        yield states
        oldest = GaugeMetricFamily("oncelog_transaction_oldest_open_seconds",
                                   "Age of the oldest open transaction (0: none)")
        oldest.add_metric([], max((t.age_ms for t in view.transactions if t.age_ms >= 0), default=0) / 1000)
        yield oldest

    def _groups(self, view: BrokerView) -> Iterator[Any]:
        by_state: dict[str, int] = {}
        lag = GaugeMetricFamily("oncelog_consumer_group_lag", "High watermark minus the group's committed offset",
                                labels=["group", "topic", "partition"])
        for group in view.groups:
            by_state[group.state] = by_state.get(group.state, 0) + 1
            for (topic, partition), behind in sorted(group.lag.items()):
                lag.add_metric([group.group_id, topic, str(partition)], behind)
        states = GaugeMetricFamily("oncelog_consumer_groups", "Consumer groups by state", labels=["state"])
        for state, count in sorted(by_state.items()):
            states.add_metric([state], count)
        yield states
        yield lag
