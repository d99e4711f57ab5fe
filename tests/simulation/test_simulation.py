"""The deterministic simulation: seeds pass, replay exactly, and the checks catch planted bugs.

A few hundred seeds run here (`oncelog simulate --seeds 1..5000 -j N` runs thousands). Each planted bug
is a one-line mutation of the broker that must make some early seed fail with the anomaly it causes,
so a simulation that silently checked nothing would fail these tests.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any
from unittest import mock

import pytest

from oncelog.coordinator.group.coordinator import GroupCoordinator
from oncelog.coordinator.group.membership import Membership
from oncelog.coordinator.group.offsets import OffsetStore
from oncelog.log.flush_queue import FlushQueue
from oncelog.log.partition import PartitionLog
from oncelog.log.producer_state import ProducerStateManager
from oncelog.simulation.command import trace_digest
from oncelog.simulation.run import Options, shrink, simulate

SEEDS_PER_TEST = 20
CHUNKS = 12


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_seeds_pass(chunk: int) -> None:
    totals: dict[str, int] = {}
    for seed in range(1 + chunk * SEEDS_PER_TEST, 1 + (chunk + 1) * SEEDS_PER_TEST):
        result = simulate(seed)
        assert result.ok, f"seed {seed}: {result.findings[:5]}; replay: oncelog simulate --seed {seed}"
        for key, value in result.stats.items():
            totals[key] = totals.get(key, 0) + value
    # The faults really happened and the workload really ran.
    for key in ("crashes", "disk faults", "network faults", "sends acknowledged", "transactions committed",
                "transactions aborted", "records polled", "group generations", "group commits acknowledged"):
        assert totals[key] > 0, (key, totals)


def test_every_kind_of_fault_and_client_event_happens_across_the_ci_seeds() -> None:
    totals: dict[str, int] = {}
    for seed in range(1, 41):
        for key, value in simulate(seed).stats.items():
            totals[key] = totals.get(key, 0) + value
    assert totals["producers vanished"] > 0 and totals["sends unknown"] > 0, totals
    assert totals["members vanished"] > 0, totals


def test_a_seed_replays_exactly() -> None:
    first, second = simulate(7), simulate(7)
    assert first.trace == second.trace and first.findings == second.findings and first.stats == second.stats
    assert simulate(8).trace != first.trace


def test_a_seed_replays_exactly_in_another_process_with_another_hash_seed() -> None:
    digests = set()
    for hash_seed in ("1", "2"):
        output = subprocess.run([sys.executable, "-m", "oncelog", "simulate", "--seed", "7"], check=True,
                                capture_output=True, text=True, timeout=60,
                                env={**os.environ, "PYTHONHASHSEED": hash_seed}).stdout
        assert "OK" in output, output
        digests.add(output.rsplit("trace ", 1)[1].strip())
    assert digests == {trace_digest(simulate(7))}


def _everyone_gets_the_leaders_partitions(membership: Membership, group: Any, assignments: dict[str, bytes]) -> None:
    leaders = assignments.get(group.leader_id, b"")
    STORE_ASSIGNMENT(membership, group, {member_id: leaders for member_id in assignments})


def _committed_offsets_one_too_high(store: OffsetStore, group_id: str, topic: str, partition: int) -> Any:
    value = GET_OFFSET(store, group_id, topic, partition)
    return value if value is None else dataclasses.replace(value, offset=value.offset + 1)


STORE_ASSIGNMENT = Membership._store_assignment
GET_OFFSET = OffsetStore.get

PLANTED: dict[str, tuple[Callable[[], AbstractContextManager[Any]], str]] = {
    # Consumers see what a crash can still take back.
    "high watermark is the log end": (
        lambda: mock.patch.object(PartitionLog, "high_watermark", property(lambda log: log.log_end_offset)),
        "invariant"),
    # acks=all answered before the fsync.
    "acknowledged before fsync": (
        lambda: mock.patch.object(FlushQueue, "when_durable", lambda queue, log, offset, callback: callback(True)),
        "lost write"),
    # No producer-state check: a retried batch is appended again.
    "idempotence off": (lambda: mock.patch.object(ProducerStateManager, "check", lambda state, header: None),
                        "duplicate"),
    # read_committed reads past open transactions.
    "last stable offset ignores open transactions": (
        lambda: mock.patch.object(PartitionLog, "last_stable_offset", property(lambda log: log.high_watermark)),
        "aborted read"),
    # Offset commits are not checked against the member's generation: zombies commit.
    "commits not fenced": (
        lambda: mock.patch.object(GroupCoordinator, "_validate_commit", lambda *args, **kwargs: None),
        "wrong committed offset"),
    # SyncGroup hands every member the leader's own partitions.
    "one plan for all": (
        lambda: mock.patch.object(Membership, "_store_assignment", _everyone_gets_the_leaders_partitions),
        "double assignment"),
    # OffsetFetch answers one past what was committed: a new owner skips a record.
    "committed offsets off by one": (
        lambda: mock.patch.object(OffsetStore, "get", _committed_offsets_one_too_high), "poll skip"),
}


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_a_planted_bug_is_found(bug: str) -> None:
    plant, anomaly = PLANTED[bug]
    for seed in range(1, 6):
        with plant():
            result = simulate(seed)
        if any(kind == anomaly for kind, _evidence in result.findings):
            return
    pytest.fail(f"no seed of 1..5 found {bug!r} as {anomaly!r}")


def test_shrinking_keeps_the_failure_and_makes_the_trace_shorter() -> None:
    plant, _anomaly = PLANTED["acknowledged before fsync"]
    with plant():
        failing = simulate(1)
        assert not failing.ok
        shorter = shrink(failing, budget=12)
    assert not shorter.ok
    assert shorter.options.steps <= failing.options.steps and len(shorter.faults) <= len(failing.faults)
    assert len(shorter.trace) < len(failing.trace)


def test_without_faults_everything_acknowledged_is_there() -> None:
    result = simulate(3, Options(crashes=False, disk_faults=False, network_faults=False))
    assert result.ok, result.findings
    assert result.stats["crashes"] == result.stats["disk faults"] == result.stats["network faults"] == 0
    assert result.stats["sends unknown"] == 0 and result.stats["sends acknowledged"] > 100
