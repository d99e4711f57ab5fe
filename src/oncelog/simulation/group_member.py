"""A simulated consumer-group member: Kafka's classic protocol, as the Java consumer drives it.

Theory of operation: a member joins (JoinGroup, with the KIP-394 member-id round trip), the leader
assigns partitions round-robin over the members the join returned and hands the plan to SyncGroup;
every member then fetches its partitions' committed offsets (OffsetFetch), consumes them read_committed
from there, heartbeats, and commits its positions (OffsetCommit with its generation). A heartbeat or
commit that says the group moved on (REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID)
sends it back to join, dropping its partitions as the eager protocol does. Members sometimes vanish
without a word (the coordinator must expire their sessions), leave politely (LeaveGroup), or stall past
their session timeout and then commit as zombies (the coordinator must fence them by generation).

Everything that decides ownership and offsets goes to `History`: each assignment with its generation
and when it arrived, each commit with its generation, when it was sent and how it ended, each
OffsetFetch with when it was sent and what it said. `history.check_group` judges them.

One rule differs from a real consumer, on purpose: after a commit that got no answer the member joins
again as a new member. Its lost request may still arrive later; a real consumer that kept its member id
could see that stale commit land after a newer one (legal in Kafka, and not the broker's fault), and the
simulation would report a lost commit that was only a late one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from oncelog.errors import ErrorCode

from .clients import TOPIC, Workload, _code, _fetch_call, visible_records
from .history import Assignment, GroupCommit
from .network import Call, Disconnected, Program, Sleep

GROUP = "sim-group"
SESSION_TIMEOUT_MS = 3_000
REBALANCE_TIMEOUT_MS = 4_000
HEARTBEAT_INTERVAL_MS = 500
COMMIT_INTERVAL_MS = 700
REJOIN = {ErrorCode.rebalance_in_progress, ErrorCode.illegal_generation, ErrorCode.unknown_member_id,
          ErrorCode.fenced_instance_id}


@dataclass
class Membership:
    """What one member holds between joins."""

    member_id: str = ""
    generation: int = -1
    partitions: list[int] = field(default_factory=list)


Steps = Generator[Call | Sleep, Any, Any]


def _join(w: Workload, me: Membership) -> Steps:
    """JoinGroup until answered; (leader?, member ids) or None to try again."""
    try:
        response = yield Call(11, 7, {
            "group_id": GROUP, "session_timeout": SESSION_TIMEOUT_MS, "rebalance_timeout": REBALANCE_TIMEOUT_MS,
            "member_id": me.member_id, "group_instance_id": None, "protocol_type": "consumer",
            "protocols": [{"name": "sim", "metadata": b""}]}, timeout_ms=REBALANCE_TIMEOUT_MS + 5_000)
    except Disconnected:
        return None
    code = _code(response.error_code)
    if code == ErrorCode.member_id_required:
        me.member_id = str(response.member_id)
        return None
    if code == ErrorCode.unknown_member_id:
        me.member_id = ""
    if code != ErrorCode.none:
        yield Sleep(w.random.randint(20, 200))
        return None
    me.member_id, me.generation = str(response.member_id), int(response.generation_id)
    return str(response.leader) == me.member_id, sorted(str(m.member_id) for m in response.members)


def _sync(w: Workload, name: str, me: Membership, leader: bool, members: list[str]) -> Steps:
    """SyncGroup (the leader brings the round-robin plan); True once the assignment arrived."""
    plan: dict[str, list[int]] = {member: [] for member in members}
    for partition in range(w.partitions) if leader and members else ():
        plan[members[partition % len(members)]].append(partition)
    try:
        response = yield Call(14, 5, {
            "group_id": GROUP, "generation_id": me.generation, "member_id": me.member_id,
            "group_instance_id": None, "protocol_type": "consumer", "protocol_name": "sim",
            "assignments": [{"member_id": member, "assignment": ",".join(map(str, partitions)).encode()}
                            for member, partitions in plan.items()] if leader else []},
            timeout_ms=REBALANCE_TIMEOUT_MS + 5_000)
    except Disconnected:
        return False
    code = _code(response.error_code)
    if code != ErrorCode.none:
        if code == ErrorCode.unknown_member_id:
            me.member_id = ""
        return False
    text = bytes(response.assignment).decode()
    me.partitions = [int(partition) for partition in text.split(",")] if text else []
    w.history.assignments.append(Assignment(name, me.member_id, me.generation, tuple(me.partitions), w.clock()))
    w.note(f"{name}: generation {me.generation} assigns {me.partitions}")
    return True


def _committed(w: Workload, name: str, partitions: list[int]) -> Steps:
    """OffsetFetch of the assigned partitions (require_stable); partition -> offset, or None."""
    sent = w.clock()
    try:
        response = yield Call(9, 7, {"group_id": GROUP, "topics": [{"name": TOPIC, "partition_indexes": partitions}],
                                     "require_stable": True})
    except Disconnected:
        return None
    answers = response.topics[0].partitions if response.topics else ()
    if _code(response.error_code) != ErrorCode.none or any(_code(a.error_code) != ErrorCode.none for a in answers):
        yield Sleep(w.random.randint(20, 100))
        return None
    offsets = {int(a.partition_index): int(a.committed_offset) for a in answers}
    for partition, offset in offsets.items():
        w.history.offset_fetches.append((name, sent, partition, offset))
    return offsets


def _commit(w: Workload, name: str, me: Membership, positions: dict[int, int]) -> Steps:
    """OffsetCommit of `positions`; its error code, or None if it got no answer."""
    commit = GroupCommit(name, me.member_id, me.generation, dict(positions), w.clock())
    w.history.group_commits.append(commit)
    try:
        response = yield Call(8, 8, {
            "group_id": GROUP, "generation_id_or_member_epoch": me.generation, "member_id": me.member_id,
            "group_instance_id": None, "topics": [{"name": TOPIC, "partitions": [
                {"partition_index": partition, "committed_offset": offset, "committed_leader_epoch": -1,
                 "committed_metadata": None} for partition, offset in positions.items()]}]})
    except Disconnected:
        commit.outcome = "unknown"
        return None
    codes = {_code(p.error_code) for t in response.topics for p in t.partitions}
    code = next((c for c in codes if c != ErrorCode.none), ErrorCode.none)
    commit.outcome = "ok" if code == ErrorCode.none else "failed"
    if code == ErrorCode.none:
        commit.answered_ms = w.clock()
        for partition, offset in positions.items():
            w.group_committed[partition] = max(w.group_committed.get(partition, 0), offset)
    return code


def _heartbeat(me: Membership) -> Steps:
    try:
        response = yield Call(12, 4, {"group_id": GROUP, "generation_id": me.generation, "member_id": me.member_id,
                                      "group_instance_id": None})
    except Disconnected:
        return None
    return _code(response.error_code)


def _leave(me: Membership) -> Steps:
    with contextlib.suppress(Disconnected):
        yield Call(13, 5, {"group_id": GROUP, "members": [
            {"member_id": me.member_id, "group_instance_id": None, "reason": "leaving"}]})


def group_member(w: Workload, name: str, vanish: float, pause: float) -> Program:
    """A member until the group is told to stop; with chance `vanish` per fetch round it goes away, with
    chance `pause` it stalls for longer than its session timeout, then commits."""
    w.history.read_committed.add(name)
    w.history.group_members.add(name)
    me = Membership()
    while not w.group_stop:
        joined = yield from _join(w, me)
        if joined is None or not (yield from _sync(w, name, me, *joined)):
            continue
        offsets: dict[int, int] | None = {}
        if me.partitions:
            offsets = yield from _committed(w, name, me.partitions)
        if offsets is None:
            continue
        positions = {partition: max(offset, 0) for partition, offset in offsets.items()}
        committed = dict(positions)
        beat = commit = w.clock()
        while not w.group_stop:
            if not w.stopping and w.random.random() < vanish:
                if w.random.random() < 0.5:
                    yield from _leave(me)
                w.note(f"{name} vanishes")
                return
            if positions:
                yield from _consume(w, name, positions)
            else:
                yield Sleep(w.random.randint(50, 200))
            woke = False
            if not w.stopping and w.random.random() < pause:
                # Processing took longer than the session: the group may have moved on without it, and
                # its next commit is a zombie's, which the coordinator must refuse.
                w.note(f"{name} stalls")
                yield Sleep(w.random.randint(SESSION_TIMEOUT_MS + 1_500, 2 * SESSION_TIMEOUT_MS + 1_000))
                woke = True
            code: ErrorCode | None = ErrorCode.none
            if positions != committed and (woke or w.producers_done or w.clock() - commit >= COMMIT_INTERVAL_MS):
                code, commit = (yield from _commit(w, name, me, positions)), w.clock()
                if code is None:  # see the module header: rejoin as a new member
                    me.member_id = ""
                    break
                if code == ErrorCode.none:
                    committed = dict(positions)
            if code not in REJOIN and w.clock() - beat >= HEARTBEAT_INTERVAL_MS:
                code, beat = (yield from _heartbeat(me)), w.clock()
            if code in REJOIN:
                if code == ErrorCode.unknown_member_id:
                    me.member_id = ""
                break
    yield from _leave(me)


def _consume(w: Workload, name: str, positions: dict[int, int]) -> Steps:
    """One read_committed fetch of the member's partitions from its positions."""
    partitions = sorted(positions)
    try:
        response = yield _fetch_call(w, [positions[p] for p in partitions], True, w.random.choice((0, 50, 200)),
                                     partitions)
    except Disconnected:
        return
    for data in response.responses[0].partitions if response.responses else ():
        partition = int(data.partition_index)
        code = _code(data.error_code)
        if code == ErrorCode.offset_out_of_range:  # nothing is deleted here: the checker flags it
            w.history.group_polls[name].append((partition, positions[partition], "<out of range>"))
            continue
        if code != ErrorCode.none:
            continue
        seen, next_offset = visible_records(data, True)
        w.history.group_polls[name] += [(partition, offset, value) for offset, value in seen
                                        if offset >= positions[partition]]
        if next_offset is not None and next_offset > positions[partition]:
            positions[partition] = next_offset

