"""Opening and closing a broker's shared backend (PostgreSQL): the I/O the sans-IO core must not do.

`open_shared(config)` migrates and connects the storage, reserves a producer-id block and prepares the
broker registry; the server registers the broker (`registry.open`) only once its listeners are bound,
so the addresses it publishes are the real ones. `close` deregisters first (leadership moves at once),
then closes the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from oncelog.awaiting import completed
from oncelog.broker import SharedBackend
from oncelog.config import BrokerConfig
from oncelog.coordinator.group.coordinator import OFFSETS_TOPIC
from oncelog.errors import ErrorCode, KafkaError
from oncelog.storage.postgres.dynamic_config import PostgresDynamicConfigs
from oncelog.storage.postgres.groups import GroupPartitions
from oncelog.storage.postgres.producer_ids import BlockProducerIds
from oncelog.storage.postgres.registry import BrokerRegistry
from oncelog.storage.postgres.security import PostgresSecurityStore
from oncelog.storage.postgres.storage import PostgresStorage
from oncelog.storage.postgres.transactions import PostgresTransactions
from oncelog.topic_config import TopicConfig


@dataclass
class OpenShared:
    backend: SharedBackend
    storage: PostgresStorage
    registry: BrokerRegistry
    producer_ids: BlockProducerIds
    transactions: PostgresTransactions
    group_partitions: GroupPartitions
    security: PostgresSecurityStore
    dynamic_configs: PostgresDynamicConfigs

    async def close(self) -> None:
        await self.registry.close()
        await self.dynamic_configs.close()
        await self.security.close()
        await self.group_partitions.close()
        await self.transactions.close()
        await self.producer_ids.close()
        await self.storage.aclose()


async def open_shared(config: BrokerConfig, clock: Callable[[], int]) -> OpenShared:
    storage = PostgresStorage(config.storage)
    await storage.open()
    producer_ids = BlockProducerIds(config.storage)
    registry = BrokerRegistry(config.storage, config.node_id, config.broker_heartbeat_interval_ms,
                              config.broker_session_timeout_ms)

    def topic_exists(topic: str, partition: int) -> bool:
        info = storage.topic(topic)
        return info is not None and 0 <= partition < info.partitions

    transactions = PostgresTransactions(config.storage, storage.writer, topic_exists, producer_ids.allocate, clock,
                                        config.transaction_max_timeout_ms, config.transactional_id_expiration_ms)
    group_partitions = GroupPartitions(storage, config.storage, config.node_id)
    transactions.after_commit = group_partitions.caught_up
    security = PostgresSecurityStore(config.storage)
    dynamic_configs = PostgresDynamicConfigs(config.storage)
    try:
        await producer_ids.open()
        await transactions.open()
        await _ensure_offsets_topic(storage, config, clock())
        await security.open()
        await dynamic_configs.open()
    except BaseException:
        await dynamic_configs.close()
        await security.close()
        await transactions.close()
        await storage.aclose()
        raise
    backend = SharedBackend(storage, registry, producer_ids, storage.cluster_id, transactions, group_partitions,
                            security, dynamic_configs)
    return OpenShared(backend, storage, registry, producer_ids, transactions, group_partitions, security,
                      dynamic_configs)


async def _ensure_offsets_topic(storage: PostgresStorage, config: BrokerConfig, now_ms: int) -> None:
    """`__consumer_offsets` exists before groups are served (the first broker creates it; a broker that
    loses the race finds it made)."""
    if storage.topic(OFFSETS_TOPIC) is not None:
        return
    configs = TopicConfig({"cleanup.policy": "compact"})
    result = await completed(storage.create_topic(OFFSETS_TOPIC, config.offsets_topic_num_partitions, configs,
                                                  now_ms))
    if isinstance(result, KafkaError) and result.code != ErrorCode.topic_already_exists:
        raise OSError(f"cannot create {OFFSETS_TOPIC}: {result.message}")
    await storage.refresh_topics()
