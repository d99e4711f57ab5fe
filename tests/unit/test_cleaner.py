"""Compaction keeps the latest record per key, never moves offsets, and survives a reopen."""

from __future__ import annotations

from pathlib import Path

from oncelog.log.cleaner import clean
from oncelog.log.partition import LogConfig, PartitionLog
from oncelog.protocol.records import build_batch, iter_batches, iter_records, parse_header
from tests.helpers import local_data_dir

DAY_MS = 24 * 3600 * 1000


def open_log(directory: Path, clean_shutdown: bool = True) -> PartitionLog:
    config = LogConfig(segment_bytes=1024, message_bytes_max=1024)
    return PartitionLog.open(directory, "__consumer_offsets", 0, config, local_data_dir(directory.parent),
                             recovery_point=0, log_start_offset=0,
                             clean_shutdown=clean_shutdown, now_ms=0)


def records(log: PartitionLog) -> list[tuple[int, bytes | None, bytes | None]]:
    data = log.read(log.log_start_offset, 1 << 24, log.log_end_offset)
    return [(r.offset, r.key, r.value) for position, _h in iter_batches(data) for r in iter_records(data, position)]


def append(log: PartitionLog, key: bytes, value: bytes | None) -> None:
    batch = build_batch([(key, value)], timestamp_ms=1)
    log.append(batch, parse_header(batch), 1)


def test_latest_value_per_key_survives_and_offsets_stay(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    for round_ in range(30):
        for key in (b"a", b"b", b"c"):
            append(log, key, f"{key.decode()}{round_}".encode() * 4)
    append(log, b"b", None)  # tombstone for b
    assert len(log.segments) > 3
    end = log.log_end_offset
    before = records(log)
    result = clean(log, now_ms=1, delete_retention_ms=DAY_MS)
    assert result.segments_rewritten >= 1 and result.bytes_after < result.bytes_before
    after = records(log)
    assert log.log_end_offset == end
    latest = {key: (offset, value) for offset, key, value in before}
    assert {key: (offset, value) for offset, key, value in after} == latest, "the newest record per key wins"
    assert len(after) < len(before)
    assert [offset for offset, _k, _v in after] == sorted(offset for offset, _k, _v in after)
    assert (latest[b"b"][1]) is None, "the tombstone is kept within delete.retention.ms"
    log.close()
    reopened = open_log(tmp_path / "p")
    assert records(reopened) == after
    reopened.close()


def test_old_tombstones_are_dropped(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    append(log, b"gone", b"x" * 300)
    append(log, b"gone", None)
    for i in range(20):
        append(log, b"other", str(i).encode() * 50)
    far_future = 10**15
    clean(log, now_ms=far_future, delete_retention_ms=DAY_MS)
    assert b"gone" not in {key for _o, key, _v in records(log)}


def test_nothing_to_clean_leaves_segments_alone(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    for i in range(40):
        append(log, f"k{i}".encode(), b"v" * 40)
    segments = list(log.segments)
    assert clean(log, now_ms=1, delete_retention_ms=DAY_MS).segments_rewritten == 0
    assert list(log.segments) == segments


def test_unclean_reopen_after_compaction_recovers_indexes(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    for round_ in range(20):
        append(log, b"k", str(round_).encode() * 60)
    clean(log, now_ms=1, delete_retention_ms=DAY_MS)
    expected = records(log)
    (tmp_path / "p" / "stray.log.cleaned").write_bytes(b"leftover")
    reopened = open_log(tmp_path / "p", clean_shutdown=False)
    assert records(reopened) == expected
    assert reopened.read(expected[-1][0], 1 << 20, reopened.log_end_offset)
    assert not (tmp_path / "p" / "stray.log.cleaned").exists()
