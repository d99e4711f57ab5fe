"""The classic group coordinator walked with a manual clock and in-memory storage: no sockets, no sleeps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from oncelog.coordinator.group.coordinator import GroupConfig, GroupCoordinator, OffsetCommit
from oncelog.coordinator.group.group import VALID_PREVIOUS, GroupState
from oncelog.coordinator.group.records import partition_for
from oncelog.coordinator.runtime import Completion, ManualScheduler, StoredBatch
from oncelog.errors import ErrorCode

SESSION_MS = 10_000
REBALANCE_MS = 30_000


class MemoryStorage:
    """Appends to lists; durability callbacks run when the test says so (or at once)."""

    def __init__(self) -> None:
        self.partitions: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] = {}
        self.pending: list[Callable[[bool], None]] = []
        self.auto_durable = True

    def append(self, topic: str, partition: int, records: list[tuple[bytes, bytes | None]], **_: Any) -> StoredBatch:
        stored = self.partitions.setdefault((topic, partition), [])
        base_offset = len(stored)
        stored.extend(records)
        return StoredBatch((topic, partition), base_offset)

    def when_durable(self, token: Any, callback: Callable[[bool], None]) -> None:
        if self.auto_durable:
            callback(True)
        else:
            self.pending.append(callback)

    def complete(self, ok: bool = True) -> None:
        pending, self.pending = self.pending, []
        for callback in pending:
            callback(ok)


def make(delay_ms: int = 0) -> tuple[GroupCoordinator, ManualScheduler, MemoryStorage]:
    scheduler = ManualScheduler(1_000_000)
    storage = MemoryStorage()
    coordinator = GroupCoordinator(storage, scheduler, scheduler.clock,
                                   GroupConfig(initial_rebalance_delay_ms=delay_ms),
                                   lambda topic, partition: topic == "t" and 0 <= partition < 4)
    return coordinator, scheduler, storage


def join(coordinator: GroupCoordinator, member_id: str = "", protocols: list[tuple[str, bytes]] | None = None,
         instance: str | None = None, v4: bool = True, session_ms: int = SESSION_MS) -> Completion[dict[str, Any]]:
    return coordinator.join("g", member_id, instance, "client", "/127.0.0.1", session_ms, REBALANCE_MS,
                            "consumer", protocols or [("range", b"m")], require_known_member_id=v4)


def join_new(coordinator: GroupCoordinator, **kwargs: Any) -> Completion[dict[str, Any]]:
    """The KIP-394 round trip: MEMBER_ID_REQUIRED, then join with the id."""
    first = join(coordinator, **kwargs)
    assert first.done and first.value()["error_code"] == ErrorCode.member_id_required
    return join(coordinator, member_id=first.value()["member_id"], **kwargs)


def state(coordinator: GroupCoordinator) -> GroupState:
    return coordinator.groups["g"].state


def test_transition_table_has_every_state_and_rejects_impossible_moves() -> None:
    assert set(VALID_PREVIOUS) == set(GroupState)
    coordinator, _scheduler, _storage = make()
    join_new(coordinator)
    group = coordinator.groups["g"]
    assert group.state == GroupState.COMPLETING_REBALANCE
    with pytest.raises(AssertionError):
        group.transition(GroupState.EMPTY, 0)


def test_single_member_full_cycle() -> None:
    coordinator, _scheduler, _storage = make()
    joined = join_new(coordinator)
    response = joined.value()
    assert response["error_code"] == ErrorCode.none and response["generation_id"] == 1
    assert response["leader"] == response["member_id"] and len(response["members"]) == 1
    assert response["protocol_name"] == "range"
    member_id = response["member_id"]
    assert state(coordinator) == GroupState.COMPLETING_REBALANCE
    assert coordinator.heartbeat("g", 1, member_id, None)["error_code"] == ErrorCode.none
    synced = coordinator.sync("g", 1, member_id, None, "consumer", "range", {member_id: b"assignment"})
    assert synced.value() == {"error_code": ErrorCode.none, "protocol_type": "consumer", "protocol_name": "range",
                              "assignment": b"assignment"}
    assert state(coordinator) == GroupState.STABLE
    left = coordinator.leave("g", [(member_id, None)])
    assert left["members"][0]["error_code"] == ErrorCode.none
    assert state(coordinator) == GroupState.EMPTY and coordinator.groups["g"].generation_id == 2


def test_join_without_id_before_v4_gets_an_id_at_once() -> None:
    coordinator, _scheduler, _storage = make()
    joined = join(coordinator, v4=False)
    assert joined.value()["error_code"] == ErrorCode.none and joined.value()["member_id"]


def test_second_member_triggers_rebalance_and_followers_wait_for_the_leader() -> None:
    coordinator, _scheduler, storage = make()
    first = join_new(coordinator).value()
    leader = first["member_id"]
    coordinator.sync("g", 1, leader, None, None, None, {leader: b"a"})
    second = join_new(coordinator)
    assert not second.done and state(coordinator) == GroupState.PREPARING_REBALANCE
    assert coordinator.heartbeat("g", 1, leader, None)["error_code"] == ErrorCode.rebalance_in_progress
    rejoin = join(coordinator, member_id=leader)
    assert second.done and rejoin.done
    assert rejoin.value()["generation_id"] == 2 and len(rejoin.value()["members"]) == 2
    follower = second.value()["member_id"]
    assert second.value()["members"] == [] and second.value()["leader"] == leader
    storage.auto_durable = False
    follower_sync = coordinator.sync("g", 2, follower, None, None, None, {})
    assert not follower_sync.done
    leader_sync = coordinator.sync("g", 2, leader, None, None, None, {leader: b"L", follower: b"F"})
    assert not leader_sync.done, "answered only once the assignment is durable"
    storage.complete()
    assert follower_sync.value()["assignment"] == b"F" and leader_sync.value()["assignment"] == b"L"
    assert state(coordinator) == GroupState.STABLE


def test_session_timeout_removes_a_silent_member() -> None:
    coordinator, scheduler, _storage = make()
    a = join_new(coordinator).value()["member_id"]
    coordinator.sync("g", 1, a, None, None, None, {a: b""})
    b_join = join_new(coordinator)
    join(coordinator, member_id=a)
    b = b_join.value()["member_id"]
    coordinator.sync("g", 2, a, None, None, None, {a: b"", b: b""})
    coordinator.sync("g", 2, b, None, None, None, {})
    for _ in range(5):  # a heartbeats, b stays silent
        scheduler.advance(SESSION_MS // 3)
        coordinator.heartbeat("g", 2, a, None)
    assert b not in coordinator.groups["g"].members
    assert coordinator.heartbeat("g", 2, a, None)["error_code"] == ErrorCode.rebalance_in_progress
    assert join(coordinator, member_id=a).value()["generation_id"] == 3


def test_rebalance_timeout_drops_members_that_do_not_rejoin() -> None:
    coordinator, scheduler, _storage = make()
    a = join_new(coordinator).value()["member_id"]
    coordinator.sync("g", 1, a, None, None, None, {a: b""})
    late = join_new(coordinator)
    assert not late.done
    scheduler.advance(REBALANCE_MS)
    assert late.value()["generation_id"] == 2 and late.value()["members"]  # the new member is now the leader
    assert a not in coordinator.groups["g"].members


def test_generation_and_member_fencing_errors() -> None:
    coordinator, _scheduler, _storage = make()
    a = join_new(coordinator).value()["member_id"]
    assert coordinator.heartbeat("g", 7, a, None)["error_code"] == ErrorCode.illegal_generation
    assert coordinator.heartbeat("g", 1, "nobody", None)["error_code"] == ErrorCode.unknown_member_id
    assert coordinator.heartbeat("other", 1, a, None)["error_code"] == ErrorCode.unknown_member_id
    assert coordinator.sync("g", 9, a, None, None, None, {}).value()["error_code"] == ErrorCode.illegal_generation
    mismatch = coordinator.sync("g", 1, a, None, "connect", None, {}).value()
    assert mismatch["error_code"] == ErrorCode.inconsistent_group_protocol


def test_invalid_join_requests() -> None:
    coordinator, _scheduler, _storage = make()
    assert join(coordinator, session_ms=10).value()["error_code"] == ErrorCode.invalid_session_timeout
    assert coordinator.join("", "", None, "c", "h", SESSION_MS, REBALANCE_MS, "consumer", [("range", b"")],
                            True).value()["error_code"] == ErrorCode.invalid_group_id
    join_new(coordinator)
    other = join(coordinator, protocols=[("sticky", b"")], v4=False).value()
    assert other["error_code"] == ErrorCode.inconsistent_group_protocol
    assert join(coordinator, member_id="made-up").value()["error_code"] == ErrorCode.unknown_member_id


def test_protocol_selected_by_vote_among_common_protocols() -> None:
    coordinator, _scheduler, _storage = make()
    a = join_new(coordinator, protocols=[("roundrobin", b""), ("range", b"")]).value()["member_id"]
    coordinator.sync("g", 1, a, None, None, None, {a: b""})
    b = join_new(coordinator, protocols=[("range", b""), ("roundrobin", b"")])
    c = join_new(coordinator, protocols=[("range", b"")])
    join(coordinator, member_id=a, protocols=[("roundrobin", b""), ("range", b"")])
    assert b.value()["protocol_name"] == "range" and c.value()["protocol_name"] == "range"


def test_static_member_with_known_instance_id_fences_the_old_member_id() -> None:
    coordinator, _scheduler, _storage = make()
    old = join(coordinator, instance="instance-1").value()["member_id"]
    coordinator.sync("g", 1, old, "instance-1", None, None, {old: b""})
    new = join(coordinator, instance="instance-1")
    assert coordinator.heartbeat("g", 1, old, "instance-1")["error_code"] == ErrorCode.fenced_instance_id
    assert new.value()["error_code"] == ErrorCode.none and new.value()["member_id"] != old


def test_initial_rebalance_delay_waits_for_more_members() -> None:
    coordinator, scheduler, _storage = make(delay_ms=3000)
    a = join_new(coordinator)
    scheduler.advance(2000)
    b = join_new(coordinator)
    assert not a.done and not b.done
    scheduler.advance(3000)
    assert not a.done, "a new member during the delay extends it"
    scheduler.advance(3000)
    assert a.value()["generation_id"] == 1 and len(a.value()["members"]) + len(b.value()["members"]) == 2


def test_offsets_commit_fetch_and_replay_rebuild_them() -> None:
    coordinator, _scheduler, storage = make()
    simple = coordinator.commit_offsets("g", "", None, -1, [OffsetCommit("t", 0, 42, 0, "meta"),
                                                           OffsetCommit("t", 9, 1, 0, None),
                                                           OffsetCommit("t", 1, 7, 0, "x" * 5000)])
    assert simple.value() == {("t", 0): ErrorCode.none, ("t", 9): ErrorCode.unknown_topic_or_partition,
                              ("t", 1): ErrorCode.offset_metadata_too_large}
    fetched = coordinator.fetch_offsets("g", [("t", 0), ("t", 1)])
    assert fetched[("t", 0)] is not None and fetched[("t", 0)].offset == 42 and fetched[("t", 1)] is None
    records = storage.partitions[("__consumer_offsets", partition_for("g", 50))]
    restarted, _, _ = make()
    for key, value in records:
        restarted.replay(key, value, loading=True)
    again = restarted.fetch_offsets("g", None)[("t", 0)]
    assert again is not None and (again.offset, again.metadata) == (42, "meta")


def test_offset_commit_validation_follows_the_group_state() -> None:
    coordinator, _scheduler, storage = make()
    assert coordinator.commit_offsets("new", "", None, 3, [OffsetCommit("t", 0, 1, 0, None)]).value() == {
        ("t", 0): ErrorCode.illegal_generation}
    a = join_new(coordinator).value()["member_id"]
    in_rebalance = coordinator.commit_offsets("g", a, None, 1, [OffsetCommit("t", 0, 1, 0, None)]).value()
    assert in_rebalance == {("t", 0): ErrorCode.rebalance_in_progress}
    coordinator.sync("g", 1, a, None, None, None, {a: b""})
    assert coordinator.commit_offsets("g", "", None, -1, [OffsetCommit("t", 0, 1, 0, None)]).value() == {
        ("t", 0): ErrorCode.unknown_member_id}
    assert coordinator.commit_offsets("g", a, None, 0, [OffsetCommit("t", 0, 1, 0, None)]).value() == {
        ("t", 0): ErrorCode.illegal_generation}
    storage.auto_durable = False
    pending = coordinator.commit_offsets("g", a, None, 1, [OffsetCommit("t", 0, 5, 0, None)])
    assert not pending.done, "a commit is answered once durable"
    storage.complete()
    assert pending.value() == {("t", 0): ErrorCode.none}


def test_group_metadata_is_restored_after_a_restart() -> None:
    coordinator, _scheduler, storage = make()
    a = join_new(coordinator).value()["member_id"]
    coordinator.sync("g", 1, a, None, None, None, {a: b"mine"})
    restarted, scheduler, _ = make()
    for key, value in storage.partitions[("__consumer_offsets", partition_for("g", 50))]:
        restarted.replay(key, value, loading=True)
    restarted.finish_loading()
    group = restarted.groups["g"]
    assert group.state == GroupState.STABLE and group.generation_id == 1
    assert restarted.heartbeat("g", 1, a, None)["error_code"] == ErrorCode.none
    assert restarted.sync("g", 1, a, None, None, None, {}).value()["assignment"] == b"mine"
    scheduler.advance(SESSION_MS + 1)
    assert restarted.groups["g"].state == GroupState.EMPTY, "a restored member that never returns expires"


def test_delete_groups_and_offsets() -> None:
    coordinator, _scheduler, _storage = make()
    coordinator.commit_offsets("simple", "", None, -1, [OffsetCommit("t", 0, 3, 0, None)])
    a = join_new(coordinator).value()["member_id"]
    coordinator.sync("g", 1, a, None, None, None, {a: b""})
    result = coordinator.delete_groups(["simple", "g", "missing"]).value()
    assert result == {"simple": ErrorCode.none, "g": ErrorCode.non_empty_group,
                      "missing": ErrorCode.group_id_not_found}
    assert coordinator.fetch_offsets("simple", None) == {}
    assert [g["group_id"] for g in coordinator.list_groups()] == ["g"]
    assert coordinator.describe("missing")["group_state"] == "Dead"


def test_offsets_of_empty_groups_expire() -> None:
    coordinator, scheduler, _storage = make()
    coordinator.commit_offsets("simple", "", None, -1, [OffsetCommit("t", 0, 3, 0, None)])
    scheduler.advance(7 * 24 * 3600 * 1000 + 1)
    assert coordinator.expire_offsets() == 1
    assert coordinator.fetch_offsets("simple", None) == {}


def test_an_expired_pending_member_id_lets_the_rebalance_complete_at_once() -> None:
    """A member id handed out by MEMBER_ID_REQUIRED holds a rebalance until it joins or expires; when it
    expired, the join waited for the whole rebalance timeout (Kafka re-checks at once)."""
    coordinator, scheduler, _storage = make()
    a = join_new(coordinator).value()["member_id"]
    coordinator.sync("g", 1, a, None, None, None, {a: b""})
    b_join = join_new(coordinator)  # starts a rebalance
    ghost = join(coordinator)  # a third client gets an id and never comes back
    assert ghost.value()["error_code"] == ErrorCode.member_id_required
    rejoin = join(coordinator, member_id=a, session_ms=SESSION_MS)
    assert not rejoin.done, "the pending member id still holds the rebalance"
    scheduler.advance(SESSION_MS)  # the pending id expires after its session timeout, long before 30 s
    assert rejoin.done and b_join.done and rejoin.value()["generation_id"] == 2
    assert scheduler.now_ms - 1_000_000 < REBALANCE_MS


def test_a_static_member_rejoining_a_stable_group_keeps_its_assignment_without_a_rebalance() -> None:
    coordinator, _scheduler, _storage = make()
    old = join(coordinator, instance="i1").value()["member_id"]
    other_join = join(coordinator, instance="i2")
    assert join(coordinator, member_id=old, instance="i1").value()["generation_id"] == 2
    other = other_join.value()["member_id"]
    coordinator.sync("g", 2, other, "i2", None, None, {})
    coordinator.sync("g", 2, old, "i1", None, None, {old: b"mine", other: b"theirs"})
    assert state(coordinator) == GroupState.STABLE
    restarted = join(coordinator, instance="i1").value()  # the restart: no member id, same instance id
    assert restarted["error_code"] == ErrorCode.none and restarted["generation_id"] == 2
    assert restarted["leader"] == old and restarted["members"] == []  # the old leader id: it must not assign
    assert state(coordinator) == GroupState.STABLE
    new = restarted["member_id"]
    assert coordinator.sync("g", 2, new, "i1", None, None, {}).value()["assignment"] == b"mine"
    assert coordinator.heartbeat("g", 2, other, "i2")["error_code"] == ErrorCode.none  # nobody rebalances
    assert coordinator.heartbeat("g", 2, old, "i1")["error_code"] == ErrorCode.fenced_instance_id
    assert coordinator.groups["g"].leader_id == new
