"""One consistent look at a broker's state, for `/metrics` and the web console.

Theory of operation: `take_view(broker)` gathers, on the broker's event loop, everything an operator
asks about — topics and their partitions' offsets, consumer groups with members, assignments and lag,
transactions with their age — through the same storage and coordinator verbs the Kafka APIs use, so it
works on both backends (on PostgreSQL some answers are database queries, hence `async`). A scrape or a
console page takes one view and renders it; nothing here is kept up to date between looks.

Lag is what Kafka's tools call it: the partition's high watermark minus the group's committed offset
(never below zero), for every partition the group has committed. On shared storage a broker sees the
groups it coordinates; the console of each broker shows its own.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from oncelog.awaiting import completed
from oncelog.coordinator.group.assignment import assigned_partitions
from oncelog.coordinator.runtime import Completion
from oncelog.errors import ErrorCode
from oncelog.storage.api import PartitionKey

if TYPE_CHECKING:
    from oncelog.broker import Broker

TRANSACTIONS_MAX = 500
"""Transactional ids described in one view, open ones first (the rest are counted, not listed): a page
must stay small, and on PostgreSQL each is a query."""
OPEN_STATES = frozenset({"Ongoing", "PrepareCommit", "PrepareAbort"})


@dataclass(slots=True)
class PartitionView:
    topic: str
    partition: int
    log_start_offset: int
    high_watermark: int
    last_stable_offset: int
    log_end_offset: int
    size_bytes: int | None
    """None on shared storage (the bytes live in the database)."""


@dataclass(slots=True)
class TopicView:
    name: str
    internal: bool
    partitions: list[PartitionView]
    retention_ms: int
    retention_bytes: int
    cleanup_policy: str


@dataclass(slots=True)
class MemberView:
    member_id: str
    client_id: str
    client_host: str
    group_instance_id: str | None
    assignment: list[tuple[str, int]]


@dataclass(slots=True)
class GroupView:
    group_id: str
    state: str
    protocol_type: str
    protocol: str
    members: list[MemberView]
    committed: dict[tuple[str, int], int]
    lag: dict[tuple[str, int], int]


@dataclass(slots=True)
class TransactionView:
    transactional_id: str
    producer_id: int
    producer_epoch: int
    state: str
    timeout_ms: int
    start_ms: int
    age_ms: int
    """How long the transaction has been open (Ongoing, Prepare*); -1 when none is."""
    partitions: list[tuple[str, int]]

    @property
    def hanging(self) -> bool:
        """Open past its own timeout: the coordinator should have aborted it, and it pins the LSO."""
        return self.age_ms >= 0 and self.age_ms > self.timeout_ms


@dataclass(slots=True)
class BrokerView:
    now_ms: int
    topics: list[TopicView] = field(default_factory=list)
    groups: list[GroupView] = field(default_factory=list)
    transactions: list[TransactionView] = field(default_factory=list)
    transactions_unlisted: int = 0
    transaction_states: dict[str, int] = field(default_factory=dict)
    """Every transactional id counted by state (listed or not)."""

    def partition(self, topic: str, partition: int) -> PartitionView | None:
        for view in self.topics:
            if view.name == topic:
                return next((p for p in view.partitions if p.partition == partition), None)
        return None


async def settled(value: Any) -> Any:
    """The value of a coordinator or storage answer: local ones are plain values or finished
    completions, database ones finish later."""
    if not isinstance(value, Completion):
        return value
    if value.done:
        return value.value()
    return await completed(value)


async def take_view(broker: Broker) -> BrokerView:
    view = BrokerView(now_ms=broker.clock())
    view.topics = await _topics(broker)
    view.groups = _groups(broker, view)
    view.transactions, view.transactions_unlisted, view.transaction_states = await _transactions(broker,
                                                                                                   view.now_ms)
    return view


async def _topics(broker: Broker) -> list[TopicView]:
    infos = sorted(broker.storage.topics(), key=lambda info: info.name)
    keys: list[PartitionKey] = [(info.name, partition) for info in infos for partition in range(info.partitions)]
    offsets = await settled(broker.storage.partition_offsets(keys)) if keys else []
    sizes: dict[tuple[str, int], int] = {}
    logs = getattr(broker, "logs", None)  # local storage only: shared storage keeps its bytes in the database
    if logs is not None:
        sizes = {(log.topic, log.partition): log.size_bytes for log in logs.logs()}
    by_topic: dict[str, list[PartitionView]] = {info.name: [] for info in infos}
    for (topic, partition), found in zip(keys, offsets, strict=True):
        if found.error != ErrorCode.none:
            continue
        by_topic[topic].append(PartitionView(topic, partition, found.log_start_offset, found.high_watermark,
                                             found.last_stable_offset, found.log_end_offset,
                                             sizes.get((topic, partition))))
    config = broker.config
    return [TopicView(info.name, info.internal, by_topic[info.name], int(info.config.value("retention.ms", config)),
                      int(info.config.value("retention.bytes", config)), info.config.value("cleanup.policy", config))
            for info in infos]


def _groups(broker: Broker, view: BrokerView) -> list[GroupView]:
    groups = []
    for listed in broker.groups.list_groups():
        group_id = listed["group_id"]
        described = broker.groups.describe(group_id)
        members = []
        for member in described["members"]:
            assignment: dict[str, list[int]] = {}
            if described["protocol_type"] == "consumer" and member["member_assignment"]:
                with contextlib.suppress(ValueError):  # a client sent something else: shown as no assignment
                    assignment = assigned_partitions(member["member_assignment"])
            members.append(MemberView(member["member_id"], member["client_id"], member["client_host"],
                                      member["group_instance_id"],
                                      sorted((t, p) for t, partitions in assignment.items() for p in partitions)))
        committed = {(tp[0], tp[1]): value.offset for tp, value in broker.groups.offsets.of_group(group_id).items()}
        lag = {}
        for (topic, partition), offset in committed.items():
            partition_view = view.partition(topic, partition)
            if partition_view is not None:
                lag[(topic, partition)] = max(0, partition_view.high_watermark - offset)
        groups.append(GroupView(group_id, described["group_state"], described["protocol_type"],
                                described["protocol_data"], members, committed, lag))
    return groups


async def _transactions(broker: Broker, now_ms: int) -> tuple[list[TransactionView], int, dict[str, int]]:
    """Open transactions first — all of them up to TRANSACTIONS_MAX, as they are what an operator looks
    for and what the metrics' oldest-open age needs — then finished ones while room is left. Each is one
    DescribeTransactions lookup (a database query on PostgreSQL), so a view costs at most that many."""
    _unknown, listed = await settled(broker.transactions.list([], []))
    open_first = sorted(listed, key=lambda entry: (entry["transaction_state"] not in OPEN_STATES,
                                                   entry["transactional_id"]))
    shown = []
    for entry in open_first[:TRANSACTIONS_MAX]:
        transactional_id = entry["transactional_id"]
        described = await settled(broker.transactions.describe(transactional_id))
        if described["error_code"] != ErrorCode.none:
            continue  # expired between the list and the describe
        state = described["transaction_state"]
        start_ms = int(described["transaction_start_time"])
        is_open = state in OPEN_STATES and start_ms >= 0
        shown.append(TransactionView(
            transactional_id, int(described["producer_id"]), int(described["producer_epoch"]), state,
            int(described["transaction_timeout"]), start_ms, max(0, now_ms - start_ms) if is_open else -1,
            [(str(topic), int(partition)) for topic, partition in described["partitions"]]))
    shown.sort(key=lambda view: view.transactional_id)
    states: dict[str, int] = {}
    for entry in listed:
        states[entry["transaction_state"]] = states.get(entry["transaction_state"], 0) + 1
    return shown, max(0, len(listed) - TRANSACTIONS_MAX), states
