"""Where a topic's partitions live, and a connection to each broker that leads some: for the console
producer and consumer, which (unlike the admin commands) must talk to every partition's leader."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from oncelog.client import ClientError, KafkaClient, connect
from oncelog.errors import ErrorCode

METADATA_VERSION = 9
METADATA_RETRY_S = 10.0
"""How long a topic that is being created (LEADER_NOT_AVAILABLE) is waited for."""


class TopicNotFound(ClientError):
    pass


@dataclass(frozen=True, slots=True)
class TopicLayout:
    topic: str
    leaders: dict[int, int]
    """partition -> leader node id"""
    nodes: dict[int, str]
    """node id -> host:port"""

    @property
    def partitions(self) -> list[int]:
        return sorted(self.leaders)


class ClusterClient:
    def __init__(self, args: Any) -> None:
        self._args = args
        self.bootstrap = connect(args)
        self._clients: dict[str, KafkaClient] = {}

    def layout(self, topic: str, create: bool) -> TopicLayout:
        """The topic's partitions and leaders (creating it if `create` and the broker auto-creates)."""
        deadline = time.monotonic() + METADATA_RETRY_S
        while True:
            response = self.bootstrap.request(3, METADATA_VERSION, {
                "topics": [{"name": topic}], "allow_auto_topic_creation": create,
                "include_cluster_authorized_operations": False, "include_topic_authorized_operations": False})
            [found] = response.topics
            code = ErrorCode(int(found.error_code))
            if code == ErrorCode.none and found.partitions and all(int(p.leader_id) >= 0 for p in found.partitions):
                return TopicLayout(topic, {int(p.partition_index): int(p.leader_id) for p in found.partitions},
                                   {int(b.node_id): f"{b.host}:{b.port}" for b in response.brokers})
            if code == ErrorCode.unknown_topic_or_partition:
                raise TopicNotFound(f"topic {topic!r} does not exist" + (
                    "" if create else "; create it with `oncelog topics create`"))
            if code == ErrorCode.topic_authorization_failed:
                raise ClientError(f"not authorized to use topic {topic!r}: ask for an ACL (oncelog acls add)")
            if code not in (ErrorCode.none, ErrorCode.leader_not_available) or time.monotonic() > deadline:
                raise ClientError(f"topic {topic!r} is not available: {code.name.upper()}")
            time.sleep(0.2)

    def for_node(self, layout: TopicLayout, partition: int) -> KafkaClient:
        """A connection to the partition's leader (one per broker, kept)."""
        address = layout.nodes.get(layout.leaders[partition])
        if address is None:
            raise ClientError(f"no address for the leader of {layout.topic}-{partition}")
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = connect(self._args, address)
        return client

    def forget(self, layout: TopicLayout, partition: int) -> None:
        """Drop the connection to the partition's leader (it failed: a late answer on it would be read as
        the answer to the next request); the next `for_node` connects afresh."""
        address = layout.nodes.get(layout.leaders.get(partition, -1))
        client = self._clients.pop(address, None) if address is not None else None
        if client is not None:
            client.close()

    def close(self) -> None:
        self.bootstrap.close()
        for client in self._clients.values():
            client.close()
