"""The broker: composes configuration, clock, storage and coordinators; what every handler receives.

Theory of operation: `Broker` holds all broker state and is only touched from the event loop (its methods
never await). Time comes from an injected clock, timers from an injected scheduler and "tell me when this
is on disk" from an injected `durability` hook, so the whole core runs without an event loop in tests.

Partition data lives behind `storage` (the seam in `oncelog.storage`); handlers use only its verbs and
the coordinators' verbs, and learn who the brokers are from `cluster`. The local backend keeps the
coordinators' state in internal topics of the same data directory (`storage.internal`) and replays them
here before the server accepts connections. A broker on shared storage (PostgreSQL) gets its storage,
cluster view, producer ids, transaction coordinator and group partitions already opened by the server
layer (they do I/O); its group coordinator serves the `__consumer_offsets` partitions this broker wins
(`group_gate`).
"""

from __future__ import annotations

import base64
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from oncelog.cluster import Cluster, SingleNode
from oncelog.config import BrokerConfig
from oncelog.coordinator.group.coordinator import OFFSETS_TOPIC, GroupConfig, GroupCoordinator
from oncelog.coordinator.producer_ids import ProducerIdAllocator
from oncelog.coordinator.runtime import Scheduler
from oncelog.coordinator.transaction.coordinator import (
    TRANSACTION_STATE_TOPIC,
    TransactionConfig,
    TransactionCoordinator,
)
from oncelog.dynamic_config import LocalDynamicConfigs, effective
from oncelog.errors import ErrorCode
from oncelog.fs import OS_FILE_SYSTEM, FileSystem, write_atomically
from oncelog.log.manager import LogManager
from oncelog.observability.metrics import BrokerMetrics
from oncelog.security.acl import Authorizer
from oncelog.security.settings import authorizer_config
from oncelog.security.store import LocalSecurityStore, SecurityStore
from oncelog.storage.api import Storage
from oncelog.storage.internal import (
    InternalTopics,
    InternalTopicStorage,
    LocalMarkerWriter,
    bump_coordinator_epoch,
    replay_offsets_topic,
    replay_transaction_state,
)
from oncelog.storage.local import Durability, LocalStorage

logger = logging.getLogger(__name__)

Clock = Callable[[], int]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _load_cluster_id(fs: FileSystem, data_dir: Path, node_id: int) -> str:
    """Kafka's `meta.properties`: the cluster id is made once and kept with the data."""
    path = data_dir / "meta.properties"
    if fs.exists(path):
        for line in fs.read_bytes(path).decode("utf-8", "replace").splitlines():
            if line.startswith("cluster.id="):
                return line.split("=", 1)[1].strip()
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    write_atomically(fs, path, f"version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n".encode())
    return cluster_id


FAULT_INJECTION_ENV = "ONCELOG_FAULT_INJECTION"
"""For crash tests only: the name of a commit-protocol point at which the process dies (os._exit)."""


def _crash_at(point: str, wanted: str) -> None:
    if point == wanted:
        logger.error("fault injection: dying at %s", point)
        os._exit(137)


class ProducerIds(Protocol):
    def allocate(self) -> int:
        """A producer id never handed out before; OSError if none can be reserved now (retriable)."""
        ...


class SharedBackend(NamedTuple):
    """What a broker on shared storage is given, opened: the storage, the cluster view, producer ids."""

    storage: Storage
    cluster: Cluster
    producer_ids: ProducerIds
    cluster_id: str
    transactions: Any
    """The transaction coordinator over the database (`storage.postgres.transactions`)."""
    group_partitions: Any
    """Ownership, loading and storage of the group coordinator's partitions (`storage.postgres.groups`)."""
    security: Any
    """ACLs and SCRAM credentials in the database (`storage.postgres.security`), a `SecurityStore`."""
    dynamic_configs: Any
    """Dynamic broker configs in the database (`storage.postgres.dynamic_config`)."""


class Broker:
    def __init__(self, config: BrokerConfig, clock: Clock = wall_clock_ms, fs: FileSystem = OS_FILE_SYSTEM,
                 shared: SharedBackend | None = None) -> None:
        self.config = config
        self.static_config = config
        """The config read at start (file and --override); `config` is it with the dynamic configs laid over."""
        self.clock = clock
        self.fs = fs
        self.advertised: dict[str, tuple[str, int]] = {}
        """Per listener name, the (host, port) clients are told (set by the server once it is bound)."""
        self.storage: Storage
        self.cluster: Cluster
        self.producer_ids: ProducerIds
        self.cluster_id = ""
        self.shared = shared
        self.transactions: Any
        """The transaction coordinator: in memory over `__transaction_state` locally, over the database on
        shared storage; the same verbs."""
        if shared is None:
            self.logs = LogManager(config, fs)
            """The local backend's partition logs (maintenance jobs and the flusher work on them)."""
            self.local = LocalStorage(self.logs)
            self.storage = self.local
            self.cluster = SingleNode(config.node_id, self.advertised)
        else:
            self.storage = shared.storage
            self.cluster = shared.cluster
            self.producer_ids = shared.producer_ids
            self.cluster_id = shared.cluster_id
            self.transactions = shared.transactions
        self.authorizer = Authorizer(authorizer_config(config.security_properties))
        """ACL checks; allows everything unless `authorizer.class.name` is set."""
        self.metrics = BrokerMetrics()
        """Prometheus counters and histograms (served by the server's HTTP listener, if any)."""
        self.security: SecurityStore | None = None
        """ACLs and SCRAM credentials, durable: the data directory, or the database on shared storage."""
        self.scheduler: Scheduler
        self.internal_topics: InternalTopics
        self.groups: GroupCoordinator

    def start(self, scheduler: Scheduler, durability: Durability) -> None:
        """Load logs and coordinator state; `scheduler` and `durability` come from the server layer."""
        self.scheduler = scheduler
        config = self.config
        if self.shared is not None:
            partitions = self.shared.group_partitions
            offsets = self.storage.topic(OFFSETS_TOPIC)
            self.groups = GroupCoordinator(partitions, scheduler, self.clock,
                                           self._group_config(offsets.partitions if offsets else
                                                              config.offsets_topic_num_partitions),
                                           self._partition_exists)
            partitions.attach(self.groups, self.cluster, self.clock)
            self._use_security(self.shared.security)
            self._use_dynamic_configs(self.shared.dynamic_configs)
            return
        storage = self.local
        storage.start(self.clock(), durability)
        self.cluster_id = _load_cluster_id(self.fs, config.data_dir, config.node_id)
        local_security = LocalSecurityStore(self.fs, config.data_dir)
        local_security.load()
        self._use_security(local_security)
        dynamic = LocalDynamicConfigs(self.fs, config.data_dir)
        dynamic.load()
        self._use_dynamic_configs(dynamic)
        config = self.config
        self.producer_ids = ProducerIdAllocator(self.fs, config.data_dir)
        self.internal_topics = internal = InternalTopics(storage, config, self.clock)
        coordinator_storage = InternalTopicStorage(internal, storage, self.clock)
        partition_exists = self._partition_exists
        self.groups = GroupCoordinator(coordinator_storage, scheduler, self.clock,
                                       self._group_config(internal.partitions[OFFSETS_TOPIC]), partition_exists)
        self.transactions = TransactionCoordinator(
            coordinator_storage, LocalMarkerWriter(storage, lambda: self.groups, self.clock), scheduler, self.clock,
            self.producer_ids.allocate,
            TransactionConfig(config.transaction_max_timeout_ms, config.transactional_id_expiration_ms,
                              internal.partitions[TRANSACTION_STATE_TOPIC]),
            partition_exists,
            bump_coordinator_epoch(self.fs, config.data_dir),
        )
        fault = os.environ.get(FAULT_INJECTION_ENV)
        if fault:
            self.transactions.fault_hook = lambda point: _crash_at(point, fault)
        replay_offsets_topic(storage, self.groups)
        replay_transaction_state(storage, self.transactions)

    def _use_dynamic_configs(self, store: Any) -> None:
        self.dynamic_configs = store
        store.on_change = self._apply_dynamic_configs
        self._apply_dynamic_configs()

    def _apply_dynamic_configs(self) -> None:
        """Lay the dynamic configs over the static ones; topics without overrides follow at once."""
        self.config = effective(self.static_config, self.dynamic_configs.entries())
        if self.shared is None:
            self.logs.reconfigure(self.config)

    def _use_security(self, store: SecurityStore) -> None:
        self.security = store
        store.on_change = lambda: self.authorizer.replace(store.acls())
        self.authorizer.replace(store.acls())

    def maintenance_jobs(self) -> list[tuple[str, int, Callable[[], object]]]:
        """(name, interval ms, job) for every periodic job this broker needs; the server (or the
        simulation) runs them, retrying a failed one later. On shared storage the server adds the
        database's retention pass."""
        config = self.config
        jobs: list[tuple[str, int, Callable[[], object]]] = [
            ("transaction-timeouts", config.transaction_abort_timed_out_transaction_cleanup_interval_ms,
             self.transactions.abort_timed_out),
            ("transactional-id-expiry", config.transaction_remove_expired_transaction_cleanup_interval_ms,
             self.transactions.expire_transactional_ids),
            ("offset-expiry", config.offsets_retention_check_interval_ms, self.groups.expire_offsets),
        ]
        if self.shared is not None:
            # Compaction is not done there yet (README, Limits); the reapers run on every broker (SKIP
            # LOCKED keeps them apart); each broker gives up the group partitions another live broker
            # wins now and loads those it wins.
            jobs.append(("group-ownership", config.broker_heartbeat_interval_ms,
                         self.shared.group_partitions.check_ownership))
            return jobs
        logs = self.logs
        return [
            *jobs,
            ("retention", config.log_retention_check_interval_ms, lambda: logs.apply_retention(self.now_ms())),
            ("checkpoints", config.log_flush_offset_checkpoint_interval_ms, logs.write_checkpoints),
            ("cleaner", config.log_cleaner_backoff_ms, lambda: logs.compact(self.now_ms())),
            ("producer-expiry", config.producer_id_expiration_check_interval_ms,
             lambda: logs.expire_producers(self.now_ms(), config.producer_id_expiration_ms)),
        ]

    def _group_config(self, offsets_topic_partitions: int) -> GroupConfig:
        config = self.config
        return GroupConfig(
            session_timeout_ms_min=config.group_min_session_timeout_ms,
            session_timeout_ms_max=config.group_max_session_timeout_ms,
            initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
            offsets_topic_partitions=offsets_topic_partitions,
            offsets_retention_ms=config.offsets_retention_ms,
            offset_metadata_bytes_max=config.offset_metadata_max_bytes,
        )

    def _partition_exists(self, topic: str, partition: int) -> bool:
        info = self.storage.topic(topic)
        return info is not None and 0 <= partition < info.partitions

    def ensure_internal_topic(self, name: str) -> None:
        """Create an internal topic if it does not exist; KafkaError if the disk refuses. (On shared
        storage the broker made them at start.)"""
        if self.shared is None:
            self.internal_topics.topic(name)

    def ensure_coordinator_partition(self, topic: str, partition: int) -> None:
        """The coordinator partition exists (created on first use) and is online; else KafkaError, which
        coordinator APIs answer as COORDINATOR_NOT_AVAILABLE."""
        if self.shared is None:
            self.internal_topics.log(topic, partition)

    def group_gate(self, group_ids: list[str]) -> ErrorCode | None:
        """None if this broker may serve requests for `group_ids` now; else the retriable error to
        answer (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS). Always None on local storage."""
        if self.shared is None:
            return None
        return self.shared.group_partitions.gate(group_ids)  # type: ignore[no-any-return]

    def partition_changed(self, topic: str, partition: int) -> None:
        """A partition grew (any broker's write): the group coordinator tails its own partitions."""
        if self.shared is not None and topic == OFFSETS_TOPIC:
            self.shared.group_partitions.changed(partition)

    def close(self) -> None:
        if self.shared is None:
            self.local.close()

    def broker_address(self, node_id: int, listener: str) -> tuple[str, int] | None:
        """Where clients of `listener` reach broker `node_id` (None if it is not live)."""
        if node_id == self.config.node_id:
            return self.advertised_address(listener)
        for broker in self.cluster.brokers():
            if broker.node_id == node_id:
                return broker.address(listener)
        return None

    def live_brokers(self, listener: str) -> list[tuple[int, str, int]]:
        """(node id, host, port) of every live broker that has `listener`, this one always included."""
        found = []
        for broker in self.cluster.brokers():
            address = self.advertised_address(listener) if broker.node_id == self.config.node_id else \
                broker.address(listener)
            if address is not None:
                found.append((broker.node_id, *address))
        if not any(node_id == self.config.node_id for node_id, _, _ in found):
            found.insert(0, (self.config.node_id, *self.advertised_address(listener)))
        return found

    def now_ms(self) -> int:
        return self.clock()

    def advertised_address(self, listener: str) -> tuple[str, int]:
        """Where clients of `listener` should connect (the listener they used, as Kafka answers)."""
        address = self.advertised.get(listener)
        if address is None:  # a core driven without a server (tests): the first listener as configured
            first = self.config.listeners[0]
            return first.host, first.port
        return address
