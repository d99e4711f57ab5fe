"""The broker: composes configuration, clock, storage and coordinators; what every handler receives.

Theory of operation: `Broker` holds all broker state and is only touched from the event loop (its methods
never await). Time comes from an injected clock, timers from an injected scheduler and "tell me when this
is on disk" from an injected `durability` hook, so the whole core runs without an event loop in tests.

Partition data lives behind `storage` (the seam in `oncelog.storage`); handlers use only its verbs and
the coordinators' verbs. The local backend keeps the coordinators' state in internal topics of the same
data directory (`storage.internal`) and replays them here before the server accepts connections.
"""

from __future__ import annotations

import base64
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from oncelog.config import BrokerConfig
from oncelog.coordinator.group.coordinator import OFFSETS_TOPIC, GroupConfig, GroupCoordinator
from oncelog.coordinator.producer_ids import ProducerIdAllocator
from oncelog.coordinator.runtime import Scheduler
from oncelog.coordinator.transaction.coordinator import (
    TRANSACTION_STATE_TOPIC,
    TransactionConfig,
    TransactionCoordinator,
)
from oncelog.fs import OS_FILE_SYSTEM, FileSystem, write_atomically
from oncelog.log.manager import LogManager
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


class Broker:
    def __init__(self, config: BrokerConfig, clock: Clock = wall_clock_ms, fs: FileSystem = OS_FILE_SYSTEM) -> None:
        self.config = config
        self.clock = clock
        self.fs = fs
        self.logs = LogManager(config, fs)
        """The local backend's partition logs (maintenance jobs and the flusher work on them)."""
        self.storage = LocalStorage(self.logs)
        self.cluster_id = ""
        self.producer_ids: ProducerIdAllocator
        self.advertised: dict[str, tuple[str, int]] = {}
        """Per listener name, the (host, port) clients are told (set by the server once it is bound)."""
        self.scheduler: Scheduler
        self.internal_topics: InternalTopics
        self.groups: GroupCoordinator
        self.transactions: TransactionCoordinator

    def start(self, scheduler: Scheduler, durability: Durability) -> None:
        """Load logs and coordinator state; `scheduler` and `durability` come from the server layer."""
        self.scheduler = scheduler
        config = self.config
        storage = self.storage
        storage.start(self.clock(), durability)
        self.cluster_id = _load_cluster_id(self.fs, config.data_dir, config.node_id)
        self.producer_ids = ProducerIdAllocator(self.fs, config.data_dir)
        self.internal_topics = internal = InternalTopics(storage, config, self.clock)
        coordinator_storage = InternalTopicStorage(internal, storage, self.clock)
        partition_exists = lambda topic, partition: self.logs.get(topic, partition) is not None  # noqa: E731
        self.groups = GroupCoordinator(
            coordinator_storage,
            scheduler,
            self.clock,
            GroupConfig(
                session_timeout_ms_min=config.group_min_session_timeout_ms,
                session_timeout_ms_max=config.group_max_session_timeout_ms,
                initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
                offsets_topic_partitions=internal.partitions[OFFSETS_TOPIC],
                offsets_retention_ms=config.offsets_retention_ms,
                offset_metadata_bytes_max=config.offset_metadata_max_bytes,
            ),
            partition_exists,
        )
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

    def ensure_internal_topic(self, name: str) -> None:
        """Create an internal topic if it does not exist; KafkaError if the disk refuses."""
        self.internal_topics.topic(name)

    def ensure_coordinator_partition(self, topic: str, partition: int) -> None:
        """The coordinator partition exists (created on first use) and is online; else KafkaError, which
        coordinator APIs answer as COORDINATOR_NOT_AVAILABLE."""
        self.internal_topics.log(topic, partition)

    def close(self) -> None:
        self.storage.close()

    def now_ms(self) -> int:
        return self.clock()

    def advertised_address(self, listener: str) -> tuple[str, int]:
        """Where clients of `listener` should connect (the listener they used, as Kafka answers)."""
        address = self.advertised.get(listener)
        if address is None:  # a core driven without a server (tests): the first listener as configured
            first = self.config.listeners[0]
            return first.host, first.port
        return address
