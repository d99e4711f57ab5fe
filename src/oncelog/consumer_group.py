"""A consumer group member over Kafka's classic protocol, for `oncelog consume --group`.

The same dance Kafka's consumer does, kept small and blocking: FindCoordinator, JoinGroup (the first
answer MEMBER_ID_REQUIRED hands out our member id, KIP-394), SyncGroup — the leader brings the plan,
Kafka's range assignor over the members' subscriptions — then OffsetFetch of the assigned partitions
(require_stable, so offsets of an undecided transaction are waited for), Heartbeats between fetches,
OffsetCommit with the generation, and LeaveGroup at the end. REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION
or UNKNOWN_MEMBER_ID from a heartbeat or commit mean: join again.
"""

from __future__ import annotations

import contextlib
import struct
import sys
import time
from typing import Any

from oncelog.client import ClientError, KafkaClient, connect
from oncelog.coordinator.group.assignment import assigned_partitions, subscription_topics
from oncelog.errors import ErrorCode

SESSION_TIMEOUT_MS = 10_000
REBALANCE_TIMEOUT_MS = 30_000
HEARTBEAT_INTERVAL_S = 3.0
UNSTABLE_WAIT_S = 120.0
"""How long committed offsets held by an undecided transaction are waited for before giving up."""
REJOIN = frozenset({ErrorCode.rebalance_in_progress, ErrorCode.illegal_generation, ErrorCode.unknown_member_id,
                    ErrorCode.fenced_instance_id})
RETRIABLE = frozenset({ErrorCode.coordinator_load_in_progress, ErrorCode.coordinator_not_available,
                       ErrorCode.not_coordinator})


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def encode_subscription(topics: list[str]) -> bytes:
    """ConsumerProtocolSubscription v0: version, [topic], user data (null)."""
    return struct.pack(">hi", 0, len(topics)) + b"".join(_string(t) for t in topics) + struct.pack(">i", -1)


def encode_assignment(partitions: dict[str, list[int]]) -> bytes:
    """ConsumerProtocolAssignment v0: version, [topic, [partition]], user data (null)."""
    body = struct.pack(">hi", 0, len(partitions))
    for topic, indexes in sorted(partitions.items()):
        body += _string(topic) + struct.pack(f">i{len(indexes)}i", len(indexes), *indexes)
    return body + struct.pack(">i", -1)


def range_assignment(members: dict[str, set[str]], partitions: dict[str, int]) -> dict[str, dict[str, list[int]]]:
    """Kafka's RangeAssignor: per topic, consecutive partition ranges to the subscribed members in
    member-id order, the first `count % members` getting one more."""
    plan: dict[str, dict[str, list[int]]] = {member: {} for member in members}
    for topic, count in sorted(partitions.items()):
        subscribed = sorted(member for member, topics in members.items() if topic in topics)
        if not subscribed:
            continue
        share, extra = divmod(count, len(subscribed))
        start = 0
        for index, member in enumerate(subscribed):
            size = share + (1 if index < extra else 0)
            if size:
                plan[member][topic] = list(range(start, start + size))
            start += size
    return plan


def _subscribed(metadata: bytes) -> set[str]:
    """A member's subscription; one we cannot read (another client's bug) subscribes to nothing."""
    try:
        return subscription_topics(metadata)
    except ValueError:
        return set()


def _names(codes: set[ErrorCode]) -> str:
    return ", ".join(sorted(code.name.upper() for code in codes - {ErrorCode.none}))


def _code(value: Any) -> ErrorCode:
    return ErrorCode(int(value))


class GroupMember:
    def __init__(self, args: Any, bootstrap: KafkaClient, group_id: str, topic: str, partition_count: int) -> None:
        self._args = args
        self._bootstrap = bootstrap
        self.group_id = group_id
        self._topic = topic
        self._partition_count = partition_count
        self._coordinator: KafkaClient | None = None
        self.member_id = ""
        self.generation = -1
        self.assignment: list[int] = []
        self._last_heartbeat = 0.0

    def _coordinator_client(self) -> KafkaClient:
        if self._coordinator is None:
            response = self._bootstrap.request(10, 3, {"key": self.group_id, "key_type": 0})
            code = _code(response.error_code)
            if code == ErrorCode.group_authorization_failed:
                raise ClientError(f"not authorized to use group {self.group_id!r}: ask for a Read ACL on it")
            if code != ErrorCode.none:
                raise ClientError(f"no coordinator for group {self.group_id!r}: {code.name.upper()}")
            self._coordinator = connect(self._args, f"{response.host}:{response.port}")
        return self._coordinator

    def join(self, deadline_s: float = 60.0) -> list[int]:
        """Join (or rejoin) the group; the partitions of our topic assigned to us."""
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            client = self._coordinator_client()
            joined = client.request(11, 5, {
                "group_id": self.group_id, "session_timeout": SESSION_TIMEOUT_MS,
                "rebalance_timeout": REBALANCE_TIMEOUT_MS, "member_id": self.member_id, "group_instance_id": None,
                "protocol_type": "consumer",
                "protocols": [{"name": "range", "metadata": encode_subscription([self._topic])}]})
            code = _code(joined.error_code)
            if code == ErrorCode.member_id_required:
                self.member_id = str(joined.member_id)
                continue
            if code in REJOIN:
                self.member_id = "" if code == ErrorCode.unknown_member_id else self.member_id
                continue
            if code in RETRIABLE:
                self._coordinator = None
                time.sleep(0.3)
                continue
            if code != ErrorCode.none:
                raise ClientError(f"cannot join group {self.group_id!r}: {code.name.upper()}")
            self.member_id, self.generation = str(joined.member_id), int(joined.generation_id)
            plan: list[dict[str, Any]] = []
            if str(joined.leader) == self.member_id:
                members = {str(m.member_id): _subscribed(bytes(m.metadata)) for m in joined.members}
                assigned = range_assignment(members, {self._topic: self._partition_count})
                plan = [{"member_id": member, "assignment": encode_assignment(topics)}
                        for member, topics in assigned.items()]
            synced = client.request(14, 3, {"group_id": self.group_id, "generation_id": self.generation,
                                            "member_id": self.member_id, "group_instance_id": None,
                                            "assignments": plan})
            code = _code(synced.error_code)
            if code in REJOIN or code in RETRIABLE:
                continue
            if code != ErrorCode.none:
                raise ClientError(f"cannot sync with group {self.group_id!r}: {code.name.upper()}")
            try:
                self.assignment = sorted(assigned_partitions(bytes(synced.assignment)).get(self._topic, []))
            except ValueError as error:
                raise ClientError(f"group {self.group_id!r}'s leader sent an assignment we cannot read: {error}") \
                    from error
            self._last_heartbeat = time.monotonic()
            return self.assignment
        raise ClientError(f"could not join group {self.group_id!r} within {deadline_s:g} s")

    def _lost_coordinator(self) -> None:
        """The coordinator moved or is loading: ask FindCoordinator again next time."""
        if self._coordinator is not None:
            self._coordinator.close()
            self._coordinator = None

    def committed(self, deadline_s: float = UNSTABLE_WAIT_S) -> dict[int, int]:
        """Committed offsets of our partitions (-1 where none); waits out undecided transactional commits
        (UNSTABLE_OFFSET_COMMIT), saying so, for at most `deadline_s`."""
        deadline = time.monotonic() + deadline_s
        said = False
        while True:
            response = self._coordinator_client().request(9, 7, {
                "group_id": self.group_id, "require_stable": True,
                "topics": [{"name": self._topic, "partition_indexes": self.assignment}]})
            answers = [p for t in response.topics for p in t.partitions]
            codes = {_code(response.error_code)} | {_code(p.error_code) for p in answers}
            if codes <= {ErrorCode.none}:
                return {int(p.partition_index): int(p.committed_offset) for p in answers}
            if not codes <= {ErrorCode.none, ErrorCode.unstable_offset_commit} | RETRIABLE:
                raise ClientError(f"cannot read group {self.group_id!r}'s offsets: {_names(codes)}")
            if codes & RETRIABLE:
                self._lost_coordinator()
            elif not said:
                print(f"oncelog: waiting for an open transaction to commit or abort group {self.group_id!r}'s "
                      "offsets", file=sys.stderr)
                said = True
            if time.monotonic() > deadline:
                raise ClientError(f"group {self.group_id!r}'s offsets stayed unreadable for {deadline_s:g} s: "
                                  f"{_names(codes)}")
            time.sleep(0.2)

    def commit(self, offsets: dict[int, int]) -> bool:
        """Commit; False if the group moved on or its coordinator did (join again, then commit)."""
        if not offsets:
            return True
        response = self._coordinator_client().request(8, 8, {
            "group_id": self.group_id, "generation_id_or_member_epoch": self.generation, "member_id": self.member_id,
            "group_instance_id": None, "topics": [{"name": self._topic, "partitions": [
                {"partition_index": partition, "committed_offset": offset, "committed_leader_epoch": -1,
                 "committed_metadata": None} for partition, offset in sorted(offsets.items())]}]})
        codes = {_code(p.error_code) for t in response.topics for p in t.partitions} - {ErrorCode.none}
        if codes & RETRIABLE:
            self._lost_coordinator()
            return False
        if codes & REJOIN:
            return False
        if codes:
            raise ClientError(f"cannot commit group {self.group_id!r}'s offsets: {_names(codes)}")
        return True

    def heartbeat_due(self) -> bool:
        """Heartbeat if it is time; False if the group is rebalancing or moved (join again)."""
        if time.monotonic() - self._last_heartbeat < HEARTBEAT_INTERVAL_S:
            return True
        response = self._coordinator_client().request(12, 4, {
            "group_id": self.group_id, "generation_id": self.generation, "member_id": self.member_id,
            "group_instance_id": None})
        self._last_heartbeat = time.monotonic()
        code = _code(response.error_code)
        if code in RETRIABLE:
            self._lost_coordinator()
            return False
        if code in REJOIN:
            return False
        if code != ErrorCode.none:
            raise ClientError(f"heartbeat to group {self.group_id!r} failed: {code.name.upper()}")
        return True

    def leave(self) -> None:
        if self.member_id and self._coordinator is not None:
            with contextlib.suppress(ClientError):  # if not, the session expires instead
                self._coordinator.request(13, 5, {"group_id": self.group_id, "members": [
                    {"member_id": self.member_id, "group_instance_id": None, "reason": "oncelog consume ended"}]})
        if self._coordinator is not None:
            self._coordinator.close()
