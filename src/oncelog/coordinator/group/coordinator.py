"""The classic group coordinator (Kafka's `GroupCoordinator` for `ClassicGroup`s), sans-IO.

Theory of operation: one object owns every group and its committed offsets. Requests are plain method
calls that return a response dict (Kafka field names) or a `Completion` of one when the answer must wait
(JoinGroup until the rebalance completes, SyncGroup until the assignment is durable, offset commits
until their records are fsynced). Membership and rebalancing live in `membership.py`; this module places
groups on `__consumer_offsets` partitions, writes and replays records, and serves offsets and the admin
APIs. Committed offsets change only by replaying records (`offsets.py`), so startup recovery and
normal operation share one path, and only once the records are durable (validate, then apply): a
commit whose write or fsync failed answers an error and leaves every offset where it was, as Kafka's
coordinator runtime reverts its in-memory state to the last committed offset when a write fails.
Group metadata records are the durable copy of the in-memory membership, replayed only while loading
(a restored group is Stable with its members, who must heartbeat within their session timeout, as in
Kafka).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from oncelog.coordinator.runtime import Completion, CoordinatorStorage, Scheduler, resolved
from oncelog.errors import ErrorCode
from oncelog.logs import safe

from .group import Group, GroupState, Member
from .membership import Membership
from .offsets import OffsetStore
from .records import (
    GroupKey,
    GroupValue,
    MemberValue,
    OffsetKey,
    OffsetValue,
    group_key,
    group_value,
    offset_key,
    offset_value,
    parse_group_value,
    parse_key,
    partition_for,
)

logger = logging.getLogger(__name__)

OFFSETS_TOPIC = "__consumer_offsets"

Response = dict[str, Any]


@dataclass(frozen=True, slots=True)
class GroupConfig:
    session_timeout_ms_min: int = 6000  # group.min.session.timeout.ms
    session_timeout_ms_max: int = 1_800_000  # group.max.session.timeout.ms
    initial_rebalance_delay_ms: int = 3000  # group.initial.rebalance.delay.ms
    offsets_topic_partitions: int = 50  # offsets.topic.num.partitions
    offsets_retention_ms: int = 7 * 24 * 3600 * 1000  # offsets.retention.minutes
    offset_metadata_bytes_max: int = 4096  # offset.metadata.max.bytes


@dataclass(frozen=True, slots=True)
class OffsetCommit:
    topic: str
    partition: int
    offset: int
    leader_epoch: int
    metadata: str | None


def _error(code: ErrorCode, **fields: Any) -> Response:
    return {"error_code": code, **fields}


def _durable_errors(errors: dict[tuple[str, int], ErrorCode], ok: bool) -> dict[tuple[str, int], ErrorCode]:
    """Per-partition answers once the write finished: a failed fsync turns NONE into a retriable error."""
    if ok:
        return errors
    return {tp: (ErrorCode.coordinator_not_available if code == ErrorCode.none else code)
            for tp, code in errors.items()}


class GroupCoordinator:
    def __init__(self, storage: CoordinatorStorage, scheduler: Scheduler, clock: Callable[[], int],
                 config: GroupConfig, partition_exists: Callable[[str, int], bool]) -> None:
        self.storage = storage
        self.scheduler = scheduler
        self.clock = clock
        self.config = config
        self.partition_exists = partition_exists
        self.groups: dict[str, Group] = {}
        self.offsets = OffsetStore()
        self.membership = Membership(
            self.groups, scheduler, clock, config.session_timeout_ms_min, config.session_timeout_ms_max,
            config.initial_rebalance_delay_ms, self._store_group, storage.when_durable)
        self.join = self.membership.join
        self.sync = self.membership.sync
        self.heartbeat = self.membership.heartbeat
        self.leave = self.membership.leave

    # --- placement and records -----------------------------------------------------------------------

    def partition_of(self, group_id: str) -> int:
        return partition_for(group_id, self.config.offsets_topic_partitions)

    def _write(self, group_id: str, records: list[tuple[bytes, bytes | None]], then: Callable[[bool], None], *,
               producer_id: int = -1, producer_epoch: int = -1) -> None:
        """Append records for `group_id`'s partition; once they are durable, replay them (a transactional
        batch's as pending offsets of `producer_id`), then call `then(ok)`. A failed write replays nothing."""
        transactional = producer_id >= 0
        stored = self.storage.append(OFFSETS_TOPIC, self.partition_of(group_id), records, producer_id=producer_id,
                                     producer_epoch=producer_epoch, transactional=transactional)

        def durable(ok: bool) -> None:
            if ok:
                for index, (key, value) in enumerate(records):
                    if transactional:
                        self.replay_transactional(producer_id, key, value, stored.base_offset + index)
                    else:
                        self.replay(key, value, loading=False, record_offset=stored.base_offset + index)
            then(ok)

        self.storage.when_durable(stored.token, durable)

    def replay(self, key: bytes, value: bytes | None, *, loading: bool, record_offset: int = -1) -> None:
        """Apply one `__consumer_offsets` record. Offsets always; group metadata only while loading
        (afterwards the in-memory group is the source and the record its durable copy)."""
        parsed = parse_key(key)
        if isinstance(parsed, OffsetKey):
            self.offsets.replay_offset(parsed, value, record_offset)
        elif loading:
            self._load_group(parsed, value)

    def replay_transactional(self, producer_id: int, key: bytes, value: bytes | None, record_offset: int) -> None:
        """A record of a transactional batch: pending until its producer's marker lands."""
        parsed = parse_key(key)
        if isinstance(parsed, OffsetKey):
            self.offsets.replay_transactional(producer_id, parsed, value, record_offset)

    def complete_transaction(self, producer_id: int, commit: bool, offsets_partition: int) -> None:
        """A COMMIT/ABORT marker for `producer_id` was written to `__consumer_offsets-{offsets_partition}`."""
        groups = [g for g in self.offsets.pending_groups(producer_id) if self.partition_of(g) == offsets_partition]
        self.offsets.complete_transaction(producer_id, commit, groups)

    def commit_transactional_offsets(self, group_id: str, producer_id: int, producer_epoch: int, member_id: str,
                                     group_instance_id: str | None, generation_id: int,
                                     commits: list[OffsetCommit]) -> Completion[dict[tuple[str, int], ErrorCode]]:
        """TxnOffsetCommit: validate as Kafka's KIP-447 rules (no REBALANCE_IN_PROGRESS), write the offsets
        in a transactional batch of the producer; they stay pending until the COMMIT marker."""
        _group, problem = self._group_for_commit(group_id, member_id, group_instance_id, generation_id, True)
        if problem is not None:
            return resolved({(c.topic, c.partition): problem for c in commits})
        errors, records = self._offset_records(group_id, commits)
        if not records:
            return resolved(errors)
        completion: Completion[dict[tuple[str, int], ErrorCode]] = Completion()
        self._write(group_id, records, lambda ok: completion.resolve(_durable_errors(errors, ok)),
                    producer_id=producer_id, producer_epoch=producer_epoch)
        return completion

    def has_pending_offsets(self, group_id: str, topic: str, partition: int) -> bool:
        return self.offsets.has_pending(group_id, (topic, partition))

    def _load_group(self, key: GroupKey, value: bytes | None) -> None:
        if value is None:
            self.groups.pop(key.group_id, None)
            return
        stored = parse_group_value(value)
        group = Group(key.group_id, generation_id=stored.generation_id, protocol_type=stored.protocol_type or None,
                      protocol_name=stored.protocol_name, leader_id=stored.leader_id,
                      state_timestamp_ms=stored.state_timestamp_ms)
        for member in stored.members:
            protocols = [(stored.protocol_name or "", member.subscription)]
            group.members[member.member_id] = Member(
                member.member_id, member.group_instance_id, member.client_id, member.client_host,
                member.rebalance_timeout_ms, member.session_timeout_ms, stored.protocol_type, protocols,
                member.assignment)
            if member.group_instance_id:
                group.static_members[member.group_instance_id] = member.member_id
        # Loading sets the state directly (Kafka's loadGroup): Stable with members, else Empty.
        group.state = GroupState.STABLE if group.members else GroupState.EMPTY
        self.groups[key.group_id] = group

    def unload_partition(self, partition: int) -> None:
        """Forget the groups and offsets of one `__consumer_offsets` partition: another broker coordinates
        them now (Kafka's `onResignation`): their timers are cancelled and waiting members are told
        NOT_COORDINATOR, so they find the new coordinator."""
        for group_id in [g for g in self.groups if self.partition_of(g) == partition]:
            group = self.groups.pop(group_id)
            if group.join_timer is not None:
                group.join_timer.cancel()
            for member in group.members.values():
                if member.session_timer is not None:
                    member.session_timer.cancel()
                for waiter in (member.join_waiter, member.sync_waiter):
                    if waiter is not None:
                        waiter.resolve(_error(ErrorCode.not_coordinator, member_id=member.member_id))
        self.offsets.forget(lambda group_id: self.partition_of(group_id) == partition)

    def finish_loading(self, partition: int | None = None) -> None:
        """After replaying every partition (or one, `partition`): start session timers of restored members."""
        for group in self.groups.values():
            if partition is not None and self.partition_of(group.group_id) != partition:
                continue
            for member in group.members.values():
                self.membership.touch(group, member)

    def _store_group(self, group: Group) -> Any:
        members = tuple(
            MemberValue(m.member_id, m.group_instance_id, m.client_id, m.client_host, m.rebalance_timeout_ms,
                        m.session_timeout_ms, m.metadata_for(group.protocol_name) if group.protocol_name else b"",
                        m.assignment)
            for m in group.members.values()
        )
        value = GroupValue(group.protocol_type or "", group.generation_id, group.protocol_name, group.leader_id,
                           group.state_timestamp_ms, members)
        # Group metadata records are the durable copy of the in-memory group: nothing to replay.
        stored = self.storage.append(OFFSETS_TOPIC, self.partition_of(group.group_id),
                                     [(group_key(group.group_id), group_value(value))])
        return stored.token

    # --- offsets ------------------------------------------------------------------------------------------

    def _validate_commit(self, group: Group | None, member_id: str, group_instance_id: str | None,
                         generation_id: int, transactional: bool) -> ErrorCode | None:
        """Kafka's `ClassicGroup.validateOffsetCommit` (and the unknown-group rule of the new coordinator)."""
        if group is None:
            return None if generation_id < 0 else ErrorCode.illegal_generation
        if group.is_(GroupState.DEAD):
            return ErrorCode.coordinator_not_available
        if generation_id < 0 and group.is_(GroupState.EMPTY):
            return None
        if generation_id >= 0 or member_id or group_instance_id is not None:
            problem = self.membership.check_member(group, member_id, group_instance_id)
            if problem is not None:
                return problem
            if generation_id != group.generation_id:
                return ErrorCode.illegal_generation
        elif not transactional and not group.is_(GroupState.EMPTY):
            return ErrorCode.unknown_member_id
        if not transactional and group.is_(GroupState.COMPLETING_REBALANCE):
            return ErrorCode.rebalance_in_progress
        return None

    def _group_for_commit(self, group_id: str, member_id: str, group_instance_id: str | None, generation_id: int,
                          transactional: bool) -> tuple[Group, ErrorCode | None]:
        """Validate a (transactional) offset commit; a valid one to an unknown group creates it (Empty)."""
        group = self.groups.get(group_id)
        problem = ErrorCode.invalid_group_id if not group_id else self._validate_commit(
            group, member_id, group_instance_id, generation_id, transactional)
        if problem is None and group is None:
            group = self.groups[group_id] = Group(group_id, state_timestamp_ms=self.clock())
        return group or Group(group_id), problem

    def commit_offsets(self, group_id: str, member_id: str, group_instance_id: str | None, generation_id: int,
                       commits: list[OffsetCommit]) -> Completion[dict[tuple[str, int], ErrorCode]]:
        group, problem = self._group_for_commit(group_id, member_id, group_instance_id, generation_id, False)
        if problem is not None:
            return resolved({(c.topic, c.partition): problem for c in commits})
        if member_id in group.members:
            self.membership.touch(group, group.members[member_id])
        errors, records = self._offset_records(group_id, commits)
        if not records:
            return resolved(errors)
        completion: Completion[dict[tuple[str, int], ErrorCode]] = Completion()
        self._write(group_id, records, lambda ok: completion.resolve(_durable_errors(errors, ok)))
        return completion

    def _offset_records(self, group_id: str, commits: list[OffsetCommit]
                        ) -> tuple[dict[tuple[str, int], ErrorCode], list[tuple[bytes, bytes | None]]]:
        """Per-partition checks of a commit, and the records of the partitions that passed them."""
        errors: dict[tuple[str, int], ErrorCode] = {}
        records: list[tuple[bytes, bytes | None]] = []
        now = self.clock()
        for commit in commits:
            tp = (commit.topic, commit.partition)
            if commit.metadata is not None and len(commit.metadata.encode()) > self.config.offset_metadata_bytes_max:
                errors[tp] = ErrorCode.offset_metadata_too_large
            elif not self.partition_exists(commit.topic, commit.partition):
                errors[tp] = ErrorCode.unknown_topic_or_partition
            else:
                errors[tp] = ErrorCode.none
                value = OffsetValue(commit.offset, commit.leader_epoch, commit.metadata or "", now)
                records.append((offset_key(group_id, commit.topic, commit.partition), offset_value(value)))
        return errors, records

    def fetch_offsets(
        self, group_id: str, partitions: list[tuple[str, int]] | None
    ) -> dict[tuple[str, int], OffsetValue | None]:
        """Committed offsets of the requested partitions (None = every partition the group has)."""
        if partitions is None:
            return dict(self.offsets.of_group(group_id))
        return {(topic, partition): self.offsets.get(group_id, topic, partition) for topic, partition in partitions}

    def delete_offsets(self, group_id: str, partitions: list[tuple[str, int]]) -> Completion[Response]:
        group = self.groups.get(group_id)
        if group is None and not self.offsets.has_offsets(group_id):
            return resolved(_error(ErrorCode.group_id_not_found, partitions={}))
        if group is not None and group.is_(GroupState.DEAD):
            return resolved(_error(ErrorCode.group_id_not_found, partitions={}))
        subscribed = group.subscribed_topics() if group is not None and not group.is_(GroupState.EMPTY) else set()
        errors: dict[tuple[str, int], ErrorCode] = {}
        records: list[tuple[bytes, bytes | None]] = []
        for topic, partition in partitions:
            if subscribed is None or topic in subscribed:
                errors[(topic, partition)] = ErrorCode.group_subscribed_to_topic
                continue
            errors[(topic, partition)] = ErrorCode.none
            if self.offsets.get(group_id, topic, partition) is not None:
                records.append((offset_key(group_id, topic, partition), None))
        if not records:
            return resolved(_error(ErrorCode.none, partitions=errors))
        completion: Completion[Response] = Completion()
        self._write(group_id, records, lambda ok: completion.resolve(
            _error(ErrorCode.none if ok else ErrorCode.coordinator_not_available, partitions=errors)))
        return completion

    # --- DescribeGroups, ListGroups, DeleteGroups -----------------------------------------------------

    def describe(self, group_id: str) -> Response:
        group = self.groups.get(group_id)
        if group is None and self.offsets.has_offsets(group_id):
            group = Group(group_id)
        if group is None:
            return {"error_code": ErrorCode.none, "group_id": group_id, "group_state": GroupState.DEAD.value,
                    "protocol_type": "", "protocol_data": "", "members": []}
        stable = group.is_(GroupState.STABLE)
        members = [
            {"member_id": m.member_id, "group_instance_id": m.group_instance_id, "client_id": m.client_id,
             "client_host": m.client_host,
             "member_metadata": m.metadata_for(group.protocol_name) if stable and group.protocol_name else b"",
             "member_assignment": m.assignment if stable else b""}
            for m in group.members.values()
        ]
        return {"error_code": ErrorCode.none, "group_id": group_id, "group_state": group.state.value,
                "protocol_type": group.protocol_type or "",
                "protocol_data": (group.protocol_name or "") if stable else "", "members": members}

    def list_groups(self, states: Iterable[str] = ()) -> list[Response]:
        wanted = {state.lower() for state in states}
        listed = []
        for group_id in sorted(set(self.groups) | set(self.offsets.groups())):
            group = self.groups.get(group_id) or Group(group_id)
            if group.is_(GroupState.DEAD) or (wanted and group.state.value.lower() not in wanted):
                continue
            listed.append({"group_id": group_id, "protocol_type": group.protocol_type or "",
                           "group_state": group.state.value})
        return listed

    def delete_groups(self, group_ids: list[str]) -> Completion[dict[str, ErrorCode]]:
        errors: dict[str, ErrorCode] = {}
        writes: list[tuple[str, list[tuple[bytes, bytes | None]]]] = []
        for group_id in group_ids:
            group = self.groups.get(group_id)
            if group is None and not self.offsets.has_offsets(group_id):
                errors[group_id] = ErrorCode.group_id_not_found
                continue
            if group is not None and not group.is_(GroupState.EMPTY, GroupState.DEAD):
                errors[group_id] = ErrorCode.non_empty_group
                continue
            records: list[tuple[bytes, bytes | None]] = [
                (offset_key(group_id, topic, partition), None) for topic, partition in self.offsets.of_group(group_id)]
            records.append((group_key(group_id), None))
            writes.append((group_id, records))
            errors[group_id] = ErrorCode.none
        completion: Completion[dict[str, ErrorCode]] = Completion()
        remaining = [len(writes)]
        if not writes:
            completion.resolve(errors)
        for group_id, records in writes:

            def deleted(ok: bool, group_id: str = group_id) -> None:
                group = self.groups.get(group_id)
                if not ok:
                    errors[group_id] = ErrorCode.coordinator_not_available
                elif group is None or group.is_(GroupState.EMPTY, GroupState.DEAD):
                    if group is not None:
                        group.transition(GroupState.DEAD, self.clock())
                    self.groups.pop(group_id, None)
                    logger.info("group=%s deleted", safe(group_id))
                remaining[0] -= 1
                if remaining[0] == 0:
                    completion.resolve(errors)

            self._write(group_id, records, deleted)
        return completion

    # --- expiry -------------------------------------------------------------------------------------------

    def expire_offsets(self) -> int:
        """Drop offsets older than `offsets.retention.minutes` of groups without members (Kafka's
        `cleanupGroupMetadata`); a group left with nothing is removed. Returns offsets expired."""
        now = self.clock()
        expired = 0
        for group_id in self.offsets.groups():
            group = self.groups.get(group_id)
            if group is not None and not group.is_(GroupState.EMPTY):
                continue
            stale = [(t, p) for (t, p), value in self.offsets.of_group(group_id).items()
                     if value.commit_timestamp_ms + self.config.offsets_retention_ms <= now]
            if not stale:
                continue
            records: list[tuple[bytes, bytes | None]] = [(offset_key(group_id, t, p), None) for t, p in stale]
            everything = len(stale) == len(self.offsets.of_group(group_id))
            if everything:
                records.append((group_key(group_id), None))

            def expired_durably(ok: bool, group_id: str = group_id, everything: bool = everything) -> None:
                group = self.groups.get(group_id)
                if ok and everything and (group is None or group.is_(GroupState.EMPTY)):
                    self.groups.pop(group_id, None)

            self._write(group_id, records, expired_durably)
            expired += len(stale)
        return expired
