"""Offset and time indexes: Kafka's byte formats, lookups, truncation, defensive loading."""

from __future__ import annotations

import struct
from pathlib import Path

from oncelog.log.index import OffsetIndex, TimeIndex
from tests.helpers import local_data_dir

BASE = 1000


def offset_index(tmp_path: Path, log_size_bytes: int = 1 << 30) -> OffsetIndex:
    return OffsetIndex(tmp_path / "00000000000000001000.index", local_data_dir(tmp_path), BASE, log_size_bytes)


def time_index(tmp_path: Path, next_offset: int = 1 << 40) -> TimeIndex:
    return TimeIndex(tmp_path / "00000000000000001000.timeindex", local_data_dir(tmp_path), BASE, next_offset)


def test_offset_index_writes_kafka_format_and_reloads(tmp_path: Path) -> None:
    index = offset_index(tmp_path)
    index.append(1009, 4100)
    index.append(1020, 8300)
    index.flush()
    index.close()
    raw = (tmp_path / "00000000000000001000.index").read_bytes()
    assert raw == struct.pack(">iiii", 9, 4100, 20, 8300)
    reloaded = offset_index(tmp_path)
    assert len(reloaded) == 2
    assert reloaded.last_entry() == (1020, 8300)


def test_offset_index_lookup_is_largest_entry_at_or_below(tmp_path: Path) -> None:
    index = offset_index(tmp_path)
    for offset, position in [(1009, 4100), (1020, 8300), (1031, 12500)]:
        index.append(offset, position)
    assert index.lookup(BASE) == 0
    assert index.lookup(1008) == 0
    assert index.lookup(1009) == 4100
    assert index.lookup(1019) == 4100
    assert index.lookup(1020) == 8300
    assert index.lookup(10**9) == 12500


def test_offset_index_truncate_to_drops_entries_at_or_above(tmp_path: Path) -> None:
    index = offset_index(tmp_path)
    for offset, position in [(1009, 4100), (1020, 8300), (1031, 12500)]:
        index.append(offset, position)
    index.truncate_to(1020)
    assert index.last_entry() == (1009, 4100)
    assert index.lookup(1031) == 4100
    index.append(1015, 6000)  # appending after a truncation continues the file
    index.close()
    assert offset_index(tmp_path).last_entry() == (1015, 6000)
    assert (tmp_path / "00000000000000001000.index").stat().st_size == 16


def test_offset_index_ignores_partial_trailing_entry(tmp_path: Path) -> None:
    path = tmp_path / "00000000000000001000.index"
    path.write_bytes(struct.pack(">ii", 9, 4100) + b"\x00\x00\x00")
    index = offset_index(tmp_path)
    assert index.last_entry() == (1009, 4100)
    assert path.stat().st_size == 8, "the torn entry is cut so later appends line up"
    index.append(1020, 8300)
    index.close()
    assert offset_index(tmp_path).last_entry() == (1020, 8300)


def test_offset_index_drops_entries_past_log_size_or_not_increasing(tmp_path: Path) -> None:
    path = tmp_path / "00000000000000001000.index"
    path.write_bytes(struct.pack(">iiii", 9, 4100, 20, 8300))
    assert offset_index(tmp_path, log_size_bytes=8000).last_entry() == (1009, 4100)
    path.write_bytes(struct.pack(">iiiiii", 9, 4100, 20, 8300, 15, 9000))
    assert offset_index(tmp_path).last_entry() == (1020, 8300)
    path.write_bytes(struct.pack(">iiii", 9, 4100, 20, 4100))
    assert offset_index(tmp_path).last_entry() == (1009, 4100)


def test_offset_index_delete_removes_file(tmp_path: Path) -> None:
    index = offset_index(tmp_path)
    index.append(1001, 100)
    index.delete()
    assert not (tmp_path / "00000000000000001000.index").exists()


def test_time_index_format_and_lookup(tmp_path: Path) -> None:
    index = time_index(tmp_path)
    index.append(5_000, 1010)
    index.append(7_000, 1030)
    index.close()
    raw = (tmp_path / "00000000000000001000.timeindex").read_bytes()
    assert raw == struct.pack(">qiqi", 5_000, 10, 7_000, 30)
    index = time_index(tmp_path)
    assert index.last_timestamp == 7_000
    # The scan start is the largest entry at or below the target, else the base offset.
    assert index.lookup(4_999) == BASE
    assert index.lookup(5_000) == 1010
    assert index.lookup(6_999) == 1010
    assert index.lookup(7_000) == 1030
    assert index.lookup(10**12) == 1030


def test_time_index_truncate_and_partial_entry(tmp_path: Path) -> None:
    index = time_index(tmp_path)
    index.append(5_000, 1010)
    index.append(7_000, 1030)
    index.truncate_to(1030)
    assert index.last_entry() == (5_000, 1010)
    index.close()
    path = tmp_path / "00000000000000001000.timeindex"
    path.write_bytes(path.read_bytes() + b"\x01" * 11)
    assert time_index(tmp_path).last_entry() == (5_000, 1010)
    assert path.stat().st_size == 12


def test_time_index_drops_entries_at_or_past_next_offset(tmp_path: Path) -> None:
    path = tmp_path / "00000000000000001000.timeindex"
    path.write_bytes(struct.pack(">qiqi", 5_000, 10, 7_000, 30))
    assert time_index(tmp_path, next_offset=1030).last_entry() == (5_000, 1010)
    path.write_bytes(struct.pack(">qiqi", 5_000, 10, 4_000, 30))
    assert time_index(tmp_path).last_entry() == (5_000, 1010)
    empty = time_index(tmp_path, next_offset=BASE)
    assert empty.last_entry() is None and empty.last_timestamp == -1
