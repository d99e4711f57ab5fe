"""The classic group coordinator (Kafka's `GroupCoordinator` for `ClassicGroup`s), sans-IO.

Theory of operation: one object owns every group and its committed offsets. Requests are plain method
calls that return a response dict (Kafka field names) or a `Completion` of one when the answer must wait:
JoinGroup until the rebalance completes, SyncGroup until the leader's assignment is durable, offset
commits until their records are fsynced. Timers (session timeouts, rebalance timeouts, the initial
rebalance delay) come from an injected scheduler, records go through an injected storage, so unit tests
walk every state with a manual clock and no sockets.

Membership follows Kafka's classic protocol: JoinGroup (with the KIP-394 MEMBER_ID_REQUIRED round trip
for v4+), protocol selection by vote, the leader's SyncGroup, heartbeats, LeaveGroup (batched), static
membership (KIP-345: `group.instance.id`; a new member with a known instance id fences the old member id).
The group's membership and assignment are written as a GroupMetadata record when a rebalance completes,
and restored on load. Offsets live in `OffsetStore`, changed only by replaying records (see offsets.py).

Simplifications of Kafka, on purpose: a static member that rejoins triggers a rebalance instead of
getting its old assignment back silently; members restored from the log after a restart keep their ids
and must heartbeat within their session timeout, as in Kafka.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from oncelog.coordinator.runtime import Completion, CoordinatorStorage, Scheduler, resolved
from oncelog.errors import ErrorCode

from .group import Group, GroupState, Member
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
NEW_MEMBER_JOIN_TIMEOUT_MS = 5 * 60 * 1000

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

    # --- placement and records -----------------------------------------------------------------------

    def partition_of(self, group_id: str) -> int:
        return partition_for(group_id, self.config.offsets_topic_partitions)

    def _write(self, group_id: str, records: list[tuple[bytes, bytes | None]]) -> Any:
        """Append records for `group_id`'s partition, replay them, return the durability token."""
        token = self.storage.append(OFFSETS_TOPIC, self.partition_of(group_id), records)
        for key, value in records:
            self.replay(key, value, loading=False)
        return token

    def _after_durable(self, token: Any, respond: Callable[[bool], Response]) -> Completion[Response]:
        completion: Completion[Response] = Completion()
        self.storage.when_durable(token, lambda ok: completion.resolve(respond(ok)))
        return completion

    def replay(self, key: bytes, value: bytes | None, *, loading: bool) -> None:
        """Apply one `__consumer_offsets` record. Offsets always; group metadata only while loading
        (afterwards the in-memory group is the source and the record its durable copy)."""
        parsed = parse_key(key)
        if isinstance(parsed, OffsetKey):
            self.offsets.replay_offset(parsed, value)
        elif loading:
            self._load_group(parsed, value)

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

    def finish_loading(self) -> None:
        """After replaying every partition: start session timers of restored members."""
        for group in self.groups.values():
            for member in group.members.values():
                self._schedule_session_expiry(group, member)

    def _store_group(self, group: Group) -> Any:
        members = tuple(
            MemberValue(m.member_id, m.group_instance_id, m.client_id, m.client_host, m.rebalance_timeout_ms,
                        m.session_timeout_ms, m.metadata_for(group.protocol_name) if group.protocol_name else b"",
                        m.assignment)
            for m in group.members.values()
        )
        value = GroupValue(group.protocol_type or "", group.generation_id, group.protocol_name, group.leader_id,
                           group.state_timestamp_ms, members)
        return self._write(group.group_id, [(group_key(group.group_id), group_value(value))])

    # --- JoinGroup -------------------------------------------------------------------------------------

    def join(self, group_id: str, member_id: str, group_instance_id: str | None, client_id: str,
             client_host: str, session_timeout_ms: int, rebalance_timeout_ms: int, protocol_type: str,
             protocols: list[tuple[str, bytes]], require_known_member_id: bool) -> Completion[Response]:
        config = self.config
        if not group_id:
            return resolved(_error(ErrorCode.invalid_group_id, member_id=member_id))
        if not config.session_timeout_ms_min <= session_timeout_ms <= config.session_timeout_ms_max:
            return resolved(_error(ErrorCode.invalid_session_timeout, member_id=member_id))
        group = self.groups.get(group_id)
        if group is None:
            if member_id and group_instance_id is None:
                return resolved(_error(ErrorCode.unknown_member_id, member_id=member_id))
            group = self.groups[group_id] = Group(group_id, state_timestamp_ms=self.clock())
        if group.is_(GroupState.DEAD):
            return resolved(_error(ErrorCode.coordinator_not_available, member_id=member_id))
        if not group.supports(protocol_type, [name for name, _ in protocols]):
            return resolved(_error(ErrorCode.inconsistent_group_protocol, member_id=member_id))
        args = (group_instance_id, client_id, client_host, session_timeout_ms, rebalance_timeout_ms,
                protocol_type, protocols)
        if member_id and member_id in group.pending_members:
            return self._add_member_and_rebalance(group, member_id, *args)
        if not member_id:
            return self._join_unknown_member(group, require_known_member_id, *args)
        return self._join_known_member(group, member_id, *args)

    def _join_unknown_member(self, group: Group, require_known_member_id: bool, group_instance_id: str | None,
                             client_id: str, *rest: Any) -> Completion[Response]:
        new_member_id = f"{group_instance_id or client_id}-{uuid.uuid4()}"
        if group_instance_id is not None:
            old_member_id = group.static_members.get(group_instance_id)
            if old_member_id is not None and old_member_id in group.members:
                self._fence_member(group, group.members[old_member_id])
            return self._add_member_and_rebalance(group, new_member_id, group_instance_id, client_id, *rest)
        if require_known_member_id:
            # KIP-394: hand out the id first; the member joins with it in its next request.
            group.pending_members.add(new_member_id)
            session_timeout_ms = rest[1]
            self.scheduler.call_later(session_timeout_ms, lambda: group.pending_members.discard(new_member_id))
            return resolved(_error(ErrorCode.member_id_required, member_id=new_member_id))
        return self._add_member_and_rebalance(group, new_member_id, group_instance_id, client_id, *rest)

    def _join_known_member(self, group: Group, member_id: str, group_instance_id: str | None, client_id: str,
                           client_host: str, session_timeout_ms: int, rebalance_timeout_ms: int,
                           protocol_type: str, protocols: list[tuple[str, bytes]]) -> Completion[Response]:
        member = group.members.get(member_id)
        fenced = self._check_member(group, member_id, group_instance_id)
        if fenced is not None or member is None:
            return resolved(_error(fenced or ErrorCode.unknown_member_id, member_id=member_id))
        if group.is_(GroupState.EMPTY, GroupState.DEAD):
            return resolved(_error(ErrorCode.unknown_member_id, member_id=member_id))
        changed = member.protocols != protocols
        member.session_timeout_ms, member.rebalance_timeout_ms = session_timeout_ms, rebalance_timeout_ms
        member.protocols = protocols
        member.client_id, member.client_host = client_id, client_host
        completion: Completion[Response] = Completion()
        if group.is_(GroupState.PREPARING_REBALANCE):
            self._await_join(member, completion)
            self._maybe_complete_join(group)
        elif group.is_(GroupState.COMPLETING_REBALANCE) and not changed:
            completion.resolve(self._join_response(group, member))  # a follower re-sending its join
        elif group.is_(GroupState.STABLE) and not changed and member_id != group.leader_id:
            completion.resolve(self._join_response(group, member))
        else:
            self._await_join(member, completion)
            self._prepare_rebalance(group, f"member {member_id} rejoined with new metadata or as leader")
        return completion

    def _add_member_and_rebalance(self, group: Group, member_id: str, group_instance_id: str | None,
                                  client_id: str, client_host: str, session_timeout_ms: int,
                                  rebalance_timeout_ms: int, protocol_type: str,
                                  protocols: list[tuple[str, bytes]]) -> Completion[Response]:
        member = Member(member_id, group_instance_id, client_id, client_host, rebalance_timeout_ms,
                        session_timeout_ms, protocol_type, protocols, is_new=True)
        group.pending_members.discard(member_id)
        group.members[member_id] = member
        if group_instance_id is not None:
            group.static_members[group_instance_id] = member_id
        if group.protocol_type is None:
            group.protocol_type = protocol_type
        group.new_member_added = True
        completion: Completion[Response] = Completion()
        self._await_join(member, completion)
        # A new member that never completes the rebalance is dropped (Kafka's new-member join timeout).
        self._schedule_session_expiry(group, member, NEW_MEMBER_JOIN_TIMEOUT_MS)
        if group.is_(GroupState.PREPARING_REBALANCE):
            self._maybe_complete_join(group)
        else:
            self._prepare_rebalance(group, f"new member {member_id} joined")
        return completion

    def _await_join(self, member: Member, completion: Completion[Response]) -> None:
        if member.join_waiter is not None and not member.join_waiter.done:
            member.join_waiter.resolve(_error(ErrorCode.unknown_member_id, member_id=member.member_id))
        member.join_waiter = completion

    def _prepare_rebalance(self, group: Group, reason: str) -> None:
        if group.is_(GroupState.COMPLETING_REBALANCE):
            for member in group.members.values():
                member.assignment = b""
                self._resolve_sync(member, _error(ErrorCode.rebalance_in_progress))
        if group.join_timer is not None:
            group.join_timer.cancel()
        delay = self.config.initial_rebalance_delay_ms
        group.initial_join_delayed = group.is_(GroupState.EMPTY) and delay > 0
        if group.initial_join_delayed:
            group.new_member_added = False
            self._schedule_initial_join(group, delay, group.rebalance_timeout_ms() - delay)
        else:
            group.join_timer = self.scheduler.call_later(group.rebalance_timeout_ms(),
                                                         lambda: self._on_join_timeout(group))
        if not group.is_(GroupState.PREPARING_REBALANCE):
            group.transition(GroupState.PREPARING_REBALANCE, self.clock())
        logger.info("group=%s preparing rebalance generation=%d: %s", group.group_id, group.generation_id, reason)
        self._maybe_complete_join(group)  # Kafka's delayed join "tries to complete" at once

    def _schedule_initial_join(self, group: Group, delay_ms: int, remaining_ms: int) -> None:
        """Kafka's `InitialDelayedJoin`: wait `delay`, and again while new members keep arriving."""
        def fire() -> None:
            if not group.is_(GroupState.PREPARING_REBALANCE):
                return
            if group.new_member_added and remaining_ms > 0:
                group.new_member_added = False
                self._schedule_initial_join(group, min(delay_ms, remaining_ms), remaining_ms - delay_ms)
            else:
                self._on_join_timeout(group)

        group.join_timer = self.scheduler.call_later(delay_ms, fire)

    def _maybe_complete_join(self, group: Group) -> None:
        if group.is_(GroupState.PREPARING_REBALANCE) and group.all_members_joined():
            if group.initial_join_delayed and group.members:
                return  # the initial delay lets more members arrive before the generation starts
            self._complete_join(group)

    def _on_join_timeout(self, group: Group) -> None:
        if not group.is_(GroupState.PREPARING_REBALANCE):
            return
        for member in list(group.members.values()):
            if member.join_waiter is None:  # did not rejoin within the rebalance timeout
                self._remove_member(group, member, ErrorCode.unknown_member_id)
        self._complete_join(group)

    def _complete_join(self, group: Group) -> None:
        if group.join_timer is not None:
            group.join_timer.cancel()
            group.join_timer = None
        group.initial_join_delayed = False
        group.pending_members.clear()
        now = self.clock()
        group.generation_id += 1
        if not group.members:
            group.protocol_name = None
            group.leader_id = None
            group.transition(GroupState.EMPTY, now)
            self._store_group(group)
            logger.info("group=%s is empty at generation=%d", group.group_id, group.generation_id)
            return
        group.protocol_name = group.select_protocol()
        if group.leader_id not in group.members:
            group.leader_id = next(iter(group.members))
        group.transition(GroupState.COMPLETING_REBALANCE, now)
        logger.info("group=%s generation=%d protocol=%s members=%d leader=%s", group.group_id,
                    group.generation_id, group.protocol_name, len(group.members), group.leader_id)
        for member in group.members.values():
            member.is_new = False
            waiter, member.join_waiter = member.join_waiter, None
            if waiter is not None:
                waiter.resolve(self._join_response(group, member))
            self._schedule_session_expiry(group, member)

    def _join_response(self, group: Group, member: Member) -> Response:
        members = []
        if member.member_id == group.leader_id:
            assert group.protocol_name is not None
            members = [{"member_id": m.member_id, "group_instance_id": m.group_instance_id,
                        "metadata": m.metadata_for(group.protocol_name)} for m in group.members.values()]
        return {"error_code": ErrorCode.none, "generation_id": group.generation_id,
                "protocol_type": group.protocol_type, "protocol_name": group.protocol_name,
                "leader": group.leader_id or "", "member_id": member.member_id, "members": members}

    # --- membership helpers ----------------------------------------------------------------------------

    def _check_member(self, group: Group, member_id: str, group_instance_id: str | None) -> ErrorCode | None:
        """FENCED_INSTANCE_ID / UNKNOWN_MEMBER_ID as Kafka's `validateMember`, else None."""
        if group_instance_id is not None:
            known = group.static_members.get(group_instance_id)
            if known is not None and known != member_id:
                return ErrorCode.fenced_instance_id
        if member_id not in group.members:
            return ErrorCode.unknown_member_id
        return None

    def _schedule_session_expiry(self, group: Group, member: Member, timeout_ms: int | None = None) -> None:
        if member.session_timer is not None:
            member.session_timer.cancel()

        def expire() -> None:
            if group.members.get(member.member_id) is not member:
                return
            waiting = (member.join_waiter is not None and not member.join_waiter.done) or (
                member.sync_waiter is not None and not member.sync_waiter.done)
            if waiting and not member.is_new:
                self._schedule_session_expiry(group, member)  # a member waiting on us is alive
                return
            logger.info("group=%s member=%s session expired", group.group_id, member.member_id)
            self._remove_member(group, member, ErrorCode.unknown_member_id)
            self._after_member_removed(group, "member session expired")

        member.session_timer = self.scheduler.call_later(timeout_ms or member.session_timeout_ms, expire)

    def _remove_member(self, group: Group, member: Member, code: ErrorCode) -> None:
        group.members.pop(member.member_id, None)
        if member.group_instance_id is not None and group.static_members.get(member.group_instance_id) == \
                member.member_id:
            del group.static_members[member.group_instance_id]
        if member.session_timer is not None:
            member.session_timer.cancel()
        if member.join_waiter is not None:
            member.join_waiter.resolve(_error(code, member_id=member.member_id))
        self._resolve_sync(member, _error(code))

    def _fence_member(self, group: Group, member: Member) -> None:
        self._remove_member(group, member, ErrorCode.fenced_instance_id)

    def _after_member_removed(self, group: Group, reason: str) -> None:
        if group.is_(GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._prepare_rebalance(group, reason)
        elif group.is_(GroupState.PREPARING_REBALANCE):
            self._maybe_complete_join(group)
            if group.is_(GroupState.PREPARING_REBALANCE) and not group.members:
                self._complete_join(group)

    def _resolve_sync(self, member: Member, response: Response) -> None:
        waiter, member.sync_waiter = member.sync_waiter, None
        if waiter is not None:
            waiter.resolve(response)

    # --- SyncGroup, Heartbeat, LeaveGroup --------------------------------------------------------------

    def sync(self, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None,
             protocol_type: str | None, protocol_name: str | None,
             assignments: dict[str, bytes]) -> Completion[Response]:
        group = self.groups.get(group_id)
        if group is None:
            return resolved(_error(ErrorCode.unknown_member_id))
        if group.is_(GroupState.DEAD):
            return resolved(_error(ErrorCode.coordinator_not_available))
        problem = self._check_member(group, member_id, group_instance_id)
        if problem is not None:
            return resolved(_error(problem))
        if generation_id != group.generation_id:
            return resolved(_error(ErrorCode.illegal_generation))
        if (protocol_type is not None and protocol_type != group.protocol_type) or (
                protocol_name is not None and protocol_name != group.protocol_name):
            return resolved(_error(ErrorCode.inconsistent_group_protocol))
        member = group.members[member_id]
        if group.is_(GroupState.EMPTY):
            return resolved(_error(ErrorCode.unknown_member_id))
        if group.is_(GroupState.PREPARING_REBALANCE):
            return resolved(_error(ErrorCode.rebalance_in_progress))
        self._schedule_session_expiry(group, member)
        if group.is_(GroupState.STABLE):
            return resolved(self._sync_response(group, member))
        completion: Completion[Response] = Completion()
        self._resolve_sync(member, _error(ErrorCode.rebalance_in_progress))
        member.sync_waiter = completion
        if member_id == group.leader_id:
            self._store_assignment(group, assignments)
        return completion

    def _store_assignment(self, group: Group, assignments: dict[str, bytes]) -> None:
        generation = group.generation_id
        for member in group.members.values():
            member.assignment = assignments.get(member.member_id, b"")
        token = self._store_group(group)

        def stored(ok: bool) -> None:
            if not group.is_(GroupState.COMPLETING_REBALANCE) or group.generation_id != generation:
                return  # a new rebalance began meanwhile; its own sync will answer the members
            if not ok:
                for member in group.members.values():
                    member.assignment = b""
                    self._resolve_sync(member, _error(ErrorCode.coordinator_not_available))
                self._prepare_rebalance(group, "storing the assignment failed")
                return
            group.transition(GroupState.STABLE, self.clock())
            for member in group.members.values():
                self._resolve_sync(member, self._sync_response(group, member))

        self.storage.when_durable(token, stored)

    def _sync_response(self, group: Group, member: Member) -> Response:
        return {"error_code": ErrorCode.none, "protocol_type": group.protocol_type,
                "protocol_name": group.protocol_name, "assignment": member.assignment}

    def heartbeat(self, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None) -> Response:
        group = self.groups.get(group_id)
        if group is None:
            return _error(ErrorCode.unknown_member_id)
        if group.is_(GroupState.DEAD):
            return _error(ErrorCode.coordinator_not_available)
        problem = self._check_member(group, member_id, group_instance_id)
        if problem is not None:
            return _error(problem)
        if group.is_(GroupState.EMPTY):
            return _error(ErrorCode.unknown_member_id)
        if generation_id != group.generation_id:
            return _error(ErrorCode.illegal_generation)
        self._schedule_session_expiry(group, group.members[member_id])
        if group.is_(GroupState.PREPARING_REBALANCE):
            return _error(ErrorCode.rebalance_in_progress)
        return _error(ErrorCode.none)

    def leave(self, group_id: str, members: list[tuple[str, str | None]]) -> Response:
        """LeaveGroup for (member id, group instance id) pairs; v0–2 send one pair."""
        group = self.groups.get(group_id)
        if group is None or group.is_(GroupState.DEAD):
            code = ErrorCode.unknown_member_id if group is None else ErrorCode.coordinator_not_available
            return _error(code, members=[])
        results: list[Response] = []
        for member_id, instance_id in members:
            if not member_id and instance_id is not None:
                member_id = group.static_members.get(instance_id, "")
            if member_id in group.pending_members:
                group.pending_members.discard(member_id)
                results.append({"member_id": member_id, "group_instance_id": instance_id,
                                "error_code": ErrorCode.none})
                continue
            problem = self._check_member(group, member_id, instance_id)
            if problem is None:
                self._remove_member(group, group.members[member_id], ErrorCode.unknown_member_id)
                logger.info("group=%s member=%s left", group_id, member_id)
            results.append({"member_id": member_id, "group_instance_id": instance_id,
                            "error_code": problem or ErrorCode.none})
        if any(r["error_code"] == ErrorCode.none for r in results):
            self._after_member_removed(group, "member left")
        return _error(ErrorCode.none, members=results)

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
            problem = self._check_member(group, member_id, group_instance_id)
            if problem is not None:
                return problem
            if generation_id != group.generation_id:
                return ErrorCode.illegal_generation
        elif not transactional and not group.is_(GroupState.EMPTY):
            return ErrorCode.unknown_member_id
        if not transactional and group.is_(GroupState.COMPLETING_REBALANCE):
            return ErrorCode.rebalance_in_progress
        return None

    def commit_offsets(self, group_id: str, member_id: str, group_instance_id: str | None, generation_id: int,
                       commits: list[OffsetCommit]) -> Completion[dict[tuple[str, int], ErrorCode]]:
        group = self.groups.get(group_id)
        problem = ErrorCode.invalid_group_id if not group_id else self._validate_commit(
            group, member_id, group_instance_id, generation_id, transactional=False)
        if problem is not None:
            return resolved({(c.topic, c.partition): problem for c in commits})
        if group is None:
            group = self.groups[group_id] = Group(group_id, state_timestamp_ms=self.clock())
        if member_id in group.members:
            self._schedule_session_expiry(group, group.members[member_id])
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
        if not records:
            return resolved(errors)
        token = self._write(group_id, records)

        def respond(ok: bool) -> dict[tuple[str, int], ErrorCode]:
            if ok:
                return errors
            return {tp: (ErrorCode.coordinator_not_available if code == ErrorCode.none else code)
                    for tp, code in errors.items()}

        completion: Completion[dict[tuple[str, int], ErrorCode]] = Completion()
        self.storage.when_durable(token, lambda ok: completion.resolve(respond(ok)))
        return completion

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
        token = self._write(group_id, records)
        return self._after_durable(
            token, lambda ok: _error(ErrorCode.none if ok else ErrorCode.coordinator_not_available, partitions=errors))

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
        tokens = []
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
            tokens.append(self._write(group_id, records))
            if group is not None:
                group.transition(GroupState.DEAD, self.clock())
            self.groups.pop(group_id, None)
            errors[group_id] = ErrorCode.none
            logger.info("group=%s deleted", group_id)
        return self._when_all_durable(tokens, errors)

    def _when_all_durable(self, tokens: list[Any], errors: dict[str, ErrorCode]) -> Completion[dict[str, ErrorCode]]:
        completion: Completion[dict[str, ErrorCode]] = Completion()
        remaining = [len(tokens)]
        failed = [False]

        def one(ok: bool) -> None:
            failed[0] |= not ok
            remaining[0] -= 1
            if remaining[0] == 0:
                completion.resolve({g: (ErrorCode.coordinator_not_available if failed[0] and c == ErrorCode.none
                                        else c) for g, c in errors.items()})

        if not tokens:
            completion.resolve(errors)
        for token in tokens:
            self.storage.when_durable(token, one)
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
            if len(stale) == len(self.offsets.of_group(group_id)):
                records.append((group_key(group_id), None))
                self.groups.pop(group_id, None)
            self._write(group_id, records)
            expired += len(stale)
        return expired
