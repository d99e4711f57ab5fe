"""Group membership: JoinGroup, SyncGroup, Heartbeat, LeaveGroup and the rebalance they drive.

Theory of operation (Kafka's classic `GroupCoordinator`, `ClassicGroup`): JoinGroup (with the KIP-394
MEMBER_ID_REQUIRED round trip for v4+) puts the group into PreparingRebalance; the join completes when
every known member has rejoined, or when the rebalance timeout drops those that did not; the protocol is
chosen by vote and the first member becomes leader; the leader's SyncGroup carries the assignment, which
is written (GroupMetadata record) before any member is answered. Heartbeats keep sessions alive; a
session that lapses removes its member and rebalances. Static members (KIP-345, `group.instance.id`): a
join with a known instance id fences the old member id (FENCED_INSTANCE_ID).

Simplification of Kafka, on purpose: a static member that rejoins triggers a rebalance instead of
silently getting its old assignment back.

All of it is synchronous: answers that must wait are `Completion`s, timers come from the scheduler.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from oncelog.coordinator.runtime import Completion, Scheduler, resolved
from oncelog.errors import ErrorCode
from oncelog.logs import safe

from .group import Group, GroupState, Member

logger = logging.getLogger(__name__)

NEW_MEMBER_JOIN_TIMEOUT_MS = 5 * 60 * 1000

Response = dict[str, Any]


def _error(code: ErrorCode, **fields: Any) -> Response:
    return {"error_code": code, **fields}


class Membership:
    def __init__(self, groups: dict[str, Group], scheduler: Scheduler, clock: Callable[[], int],
                 session_timeout_ms_min: int, session_timeout_ms_max: int, initial_rebalance_delay_ms: int,
                 store_group: Callable[[Group], Any], when_durable: Callable[[Any, Callable[[bool], None]], None]
                 ) -> None:
        self.groups = groups
        self.scheduler = scheduler
        self.clock = clock
        self.session_timeout_ms_min = session_timeout_ms_min
        self.session_timeout_ms_max = session_timeout_ms_max
        self.initial_rebalance_delay_ms = initial_rebalance_delay_ms
        self._store_group = store_group
        self._when_durable = when_durable
        self.rebalances = 0
        """Rebalances completed (generations started) since the broker started; for metrics."""

    # --- JoinGroup -------------------------------------------------------------------------------------

    def join(self, group_id: str, member_id: str, group_instance_id: str | None, client_id: str,
             client_host: str, session_timeout_ms: int, rebalance_timeout_ms: int, protocol_type: str,
             protocols: list[tuple[str, bytes]], require_known_member_id: bool) -> Completion[Response]:
        if not group_id:
            return resolved(_error(ErrorCode.invalid_group_id, member_id=member_id))
        if not self.session_timeout_ms_min <= session_timeout_ms <= self.session_timeout_ms_max:
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
                return self._rejoin_static_member(group, group.members[old_member_id], new_member_id, client_id,
                                                  *rest)
            return self._add_member_and_rebalance(group, new_member_id, group_instance_id, client_id, *rest)
        if require_known_member_id:
            # KIP-394: hand out the id first; the member joins with it in its next request.
            group.pending_members.add(new_member_id)
            session_timeout_ms = rest[1]
            self.scheduler.call_later(session_timeout_ms, lambda: self._pending_expired(group, new_member_id))
            return resolved(_error(ErrorCode.member_id_required, member_id=new_member_id))
        return self._add_member_and_rebalance(group, new_member_id, group_instance_id, client_id, *rest)

    def _join_known_member(self, group: Group, member_id: str, group_instance_id: str | None, client_id: str,
                           client_host: str, session_timeout_ms: int, rebalance_timeout_ms: int,
                           protocol_type: str, protocols: list[tuple[str, bytes]]) -> Completion[Response]:
        member = group.members.get(member_id)
        fenced = self.check_member(group, member_id, group_instance_id)
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
        self.touch(group, member, NEW_MEMBER_JOIN_TIMEOUT_MS)
        if group.is_(GroupState.PREPARING_REBALANCE):
            self._maybe_complete_join(group)
        else:
            self._prepare_rebalance(group, f"new member {member_id} joined")
        return completion

    def _pending_expired(self, group: Group, member_id: str) -> None:
        """A member id handed out (KIP-394) was never used: forget it, and let a rebalance that waited for
        it complete now rather than at its timeout (Kafka's `removePendingMemberAndUpdateGroup`)."""
        if member_id in group.pending_members:
            group.pending_members.discard(member_id)
            self._maybe_complete_join(group)

    def _rejoin_static_member(self, group: Group, old: Member, new_member_id: str, client_id: str,
                              client_host: str, session_timeout_ms: int, rebalance_timeout_ms: int,
                              protocol_type: str, protocols: list[tuple[str, bytes]]) -> Completion[Response]:
        """KIP-345, Kafka's `updateStaticMemberAndRebalance`: a restarted static member takes its old place —
        its assignment, its leadership — under a new member id; the old id is fenced. A Stable group whose
        protocol does not change stays Stable: the member's SyncGroup gets its old assignment back, with no
        rebalance. Mid-rebalance the group rebalances, as Kafka does."""
        assert old.group_instance_id is not None
        current_leader = group.leader_id
        member = self._replace_static_member(group, old, Member(
            new_member_id, old.group_instance_id, client_id, client_host, rebalance_timeout_ms, session_timeout_ms,
            protocol_type, protocols, assignment=old.assignment))
        completion: Completion[Response] = Completion()
        if group.is_(GroupState.STABLE) and group.protocol_name == group.select_protocol():
            generation = group.generation_id

            def stored(ok: bool) -> None:
                if not ok:  # put the old member back; this one may try again
                    if group.members.get(new_member_id) is member:
                        self._replace_static_member(group, member, old)
                    completion.resolve(_error(ErrorCode.coordinator_not_available, member_id=""))
                    return
                # The old leader id is answered so the member does not take itself for the leader and
                # assign again: a Stable group would not hand that assignment out (Kafka does the same).
                completion.resolve({"error_code": ErrorCode.none, "generation_id": generation,
                                    "protocol_type": group.protocol_type, "protocol_name": group.protocol_name,
                                    "leader": current_leader or "", "member_id": new_member_id, "members": []})

            self._when_durable(self._store_group(group), stored)
            return completion
        self._await_join(member, completion)
        if group.is_(GroupState.PREPARING_REBALANCE):
            self._maybe_complete_join(group)
        else:
            self._prepare_rebalance(group, f"static member {old.group_instance_id} rejoined")
        return completion

    def _replace_static_member(self, group: Group, old: Member, new: Member) -> Member:
        """`new` takes `old`'s place (and leadership); `old`'s waiting requests get FENCED_INSTANCE_ID."""
        group.members.pop(old.member_id, None)
        if old.session_timer is not None:
            old.session_timer.cancel()
        if old.join_waiter is not None and not old.join_waiter.done:
            old.join_waiter.resolve(_error(ErrorCode.fenced_instance_id, member_id=old.member_id))
        self._resolve_sync(old, _error(ErrorCode.fenced_instance_id))
        group.members[new.member_id] = new
        assert new.group_instance_id is not None
        group.static_members[new.group_instance_id] = new.member_id
        if group.leader_id == old.member_id:
            group.leader_id = new.member_id
        self.touch(group, new)
        return new

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
        delay = self.initial_rebalance_delay_ms
        group.initial_join_delayed = group.is_(GroupState.EMPTY) and delay > 0
        if group.initial_join_delayed:
            group.new_member_added = False
            self._schedule_initial_join(group, delay, group.rebalance_timeout_ms() - delay)
        else:
            group.join_timer = self.scheduler.call_later(group.rebalance_timeout_ms(),
                                                         lambda: self._on_join_timeout(group))
        if not group.is_(GroupState.PREPARING_REBALANCE):
            group.transition(GroupState.PREPARING_REBALANCE, self.clock())
        logger.info("group=%s preparing rebalance generation=%d: %s", safe(group.group_id), group.generation_id,
                    safe(reason))
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
        self.rebalances += 1
        if not group.members:
            group.protocol_name = None
            group.leader_id = None
            group.transition(GroupState.EMPTY, now)
            self._store_group(group)
            logger.info("group=%s is empty at generation=%d", safe(group.group_id), group.generation_id)
            return
        group.protocol_name = group.select_protocol()
        if group.leader_id not in group.members:
            group.leader_id = next(iter(group.members))
        group.transition(GroupState.COMPLETING_REBALANCE, now)
        logger.info("group=%s generation=%d protocol=%s members=%d leader=%s", safe(group.group_id),
                    group.generation_id, safe(group.protocol_name), len(group.members), safe(group.leader_id))
        for member in group.members.values():
            member.is_new = False
            waiter, member.join_waiter = member.join_waiter, None
            if waiter is not None:
                waiter.resolve(self._join_response(group, member))
            self.touch(group, member)

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

    def check_member(self, group: Group, member_id: str, group_instance_id: str | None) -> ErrorCode | None:
        """FENCED_INSTANCE_ID / UNKNOWN_MEMBER_ID as Kafka's `validateMember`, else None."""
        if group_instance_id is not None:
            known = group.static_members.get(group_instance_id)
            if known is not None and known != member_id:
                return ErrorCode.fenced_instance_id
        if member_id not in group.members:
            return ErrorCode.unknown_member_id
        return None

    def touch(self, group: Group, member: Member, timeout_ms: int | None = None) -> None:
        if member.session_timer is not None:
            member.session_timer.cancel()

        def expire() -> None:
            if group.members.get(member.member_id) is not member:
                return
            waiting = (member.join_waiter is not None and not member.join_waiter.done) or (
                member.sync_waiter is not None and not member.sync_waiter.done)
            if waiting and not member.is_new:
                self.touch(group, member)  # a member waiting on us is alive
                return
            logger.info("group=%s member=%s session expired", safe(group.group_id), safe(member.member_id))
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
        problem = self.check_member(group, member_id, group_instance_id)
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
        self.touch(group, member)
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

        self._when_durable(token, stored)

    def _sync_response(self, group: Group, member: Member) -> Response:
        return {"error_code": ErrorCode.none, "protocol_type": group.protocol_type,
                "protocol_name": group.protocol_name, "assignment": member.assignment}

    def heartbeat(self, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None) -> Response:
        group = self.groups.get(group_id)
        if group is None:
            return _error(ErrorCode.unknown_member_id)
        if group.is_(GroupState.DEAD):
            return _error(ErrorCode.coordinator_not_available)
        problem = self.check_member(group, member_id, group_instance_id)
        if problem is not None:
            return _error(problem)
        if group.is_(GroupState.EMPTY):
            return _error(ErrorCode.unknown_member_id)
        if generation_id != group.generation_id:
            return _error(ErrorCode.illegal_generation)
        self.touch(group, group.members[member_id])
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
            problem = self.check_member(group, member_id, instance_id)
            if problem is None:
                self._remove_member(group, group.members[member_id], ErrorCode.unknown_member_id)
                logger.info("group=%s member=%s left", safe(group_id), safe(member_id))
            results.append({"member_id": member_id, "group_instance_id": instance_id,
                            "error_code": problem or ErrorCode.none})
        if any(r["error_code"] == ErrorCode.none for r in results):
            self._after_member_removed(group, "member left")
        return _error(ErrorCode.none, members=results)
