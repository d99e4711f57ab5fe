"""The broker: composes configuration, clock and log manager; what every handler receives.

Theory of operation: `Broker` holds all broker state and is only touched from the event loop (its methods
never await). Time comes from an injected clock so tests can drive it. The server layer registers
`on_log_changed` to wake long-poll fetches when a partition's log grows.
"""

from __future__ import annotations

import base64
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from oncelog.config import BrokerConfig, ConfigError, TopicConfig, validate_topic_configs
from oncelog.coordinator.producer_ids import ProducerIdAllocator
from oncelog.errors import ErrorCode, KafkaError
from oncelog.log.manager import LogManager, Topic, topic_name_problem
from oncelog.log.partition import PartitionLog

logger = logging.getLogger(__name__)

LEADER_EPOCH = 0
"""One node leads every partition forever, so the leader epoch never changes (no KIP-320 truncation)."""

Clock = Callable[[], int]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _load_cluster_id(data_dir: Path, node_id: int) -> str:
    """Kafka's `meta.properties`: the cluster id is made once and kept with the data."""
    path = data_dir / "meta.properties"
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("cluster.id="):
                return line.split("=", 1)[1].strip()
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    temporary = path.with_suffix(".tmp")
    temporary.write_text(f"version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n")
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    temporary.replace(path)
    return cluster_id


class Broker:
    def __init__(self, config: BrokerConfig, clock: Clock = wall_clock_ms) -> None:
        self.config = config
        self.clock = clock
        self.logs = LogManager(config)
        self.cluster_id = ""
        self.producer_ids: ProducerIdAllocator
        self.advertised_port = config.port
        self.on_log_changed: Callable[[PartitionLog], None] = lambda log: None

    def start(self) -> None:
        self.logs.start(self.clock())
        self.cluster_id = _load_cluster_id(self.config.data_dir, self.config.node_id)
        self.producer_ids = ProducerIdAllocator(self.config.data_dir)

    def close(self) -> None:
        self.logs.close()

    def now_ms(self) -> int:
        return self.clock()

    def log_changed(self, log: PartitionLog) -> None:
        self.on_log_changed(log)

    # --- topics ------------------------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        num_partitions: int = -1,
        replication_factor: int = -1,
        configs: dict[str, str | None] | None = None,
        *,
        validate_only: bool = False,
    ) -> tuple[int, int, TopicConfig]:
        """Validate and (unless `validate_only`) create a topic, as Kafka's CreateTopics does.

        Returns (partitions, replication factor, config). Raises KafkaError with Kafka's code.
        """
        problem = topic_name_problem(name)
        if problem is not None:
            raise KafkaError(ErrorCode.invalid_topic_exception, problem)
        if self.logs.topic(name) is not None:
            raise KafkaError(ErrorCode.topic_already_exists, f"topic '{name}' already exists")
        partitions = self.config.num_partitions if num_partitions == -1 else num_partitions
        if partitions <= 0:
            raise KafkaError(ErrorCode.invalid_partitions, "number of partitions must be larger than 0")
        replicas = self.config.default_replication_factor if replication_factor == -1 else replication_factor
        if replicas != 1:
            raise KafkaError(
                ErrorCode.invalid_replication_factor,
                f"replication factor {replicas} is larger than the 1 available broker",
            )
        try:
            overrides = validate_topic_configs(configs or {})
        except ConfigError as error:
            raise KafkaError(ErrorCode.invalid_config, str(error)) from error
        topic_config = TopicConfig(overrides)
        if not validate_only:
            self.logs.create_topic(name, partitions, topic_config, self.clock())
        return partitions, replicas, topic_config

    def auto_create_topic(self, name: str) -> Topic | None:
        """Create `name` with the defaults if auto-creation is on and the name is legal."""
        if not self.config.auto_create_topics_enable or topic_name_problem(name) is not None:
            return None
        self.create_topic(name)
        return self.logs.topic(name)

    def delete_topic(self, name: str) -> None:
        if self.logs.topic(name) is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"topic '{name}' does not exist")
        self.logs.delete_topic(name)
