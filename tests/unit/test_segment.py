"""Log segments: appends, whole-batch reads (size, offset and KIP-74 rules), the index, timestamps."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from oncelog.log.segment import LogSegment
from oncelog.protocol.records import assigned_prefix, build_batch, iter_batches, parse_header
from tests.helpers import local_data_dir


def make_batch(records: int = 1, value_bytes: int = 10, timestamp_ms: int = 0) -> bytes:
    return build_batch([(None, b"v" * value_bytes)] * records, timestamp_ms=timestamp_ms)


def append(segment: LogSegment, batch: bytes, base_offset: int, now_ms: int = 0) -> int:
    header = parse_header(batch)
    return segment.append(
        assigned_prefix(base_offset, header.batch_length, 0),
        memoryview(batch)[16:],
        base_offset,
        base_offset + header.last_offset_delta,
        header.max_timestamp,
        now_ms=now_ms,
    )


def fill(segment: LogSegment, batches: Sequence[bytes]) -> list[tuple[int, int]]:
    """Append `batches` back to back; return each one's (base offset, last offset)."""
    extents = []
    offset = segment.next_offset
    for batch in batches:
        append(segment, batch, offset)
        last = offset + parse_header(batch).last_offset_delta
        extents.append((offset, last))
        offset = last + 1
    return extents


def base_offsets(data: bytes) -> list[int]:
    batches = list(iter_batches(data))
    assert sum(header.size for _, header in batches) == len(data), "reads return whole batches only"
    return [header.base_offset for _, header in batches]


def test_new_segment_is_empty(tmp_path: Path) -> None:
    segment = LogSegment(tmp_path, 42, local_data_dir(tmp_path))
    assert (segment.base_offset, segment.size, segment.next_offset) == (42, 0, 42)
    assert segment.max_timestamp == -1 and segment.roll_base_ms is None
    assert (tmp_path / "00000000000000000042.log").exists()
    assert (tmp_path / "00000000000000000042.index").exists()
    assert (tmp_path / "00000000000000000042.timeindex").exists()
    assert segment.read(42, 1000, 10**9, True) == b""


def test_append_assigns_prefix_and_keeps_the_rest(tmp_path: Path) -> None:
    segment = LogSegment(tmp_path, 100, local_data_dir(tmp_path))
    batch = make_batch(records=3, timestamp_ms=1234)
    assert append(segment, batch, 100, now_ms=77) == 0
    assert segment.next_offset == 103 and segment.size == len(batch)
    assert segment.max_timestamp == 1234 and segment.roll_base_ms == 77
    stored = (tmp_path / "00000000000000000100.log").read_bytes()
    assert parse_header(stored).base_offset == 100
    assert stored[16:] == batch[16:]
    assert segment.read(100, 10_000, 10**9, False) == stored


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_writev = os.writev

    def dribble(fd: int, buffers: Sequence[memoryview]) -> int:
        return real_writev(fd, [bytes(buffers[0][:7])])

    monkeypatch.setattr(os, "writev", dribble)
    segment = LogSegment(tmp_path, 0, local_data_dir(tmp_path))
    batches = [make_batch(records=2, value_bytes=30), make_batch()]
    fill(segment, batches)
    monkeypatch.undo()
    data = segment.read(0, 10_000, 10**9, False)
    assert base_offsets(data) == [0, 2]
    assert data.endswith(batches[1][16:])


def test_failed_write_is_cut_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    segment = LogSegment(tmp_path, 0, local_data_dir(tmp_path))
    fill(segment, [make_batch()])
    size = segment.size
    real_writev = os.writev
    calls = 0

    def half_then_fail(fd: int, buffers: Sequence[memoryview]) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return real_writev(fd, [buffers[0]])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "writev", half_then_fail)
    with pytest.raises(OSError):
        append(segment, make_batch(), 1)
    monkeypatch.undo()
    assert segment.size == size and os.path.getsize(segment.log_path) == size
    assert segment.next_offset == 1
    append(segment, make_batch(), 1)
    assert base_offsets(segment.read(0, 10_000, 10**9, False)) == [0, 1]


def test_read_cuts_at_max_offset_exclusive(tmp_path: Path) -> None:
    segment = LogSegment(tmp_path, 0, local_data_dir(tmp_path))
    fill(segment, [make_batch(records=5) for _ in range(4)])  # offsets 0-4, 5-9, 10-14, 15-19
    assert base_offsets(segment.read(0, 100_000, 10, False)) == [0, 5]
    assert base_offsets(segment.read(0, 100_000, 11, False)) == [0, 5, 10]
    assert base_offsets(segment.read(7, 100_000, 20, False)) == [5, 10, 15]
    assert segment.read(10, 100_000, 10, True) == b""


def test_read_cuts_at_max_bytes_on_batch_boundaries(tmp_path: Path) -> None:
    segment = LogSegment(tmp_path, 0, local_data_dir(tmp_path))
    batches = [make_batch(value_bytes=100) for _ in range(5)]
    fill(segment, batches)
    size = len(batches[0])
    assert base_offsets(segment.read(0, 3 * size, 10**9, False)) == [0, 1, 2]
    assert base_offsets(segment.read(0, 3 * size - 1, 10**9, False)) == [0, 1]
    assert base_offsets(segment.read(1, size, 10**9, False)) == [1]
    assert segment.read(1, size - 1, 10**9, False) == b""


def test_read_returns_oversized_first_batch_whole_with_min_one_batch(tmp_path: Path) -> None:
    segment = LogSegment(tmp_path, 0, local_data_dir(tmp_path), index_interval_bytes=0)
    big = make_batch(value_bytes=50_000)
    fill(segment, [make_batch(), big, make_batch()])
    data = segment.read(1, 1000, 10**9, True)
    assert base_offsets(data) == [1] and len(data) == len(big)
    assert segment.read(1, 1000, 10**9, False) == b""
    assert base_offsets(segment.read(0, 1000, 10**9, True)) == [0], "only the first batch may exceed"


def test_read_from_inside_a_batch_returns_the_containing_batch(tmp_path: Path) -> None:
    segment = LogSegment(tmp_path, 0, local_data_dir(tmp_path))
    fill(segment, [make_batch(records=10) for _ in range(3)])
    assert base_offsets(segment.read(15, 100_000, 10**9, False)) == [10, 20]
    assert base_offsets(segment.read(29, 100_000, 10**9, False)) == [20]
    assert segment.read(30, 100_000, 10**9, False) == b""


def test_read_uses_the_offset_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    interval = 4096
    segment = LogSegment(tmp_path, 0, local_data_dir(tmp_path), index_interval_bytes=interval)
    batch = make_batch(records=2, value_bytes=40)
    fill(segment, [batch] * 2000)
    assert segment.size == 2000 * len(batch) > 50 * interval
    real_pread = os.pread
    reads: list[tuple[int, int]] = []

    def spy(fd: int, size: int, position: int) -> bytes:
        reads.append((position, size))
        return real_pread(fd, size, position)

    monkeypatch.setattr(os, "pread", spy)
    data = segment.read(2001, 3 * len(batch), 10**9, True)
    assert base_offsets(data) == [2000, 2002, 2004]
    assert len(reads) == 1, "one pread covers the scan from the index entry and the batches returned"
    position, size = reads[0]
    assert abs(position - 1000 * len(batch)) <= interval + len(batch), "the scan starts near the batch"
    assert size <= 3 * len(batch) + interval + 61


def test_find_offset_for_timestamp(tmp_path: Path) -> None:
    segment = LogSegment(tmp_path, 0, local_data_dir(tmp_path), index_interval_bytes=0)
    timestamps = [1000, 3000, 2000, 5000, 5000, 9000]
    fill(segment, [make_batch(records=2, timestamp_ms=ts) for ts in timestamps])
    assert segment.find_offset_for_timestamp(0) == (0, 1000)
    assert segment.find_offset_for_timestamp(1000) == (0, 1000)
    assert segment.find_offset_for_timestamp(1001) == (2, 3000)
    assert segment.find_offset_for_timestamp(2500) == (2, 3000)
    assert segment.find_offset_for_timestamp(4000) == (6, 5000)
    assert segment.find_offset_for_timestamp(9000) == (10, 9000)
    assert segment.find_offset_for_timestamp(9001) is None
    assert segment.max_timestamp == 9000


def test_reopen_restores_next_offset_and_max_timestamp(tmp_path: Path) -> None:
    segment = LogSegment(tmp_path, 0, local_data_dir(tmp_path), index_interval_bytes=200)
    fill(segment, [make_batch(records=3, value_bytes=50, timestamp_ms=ts) for ts in range(1000, 1100)])
    expected = (segment.size, segment.next_offset, segment.max_timestamp)
    segment.fsync()
    segment.flush_indexes()
    segment.close()
    reopened = LogSegment(tmp_path, 0, local_data_dir(tmp_path), index_interval_bytes=200, opened_ms=5)
    assert not reopened.needs_recovery
    assert (
        (reopened.size, reopened.next_offset, reopened.max_timestamp)
        == expected
        == (reopened.size, 300, 1099)
    )
    assert reopened.roll_base_ms == 5
    assert base_offsets(reopened.read(150, 100_000, 10**9, False))[0] == 150
    assert reopened.find_offset_for_timestamp(1050) == (150, 1050)
    append(reopened, make_batch(timestamp_ms=2000), 300)
    assert reopened.next_offset == 301 and reopened.max_timestamp == 2000


def test_reopen_flags_torn_tail(tmp_path: Path) -> None:
    segment = LogSegment(tmp_path, 0, local_data_dir(tmp_path))
    fill(segment, [make_batch() for _ in range(3)])
    segment.close()
    with open(tmp_path / "00000000000000000000.log", "r+b") as handle:
        handle.truncate(segment.size - 5)
    reopened = LogSegment(tmp_path, 0, local_data_dir(tmp_path))
    assert reopened.needs_recovery
    assert reopened.recover(1 << 20) == len(make_batch()) - 5
    assert reopened.next_offset == 2 and not reopened.needs_recovery


def test_truncate_to_drops_batches_holding_the_offset_and_after(tmp_path: Path) -> None:
    segment = LogSegment(tmp_path, 0, local_data_dir(tmp_path), index_interval_bytes=0)
    batch = make_batch(records=5, timestamp_ms=10)
    fill(segment, [batch, batch, make_batch(records=5, timestamp_ms=99), batch])
    assert segment.truncate_to(10) == 2 * len(batch)
    assert segment.next_offset == 10 and segment.size == 2 * len(batch)
    assert segment.max_timestamp == 10
    assert segment.truncate_to(7) == len(batch), "a batch straddling the offset goes whole"
    assert segment.next_offset == 5
    assert segment.truncate_to(100) == 0
    fill(segment, [batch])
    assert base_offsets(segment.read(0, 100_000, 10**9, False)) == [0, 5]
    assert segment.truncate_to(0) == 2 * len(batch)
    assert segment.next_offset == 0 and segment.roll_base_ms is None


def test_fsync_after_close_is_a_no_op_and_delete_removes_files(tmp_path: Path) -> None:
    segment = LogSegment(tmp_path, 0, local_data_dir(tmp_path))
    fill(segment, [make_batch()])
    segment.fsync()
    segment.close()
    segment.fsync()
    assert segment.closed
    segment.delete()
    assert list(tmp_path.iterdir()) == []
