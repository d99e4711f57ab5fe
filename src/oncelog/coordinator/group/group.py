"""A classic consumer group: its state machine (Kafka's `ClassicGroupState`) and members.

States and what each request gets in them (docs of Kafka's `ClassicGroupState`):

- EMPTY: no members; the group may still hold committed offsets. JoinGroup starts a rebalance; SyncGroup,
  Heartbeat get UNKNOWN_MEMBER_ID; simple (generation -1) offset commits are accepted.
- PREPARING_REBALANCE: waiting for every known member to (re)join. Heartbeats and SyncGroup get
  REBALANCE_IN_PROGRESS; the join completes when all have joined or the rebalance timeout passes.
- COMPLETING_REBALANCE: JoinGroup answered, waiting for the leader's SyncGroup with the assignment.
  Heartbeats are fine; offset commits get REBALANCE_IN_PROGRESS.
- STABLE: assignment distributed; heartbeats, syncs and commits are answered normally.
- DEAD: the group was deleted or its last offsets expired; requests get COORDINATOR_NOT_AVAILABLE or
  GROUP_ID_NOT_FOUND.

`VALID_PREVIOUS` is the transition table; `Group.transition` enforces it. An impossible transition is a
bug in the coordinator, hence an assert, never a client error.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from oncelog.coordinator.runtime import Completion, TimerHandle


class GroupState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


VALID_PREVIOUS: dict[GroupState, frozenset[GroupState]] = {
    GroupState.EMPTY: frozenset({GroupState.PREPARING_REBALANCE}),
    GroupState.PREPARING_REBALANCE: frozenset(
        {GroupState.EMPTY, GroupState.STABLE, GroupState.COMPLETING_REBALANCE}
    ),
    GroupState.COMPLETING_REBALANCE: frozenset({GroupState.PREPARING_REBALANCE}),
    GroupState.STABLE: frozenset({GroupState.COMPLETING_REBALANCE}),
    GroupState.DEAD: frozenset(
        {GroupState.EMPTY, GroupState.STABLE, GroupState.PREPARING_REBALANCE, GroupState.COMPLETING_REBALANCE,
         GroupState.DEAD}
    ),
}


@dataclass(slots=True)
class Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    assignment: bytes = b""
    join_waiter: Completion[dict[str, Any]] | None = None
    sync_waiter: Completion[dict[str, Any]] | None = None
    session_timer: TimerHandle | None = None
    is_new: bool = False
    """Joined during the current rebalance; removed if it never completes it (Kafka's `isNew`)."""

    def protocol_names(self) -> list[str]:
        return [name for name, _metadata in self.protocols]

    def metadata_for(self, protocol: str) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        raise KeyError(protocol)


@dataclass(slots=True)
class Group:
    group_id: str
    state: GroupState = GroupState.EMPTY
    generation_id: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str | None = None
    members: dict[str, Member] = field(default_factory=dict)
    static_members: dict[str, str] = field(default_factory=dict)
    """group.instance.id → member id."""
    pending_members: set[str] = field(default_factory=set)
    """Member ids handed out with MEMBER_ID_REQUIRED that have not joined yet."""
    state_timestamp_ms: int = -1
    join_timer: TimerHandle | None = None
    new_member_added: bool = False
    initial_join_delayed: bool = False
    """The rebalance started from Empty and waits `group.initial.rebalance.delay.ms` for more members."""

    def transition(self, target: GroupState, now_ms: int) -> None:
        assert self.state in VALID_PREVIOUS[target], f"group {self.group_id}: {self.state} → {target}"
        self.state = target
        self.state_timestamp_ms = now_ms

    def is_(self, *states: GroupState) -> bool:
        return self.state in states

    # --- protocol selection (ClassicGroup.selectProtocol) --------------------------------------------

    def supports(self, protocol_type: str, protocols: list[str]) -> bool:
        """Whether a member with these protocols may join (same type, at least one common protocol)."""
        if not self.members:
            return bool(protocol_type) and bool(protocols)
        return protocol_type == self.protocol_type and bool(self.candidate_protocols() & set(protocols))

    def candidate_protocols(self) -> set[str]:
        names = [set(member.protocol_names()) for member in self.members.values()]
        return set.intersection(*names) if names else set()

    def select_protocol(self) -> str:
        """Each member votes for its first protocol all members support; most votes wins."""
        candidates = self.candidate_protocols()
        assert candidates, "members without a common protocol cannot be in one group"
        votes: dict[str, int] = {}
        for member in self.members.values():
            choice = next(name for name in member.protocol_names() if name in candidates)
            votes[choice] = votes.get(choice, 0) + 1
        return max(sorted(votes), key=lambda name: votes[name])

    def rebalance_timeout_ms(self) -> int:
        return max((member.rebalance_timeout_ms for member in self.members.values()), default=0)

    def all_members_joined(self) -> bool:
        return not self.pending_members and all(m.join_waiter is not None for m in self.members.values())

    def subscribed_topics(self) -> set[str] | None:
        """Topics of the consumer protocol subscriptions, or None if they cannot be known."""
        if self.protocol_type != "consumer" or self.protocol_name is None:
            return None
        from .assignment import subscription_topics

        topics: set[str] = set()
        for member in self.members.values():
            try:
                topics |= subscription_topics(member.metadata_for(self.protocol_name))
            except (KeyError, ValueError):
                return None
        return topics
