"""Who the brokers are and which one clients should use for what: the cluster view handlers read.

Theory of operation: leadership is a hint, never a correctness condition. Every broker serves Produce
and Fetch for every partition correctly (the storage serialises writers), so Metadata only spreads
clients out: the leader of a partition, and the coordinator of a group or transactional id, is the live
broker with the highest rendezvous hash (highest random weight) of (key, broker id). When a broker joins
or leaves, only the keys it wins or held move; nothing else is reassigned.

`SingleNode` is the embedded default (this broker leads everything). The PostgreSQL backend's
`BrokerRegistry` (storage.postgres.registry) implements the same view from the `broker` table.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    node_id: int
    endpoints: dict[str, tuple[str, int]]
    """Per listener name, the advertised (host, port)."""

    def address(self, listener: str) -> tuple[str, int] | None:
        return self.endpoints.get(listener)


def rendezvous_owner(key: str, node_ids: list[int]) -> int:
    """The node with the highest hash weight for `key` (-1 if there are none)."""
    best, best_weight = -1, b""
    for node_id in node_ids:
        weight = hashlib.blake2b(f"{node_id}\x00{key}".encode(), digest_size=8).digest()
        if weight > best_weight:
            best, best_weight = node_id, weight
    return best


def group_partition_key(partition: int) -> str:
    """The rendezvous key of a `__consumer_offsets` partition: its groups' coordinator wins it."""
    return f"__consumer_offsets-{partition}"


class Cluster(Protocol):
    def brokers(self) -> list[BrokerInfo]:
        """The live brokers, by node id."""
        ...

    def leader(self, topic: str, partition: int) -> int: ...

    def coordinator(self, key: str) -> int: ...

    def controller(self) -> int: ...


class SingleNode:
    """One broker that leads every partition and coordinates everything."""

    def __init__(self, node_id: int, endpoints: dict[str, tuple[str, int]]) -> None:
        self.node_id = node_id
        self.endpoints = endpoints
        """Filled in by the server once its listeners are bound."""

    def brokers(self) -> list[BrokerInfo]:
        return [BrokerInfo(self.node_id, self.endpoints)]

    def leader(self, topic: str, partition: int) -> int:
        return self.node_id

    def coordinator(self, key: str) -> int:
        return self.node_id

    def controller(self) -> int:
        return self.node_id
