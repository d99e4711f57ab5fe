"""Disk faults through the file-system seam: whatever fails, nothing acknowledged is lost or duplicated.

The workload (disk_harness.py) touches every write path: segment appends and rolls, offset and time
indexes, producer snapshots, the aborted-transaction index, checkpoints, topics.json, coordinator
records in both internal topics, markers, retention and the cleaner. A dry run counts the file-system
operations of each kind; then, for a spread of n, the n-th operation of that kind fails (EIO, or ENOSPC
for writes), the workload runs to the end, the broker is dropped as by kill -9 and restarted, and
`check` verifies what was acknowledged. The same sweep runs with a disk that fills up after a number of
bytes. bench/disk_faults.py runs every n instead of a spread.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from oncelog.errors import ErrorCode
from oncelog.fs import Fault
from tests.faults.disk_harness import (
    TOPIC,
    DiskHarness,
    Workload,
    check,
    read_partition,
    restart_and_check,
    run_workload,
)

SWEEP_POINTS = 12
"""How many n per operation kind CI tries (spread over the dry run's count)."""

KINDS = ("write", "fsync", "rename", "truncate", "open", "unlink", "sync_dir", "read")


_run = run_workload
_restart_and_check = restart_and_check


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, int], int]:
    """Operation counts and bytes written by the workload without faults (it must pass its own check)."""
    harness, workload = _run(tmp_path_factory.mktemp("dry"))
    counts = dict(harness.plan.counts)
    written = sum(1 for operation, _path in harness.plan.log if operation == "write")
    assert workload.acked.records[0] and workload.acked.committed_offsets and workload.acked.aborted
    _restart_and_check(harness, workload)
    return counts, written


def _spread(count: int, points: int = SWEEP_POINTS) -> list[int]:
    if count <= points:
        return list(range(1, count + 1))
    return sorted({1 + (count - 1) * index // (points - 1) for index in range(points)})


@pytest.mark.parametrize("kind", KINDS)
def test_the_nth_operation_fails_and_nothing_acknowledged_is_lost(tmp_path: Path, kind: str,
                                                                  dry_run: tuple[dict[str, int], int]) -> None:
    counts, _written = dry_run
    assert counts[kind] > 0, f"the workload never does a {kind}"
    error = errno.ENOSPC if kind == "write" else errno.EIO
    for nth in _spread(counts[kind]):
        harness, workload = _run(tmp_path / f"{kind}-{nth}", Fault(kind, nth=nth, error=error))
        _restart_and_check(harness, workload)


def test_a_disk_that_fills_up_loses_nothing_acknowledged(tmp_path: Path, dry_run: tuple[dict[str, int], int]) -> None:
    """Writes succeed until the disk is full; the write that crosses is partial, every later one fails."""
    for index, budget in enumerate([200, 1000, 3000, 6000, 10_000, 20_000, 40_000]):
        harness, workload = _run(tmp_path / f"full-{index}", disk_bytes=budget)
        _restart_and_check(harness, workload)


def test_disk_full_between_log_and_index_write_never_reuses_an_offset(tmp_path: Path) -> None:
    """The outside testers' case: ENOSPC after the log write but before the index write. Before the fix
    the partition reused the offset and recovery cut acknowledged records behind it (18 of 32 lost)."""
    harness = DiskHarness(tmp_path / "data")
    harness.start()
    workload = Workload(harness)
    assert workload.create_topic() and workload.init_producer()
    acknowledged = 0
    harness.plan.add(Fault("write", nth=1, error=errno.ENOSPC, path_contains=".index"))
    for batch in range(32):
        if workload.produce(0, [f"r{batch}-{i}".encode() * 8 for i in range(2)], attempts=2):
            acknowledged += 1
    assert acknowledged == 32, "the append whose index write failed is retried and succeeds"
    offsets = workload.acked.acknowledged_offsets[0]
    assert offsets == sorted(set(offsets)), "an offset was handed out twice"
    _restart_and_check(harness, workload)


def test_a_failed_fsync_takes_the_partition_offline_until_restart(tmp_path: Path) -> None:
    """fsync failed: what it covered may be lost, and a retried fsync could lie, so the partition answers
    KAFKA_STORAGE_ERROR (produce, fetch) and LEADER_NOT_AVAILABLE (metadata) until the broker restarts."""
    harness = DiskHarness(tmp_path / "data")
    harness.start()
    workload = Workload(harness)
    assert workload.create_topic() and workload.init_producer()
    assert workload.produce(0, [b"before"])
    harness.plan.add(Fault("fsync", path_contains=f"{TOPIC}-0/"))
    assert not workload.produce(0, [b"unlucky"], attempts=1)
    assert not workload.produce(0, [b"later"], attempts=1), "an offline partition takes no writes"
    assert workload.produce(1, [b"other partition"]), "the other partition keeps serving"
    metadata = harness.request(3, 12, {"topics": [{"name": TOPIC, "topic_id": None}],
                                       "allow_auto_topic_creation": False,
                                       "include_topic_authorized_operations": False})
    codes = [ErrorCode(int(p.error_code)) for p in metadata.topics[0].partitions]
    assert codes == [ErrorCode.leader_not_available, ErrorCode.none]
    fetch = harness.request(1, 11, {
        "replica_id": -1, "max_wait": 0, "min_bytes": 0, "max_bytes": 1 << 20, "isolation_level": 0,
        "session_id": 0, "session_epoch": -1, "topics": [{"topic": TOPIC, "partitions": [
            {"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 20}]}],
        "forgotten_topics_data": [], "rack_id": ""})
    assert ErrorCode(int(fetch.responses[0].partitions[0].error_code)) == ErrorCode.kafka_storage_error
    harness.crash()
    harness.plan.clear()
    harness.start()
    try:
        check(harness, workload)
        assert next(value for _offset, value in read_partition(harness, 0, False)) == b"before"
    finally:
        harness.crash()

