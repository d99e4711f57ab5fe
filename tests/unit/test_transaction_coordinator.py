"""The transaction coordinator's state table, fencing, timeouts and restart, with a manual clock."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from oncelog.coordinator.runtime import Completion, ManualScheduler, StoredBatch
from oncelog.coordinator.transaction.coordinator import TransactionConfig, TransactionCoordinator
from oncelog.coordinator.transaction.state import VALID_PREVIOUS, TransactionState
from oncelog.errors import ErrorCode

S = TransactionState
TIMEOUT_MS = 60_000
FENCED = ErrorCode.producer_fenced


class Storage:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []
        self.pending: list[Callable[[bool], None]] = []
        self.auto = True

    def append(self, topic: str, partition: int, records: list[tuple[bytes, bytes | None]], **_: Any) -> StoredBatch:
        self.records.extend(records)
        return StoredBatch(None, len(self.records) - len(records))

    def when_durable(self, token: Any, callback: Callable[[bool], None]) -> None:
        if self.auto:
            callback(True)
        else:
            self.pending.append(callback)

    def release(self, ok: bool = True) -> None:
        while self.pending:
            self.pending.pop(0)(ok)


class Markers:
    def __init__(self) -> None:
        self.written: list[tuple[int, int, int, bool, frozenset[tuple[str, int]]]] = []

    def write_markers(self, producer_id: int, producer_epoch: int, coordinator_epoch: int, commit: bool,
                      partitions: frozenset[tuple[str, int]]) -> Any:
        self.written.append((producer_id, producer_epoch, coordinator_epoch, commit, partitions))
        return dict.fromkeys(partitions)


def make(storage: Storage | None = None, scheduler: ManualScheduler | None = None
         ) -> tuple[TransactionCoordinator, ManualScheduler, Storage, Markers]:
    scheduler = scheduler or ManualScheduler(1_000_000)
    storage = storage or Storage()
    markers = Markers()
    ids = iter(range(100, 200))
    coordinator = TransactionCoordinator(storage, markers, scheduler, scheduler.clock, lambda: next(ids),
                                         TransactionConfig(max_timeout_ms=900_000), lambda t, p: t != "missing", 3)
    return coordinator, scheduler, storage, markers


def value(completion: Completion[Any]) -> Any:
    assert completion.done
    return completion.value()


def init(coordinator: TransactionCoordinator, producer_id: int = -1, epoch: int = -1) -> dict[str, Any]:
    result: dict[str, Any] = value(coordinator.init_producer_id("tx", TIMEOUT_MS, producer_id, epoch))
    return result


def test_every_state_has_a_row_in_the_table() -> None:
    assert set(VALID_PREVIOUS) == set(TransactionState)


def test_init_commit_abort_cycle() -> None:
    coordinator, _scheduler, _storage, markers = make()
    first = init(coordinator)
    assert first == {"error_code": ErrorCode.none, "producer_id": 100, "producer_epoch": 0}
    add = coordinator.add_partitions("tx", 100, 0, [("t", 0), ("t", 1)], FENCED)
    assert value(add) == {("t", 0): ErrorCode.none, ("t", 1): ErrorCode.none}
    assert coordinator.transactions["tx"].state == S.ONGOING
    assert value(coordinator.end_transaction("tx", 100, 0, True, FENCED)) == ErrorCode.none
    assert markers.written == [(100, 0, 3, True, frozenset({("t", 0), ("t", 1)}))]
    assert coordinator.transactions["tx"].state == S.COMPLETE_COMMIT
    assert value(coordinator.end_transaction("tx", 100, 0, True, FENCED)) == ErrorCode.none, "retry is fine"
    assert value(coordinator.end_transaction("tx", 100, 0, False, FENCED)) == ErrorCode.invalid_txn_state
    value(coordinator.add_partitions("tx", 100, 0, [("t", 0)], FENCED))
    assert value(coordinator.end_transaction("tx", 100, 0, False, FENCED)) == ErrorCode.none
    assert coordinator.transactions["tx"].state == S.COMPLETE_ABORT


def test_request_validation_codes() -> None:
    coordinator, _scheduler, _storage, _markers = make()
    assert value(coordinator.init_producer_id("", TIMEOUT_MS, -1, -1))["error_code"] == ErrorCode.invalid_request
    assert value(coordinator.init_producer_id("tx", 0, -1, -1))["error_code"] == ErrorCode.invalid_transaction_timeout
    assert value(coordinator.init_producer_id("tx", 900_001, -1, -1))["error_code"] == \
        ErrorCode.invalid_transaction_timeout
    assert value(coordinator.init_producer_id("tx", TIMEOUT_MS, 5, -1))["error_code"] == ErrorCode.invalid_request
    init(coordinator)
    assert value(coordinator.add_partitions("tx", 999, 0, [("t", 0)], FENCED)) == {
        ("t", 0): ErrorCode.invalid_producer_id_mapping}
    assert value(coordinator.add_partitions("tx", 100, 7, [("t", 0)], ErrorCode.invalid_producer_epoch)) == {
        ("t", 0): ErrorCode.invalid_producer_epoch}
    assert value(coordinator.add_partitions("tx", 100, 0, [("t", 0), ("missing", 0)], FENCED)) == {
        ("t", 0): ErrorCode.operation_not_attempted, ("missing", 0): ErrorCode.unknown_topic_or_partition}
    assert value(coordinator.end_transaction("tx", 100, 0, True, FENCED)) == ErrorCode.invalid_txn_state
    assert value(coordinator.end_transaction("nope", 100, 0, True, FENCED)) == ErrorCode.invalid_producer_id_mapping


def test_pending_transition_answers_concurrent_transactions() -> None:
    coordinator, _scheduler, storage, _markers = make()
    init(coordinator)
    storage.auto = False
    add = coordinator.add_partitions("tx", 100, 0, [("t", 0)], FENCED)
    assert not add.done
    assert value(coordinator.end_transaction("tx", 100, 0, True, FENCED)) == ErrorCode.concurrent_transactions
    assert value(coordinator.init_producer_id("tx", TIMEOUT_MS, -1, -1))["error_code"] == \
        ErrorCode.concurrent_transactions
    storage.release()
    assert value(add) == {("t", 0): ErrorCode.none}


def test_new_instance_fences_and_aborts_the_open_transaction() -> None:
    coordinator, _scheduler, _storage, markers = make()
    init(coordinator)
    value(coordinator.add_partitions("tx", 100, 0, [("t", 0)], FENCED))
    retry = init(coordinator)
    assert retry["error_code"] == ErrorCode.concurrent_transactions
    assert markers.written == [(100, 1, 3, False, frozenset({("t", 0)}))], "abort written with epoch + 1"
    assert coordinator.transactions["tx"].state == S.COMPLETE_ABORT
    second = init(coordinator)
    assert second == {"error_code": ErrorCode.none, "producer_id": 100, "producer_epoch": 2}
    assert value(coordinator.end_transaction("tx", 100, 0, True, FENCED)) == FENCED
    assert value(coordinator.add_partitions("tx", 100, 1, [("t", 0)], FENCED)) == {("t", 0): FENCED}


def test_kip_360_bump_retry_and_fencing() -> None:
    coordinator, _scheduler, _storage, _markers = make()
    init(coordinator)
    bumped = init(coordinator, 100, 0)
    assert bumped == {"error_code": ErrorCode.none, "producer_id": 100, "producer_epoch": 1}
    assert init(coordinator, 100, 0) == bumped, "a retry quoting the previous epoch gets the current one"
    assert init(coordinator, 100, 7)["error_code"] == FENCED
    assert init(coordinator, 555, 1)["error_code"] == FENCED


def test_exhausted_epoch_rotates_the_producer_id() -> None:
    coordinator, _scheduler, _storage, _markers = make()
    init(coordinator)
    metadata = coordinator.transactions["tx"]
    metadata.current = dataclasses.replace(metadata.current, producer_epoch=32766)
    rotated = init(coordinator)
    assert rotated == {"error_code": ErrorCode.none, "producer_id": 101, "producer_epoch": 0}


def test_timed_out_transaction_is_aborted_with_a_bumped_epoch() -> None:
    coordinator, scheduler, _storage, markers = make()
    init(coordinator)
    value(coordinator.add_partitions("tx", 100, 0, [("t", 0)], FENCED))
    scheduler.advance(TIMEOUT_MS - 1)
    assert coordinator.abort_timed_out() == 0
    scheduler.advance(2)
    assert coordinator.abort_timed_out() == 1
    assert markers.written[-1][1:4] == (1, 3, False)
    assert value(coordinator.end_transaction("tx", 100, 0, True, FENCED)) == FENCED
    assert init(coordinator, 100, 0)["error_code"] == FENCED, "the fence forgets the last epoch (KIP-360)"


def test_verification_for_produce() -> None:
    coordinator, _scheduler, _storage, _markers = make()
    init(coordinator)
    assert coordinator.verify_partition("tx", 100, 0, ("t", 0)) == ErrorCode.transaction_abortable
    value(coordinator.add_partitions("tx", 100, 0, [("t", 0)], FENCED))
    assert coordinator.verify_partition("tx", 100, 0, ("t", 0)) is None
    assert coordinator.verify_partition("tx", 100, 0, ("t", 1)) == ErrorCode.transaction_abortable
    assert coordinator.verify_partition("tx", 100, 9, ("t", 0)) == ErrorCode.producer_fenced
    assert coordinator.verify_partition("other", 100, 0, ("t", 0)) == ErrorCode.invalid_producer_id_mapping


def test_restart_in_prepare_commit_writes_the_markers_and_completes() -> None:
    storage = Storage()
    coordinator, scheduler, _, _markers = make(storage)
    init(coordinator)
    value(coordinator.add_partitions("tx", 100, 0, [("t", 0), ("t", 2)], FENCED))
    coordinator.markers = _Crash()  # the process dies before any marker
    with pytest.raises(_Died):
        coordinator.end_transaction("tx", 100, 0, True, FENCED)
    restarted, _, _, markers = make(Storage(), scheduler)
    for key, record in storage.records:
        restarted.replay(key, record)
    assert restarted.transactions["tx"].state == S.PREPARE_COMMIT
    restarted.finish_loading()
    assert markers.written == [(100, 0, 3, True, frozenset({("t", 0), ("t", 2)}))]
    assert restarted.transactions["tx"].state == S.COMPLETE_COMMIT


def test_expired_transactional_ids_are_tombstoned() -> None:
    coordinator, scheduler, storage, _markers = make()
    init(coordinator)
    scheduler.advance(604_800_000)
    assert coordinator.expire_transactional_ids() == 1
    assert "tx" not in coordinator.transactions and storage.records[-1][1] is None
    assert init(coordinator)["producer_id"] == 101, "a later init starts a fresh producer id"


def test_describe_and_list() -> None:
    coordinator, _scheduler, _storage, _markers = make()
    init(coordinator)
    value(coordinator.add_partitions("tx", 100, 0, [("t", 1)], FENCED))
    described = coordinator.describe("tx")
    assert described["transaction_state"] == "Ongoing" and described["partitions"] == [("t", 1)]
    assert coordinator.describe("nope")["error_code"] == ErrorCode.transactional_id_not_found
    unknown, listed = coordinator.list(["Ongoing", "Bogus"], [])
    assert unknown == ["Bogus"] and [entry["transactional_id"] for entry in listed] == ["tx"]
    assert coordinator.list(["CompleteCommit"], [])[1] == []


class _Died(Exception):
    pass


class _Crash:
    def write_markers(self, *args: Any) -> Any:
        raise _Died()
