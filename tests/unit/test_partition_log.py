"""Partition logs: offset assignment, roll by size and time, reads across segments, timestamps,
retention, durability bookkeeping and reopening."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from oncelog.errors import ErrorCode, KafkaError
from oncelog.log.partition import LogConfig, PartitionLog
from oncelog.protocol.records import build_batch, iter_batches, iter_records, parse_header
from tests.helpers import local_data_dir, make_durable

HOUR_MS = 3600 * 1000


def open_log(directory: Path, config: LogConfig | None = None, **kwargs: int | bool) -> PartitionLog:
    options: dict[str, int | bool] = {
        "recovery_point": 0,
        "log_start_offset": 0,
        "clean_shutdown": True,
        "now_ms": 0,
    }
    options.update(kwargs)
    return PartitionLog.open(
        directory,
        "orders",
        0,
        config or LogConfig(),
        local_data_dir(directory.parent),
        recovery_point=int(options["recovery_point"]),
        log_start_offset=int(options["log_start_offset"]),
        clean_shutdown=bool(options["clean_shutdown"]),
        now_ms=int(options["now_ms"]),
    )


def produce(
    log: PartitionLog, records: int = 1, *, timestamp_ms: int = 0, now_ms: int = 0, value: bytes = b"v"
) -> int:
    batch = build_batch([(None, value)] * records, timestamp_ms=timestamp_ms)
    return log.append(batch, parse_header(batch), now_ms).base_offset


def batch_bytes(records: int = 1, value: bytes = b"v") -> int:
    return len(build_batch([(None, value)] * records))


def base_offsets(data: bytes) -> list[int]:
    batches = list(iter_batches(data))
    assert sum(header.size for _, header in batches) == len(data)
    return [header.base_offset for _, header in batches]


def test_new_log_is_empty(tmp_path: Path) -> None:
    log = open_log(tmp_path / "orders-0")
    assert log.name == "orders-0"
    assert (log.log_start_offset, log.log_end_offset, log.high_watermark, log.recovery_point) == (0, 0, 0, 0)
    assert log.size_bytes == 0 and len(log.segments) == 1
    assert log.read(0, 1000, log.log_end_offset) == b""


def test_append_assigns_consecutive_offsets_and_leader_epoch(tmp_path: Path) -> None:
    log = open_log(tmp_path / "orders-0")
    assert produce(log, 3) == 0
    assert produce(log, 2) == 3
    batch = build_batch([(b"k", b"x")])
    assert log.append(batch, parse_header(batch), 0, partition_leader_epoch=7).base_offset == 5
    assert log.log_end_offset == 6 and log.high_watermark == 0, "nothing is committed before it is durable"
    make_durable(log)
    assert log.log_end_offset == log.high_watermark == 6
    data = log.read(0, 1 << 20, log.log_end_offset)
    assert base_offsets(data) == [0, 3, 5]
    last_position, last = list(iter_batches(data))[-1]
    assert last.partition_leader_epoch == 7
    assert [record.offset for record in iter_records(data, last_position)] == [5]


def test_roll_by_size(tmp_path: Path) -> None:
    size = batch_bytes()
    log = open_log(tmp_path / "orders-0", LogConfig(segment_bytes=3 * size))
    for _ in range(7):
        produce(log)
    assert [segment.base_offset for segment in log.segments] == [0, 3, 6]
    assert [segment.size for segment in log.segments] == [3 * size, 3 * size, size]
    assert sorted(path.name for path in (tmp_path / "orders-0").glob("*.log")) == [
        "00000000000000000000.log",
        "00000000000000000003.log",
        "00000000000000000006.log",
    ]


def test_roll_by_time_counts_from_first_append(tmp_path: Path) -> None:
    log = open_log(tmp_path / "orders-0", LogConfig(segment_ms=HOUR_MS), now_ms=0)
    produce(log, now_ms=5 * HOUR_MS)  # the empty segment's age does not count
    produce(log, now_ms=6 * HOUR_MS - 1)
    assert len(log.segments) == 1
    produce(log, now_ms=6 * HOUR_MS)
    assert [segment.base_offset for segment in log.segments] == [0, 2]
    produce(log, now_ms=6 * HOUR_MS + 10)
    assert len(log.segments) == 2


def test_batch_larger_than_limits_is_rejected(tmp_path: Path) -> None:
    log = open_log(tmp_path / "orders-0", LogConfig(segment_bytes=200, message_bytes_max=150))
    batch = build_batch([(None, b"x" * 120)])
    with pytest.raises(KafkaError) as raised:
        log.append(batch, parse_header(batch), 0)
    assert raised.value.code == ErrorCode.message_too_large
    log = open_log(tmp_path / "orders-1", LogConfig(segment_bytes=150, message_bytes_max=1000))
    with pytest.raises(KafkaError) as raised:
        log.append(batch, parse_header(batch), 0)
    assert raised.value.code == ErrorCode.record_list_too_large
    assert log.log_end_offset == 0


def test_read_spans_segments_and_respects_limits(tmp_path: Path) -> None:
    size = batch_bytes()
    log = open_log(tmp_path / "orders-0", LogConfig(segment_bytes=2 * size))
    for _ in range(6):
        produce(log)
    assert len(log.segments) == 3
    assert base_offsets(log.read(0, 1 << 20, log.log_end_offset)) == [0, 1, 2, 3, 4, 5]
    assert base_offsets(log.read(1, 3 * size, log.log_end_offset)) == [1, 2, 3]
    assert base_offsets(log.read(2, 1 << 20, 5)) == [2, 3, 4]
    assert base_offsets(log.read(5, 1 << 20, log.log_end_offset)) == [5]
    assert log.read(6, 1 << 20, log.log_end_offset) == b""
    assert base_offsets(log.read(0, size - 1, log.log_end_offset)) == [0], "KIP-74: one batch at least"
    assert log.read(0, size - 1, log.log_end_offset, min_one_batch=False) == b""


def test_read_continues_past_a_segment_cut_short_only_when_it_is_exhausted(tmp_path: Path) -> None:
    size = batch_bytes(records=1, value=b"x" * 50)
    log = open_log(tmp_path / "orders-0", LogConfig(segment_bytes=2 * size))
    produce(log, value=b"x" * 50)
    produce(log, value=b"x" * 50)
    produce(log, value=b"x" * 10)
    # The first segment's second batch does not fit: the read stops there instead of skipping it.
    assert base_offsets(log.read(0, size + 10, log.log_end_offset)) == [0]


def test_offset_out_of_range(tmp_path: Path) -> None:
    log = open_log(tmp_path / "orders-0")
    produce(log, 2)
    for offset in (-1, 3, 100):
        with pytest.raises(KafkaError) as raised:
            log.read(offset, 1000, log.log_end_offset)
        assert raised.value.code == ErrorCode.offset_out_of_range
    assert log.read(2, 1000, log.log_end_offset) == b""


def test_offset_for_timestamp_across_segments(tmp_path: Path) -> None:
    size = batch_bytes(records=2)
    log = open_log(tmp_path / "orders-0", LogConfig(segment_bytes=2 * size))
    for timestamp in (100, 200, 300, 400, 500):
        produce(log, 2, timestamp_ms=timestamp)
    assert len(log.segments) == 3
    assert log.offset_for_timestamp(0) == (0, 100)
    assert log.offset_for_timestamp(250) == (4, 300)
    assert log.offset_for_timestamp(400) == (6, 400)
    assert log.offset_for_timestamp(401) == (8, 500)
    assert log.offset_for_timestamp(501) is None


def test_retention_by_time_moves_log_start_offset(tmp_path: Path) -> None:
    size = batch_bytes()
    log = open_log(tmp_path / "orders-0", LogConfig(segment_bytes=2 * size, retention_ms=HOUR_MS))
    for timestamp in (1000, 2000, 3000, 4000, 5000):
        produce(log, timestamp_ms=timestamp)
    assert [segment.max_timestamp for segment in log.segments] == [2000, 4000, 5000]
    assert log.apply_retention(now_ms=2000 + HOUR_MS) == 0
    assert log.apply_retention(now_ms=2001 + HOUR_MS) == 1
    assert log.log_start_offset == 2
    with pytest.raises(KafkaError):
        log.read(1, 1000, log.log_end_offset)
    assert log.apply_retention(now_ms=10**12) == 1, "the active segment is never deleted"
    assert log.log_start_offset == 4 and len(log.segments) == 1
    assert base_offsets(log.read(4, 1000, log.log_end_offset)) == [4]
    assert not (tmp_path / "orders-0" / "00000000000000000000.log").exists()


def test_retention_by_bytes(tmp_path: Path) -> None:
    size = batch_bytes()
    config = LogConfig(segment_bytes=2 * size, retention_ms=-1, retention_bytes=3 * size)
    log = open_log(tmp_path / "orders-0", config)
    for _ in range(7):
        produce(log)
    assert log.size_bytes == 7 * size
    assert log.apply_retention(now_ms=0) == 2
    assert log.size_bytes == 3 * size and log.log_start_offset == 4
    assert log.apply_retention(now_ms=0) == 0


def test_retention_forever_keeps_everything(tmp_path: Path) -> None:
    size = batch_bytes()
    log = open_log(tmp_path / "orders-0", LogConfig(segment_bytes=size, retention_ms=-1))
    for _ in range(3):
        produce(log, timestamp_ms=1)
    assert log.apply_retention(now_ms=10**15) == 0


def test_flush_snapshot_and_mark_flushed(tmp_path: Path) -> None:
    size = batch_bytes()
    log = open_log(tmp_path / "orders-0", LogConfig(segment_bytes=2 * size))
    for _ in range(3):
        produce(log)
    offset, segments = log.flush_snapshot()
    assert offset == 3 and [segment.base_offset for segment in segments] == [0, 2]
    for segment in segments:
        segment.fsync()
    produce(log)
    log.mark_flushed(offset)
    assert log.recovery_point == 3
    offset, segments = log.flush_snapshot()
    assert offset == 4 and [segment.base_offset for segment in segments] == [2]
    log.mark_flushed(1)
    assert log.recovery_point == 3, "the recovery point never goes backwards"


def test_reopen_after_clean_close_keeps_everything(tmp_path: Path) -> None:
    directory = tmp_path / "orders-0"
    size = batch_bytes(records=3)
    config = LogConfig(segment_bytes=10 * size, index_interval_bytes=3 * size)
    log = open_log(directory, config)
    for index in range(25):
        produce(log, 3, timestamp_ms=1000 + index)
    before = log.read(0, 1 << 20, log.log_end_offset)
    log.close()
    assert log.recovery_point == 75
    reopened = open_log(directory, config, recovery_point=75, now_ms=10)
    assert [segment.base_offset for segment in reopened.segments] == [0, 30, 60]
    assert (reopened.log_end_offset, reopened.recovery_point) == (75, 75)
    assert reopened.read(0, 1 << 20, reopened.log_end_offset) == before
    assert reopened.offset_for_timestamp(1020) == (60, 1020)
    assert produce(reopened, now_ms=11) == 75


def test_open_removes_stray_files_and_honours_log_start_offset(tmp_path: Path) -> None:
    directory = tmp_path / "orders-0"
    size = batch_bytes()
    log = open_log(directory, LogConfig(segment_bytes=2 * size))
    for _ in range(5):
        produce(log)
    log.close()
    (directory / "00000000000000000000.log.deleted").write_bytes(b"old")
    (directory / "00000000000000000002.index.swap").write_bytes(b"old")
    (directory / "00000000000000000099.index").write_bytes(b"orphan")
    (directory / "leader-epoch-checkpoint").write_text("0\n0\n")
    reopened = open_log(directory, LogConfig(segment_bytes=2 * size), log_start_offset=3, recovery_point=5)
    assert reopened.log_start_offset == 3
    names = sorted(path.name for path in directory.iterdir())
    assert "00000000000000000000.log.deleted" not in names
    assert "00000000000000000002.index.swap" not in names
    assert "00000000000000000099.index" not in names
    assert "leader-epoch-checkpoint" in names, "files the log does not own are left alone"


def test_log_start_offset_past_end_starts_empty_there(tmp_path: Path) -> None:
    directory = tmp_path / "orders-0"
    log = open_log(directory)
    produce(log, 2)
    log.close()
    reopened = open_log(directory, log_start_offset=50, recovery_point=2)
    assert (reopened.log_start_offset, reopened.log_end_offset) == (50, 50)
    assert produce(reopened) == 50


def test_truncate_to(tmp_path: Path) -> None:
    size = batch_bytes(records=2)
    log = open_log(tmp_path / "orders-0", LogConfig(segment_bytes=2 * size))
    for _ in range(5):
        produce(log, 2)
    log.mark_flushed(10)
    log.truncate_to(5)
    assert log.log_end_offset == 4 and log.recovery_point == 4
    assert [segment.base_offset for segment in log.segments] == [0, 4]
    assert produce(log) == 4
    log.truncate_to(0)
    assert (log.log_start_offset, log.log_end_offset, len(log.segments)) == (0, 0, 1)


def test_delete_removes_directory(tmp_path: Path) -> None:
    log = open_log(tmp_path / "orders-0")
    produce(log)
    log.delete()
    assert not (tmp_path / "orders-0").exists()


def test_reads_match_a_simple_model(tmp_path: Path) -> None:
    """Random batch sizes, small segments and a small index interval; every read is checked against a
    plain list of batches (seeded, so a failure replays exactly)."""
    rng = random.Random(20240611)
    config = LogConfig(segment_bytes=2000, index_interval_bytes=150)
    log = open_log(tmp_path / "orders-0", config)
    model: list[tuple[int, int, int]] = []  # (base offset, last offset, size)
    for _ in range(300):
        records = rng.randint(1, 4)
        value = b"x" * rng.choice([1, 10, 60, 300])
        batch = build_batch([(None, value)] * records)
        base = log.append(batch, parse_header(batch), 0).base_offset
        model.append((base, base + records - 1, len(batch)))
    assert len(log.segments) > 10
    log_end_offset = log.log_end_offset
    for _ in range(2000):
        fetch_offset = rng.randint(0, log_end_offset)
        max_bytes = rng.choice([0, 50, 200, 700, 5000, 1 << 20])
        max_offset_exclusive = rng.randint(fetch_offset, log_end_offset)
        min_one_batch = rng.random() < 0.5
        expected: list[int] = []
        used = 0
        for base, last, size in model:
            if fetch_offset >= max_offset_exclusive:
                break  # nothing is readable at or past the limit, even inside a batch that starts below
            if last < fetch_offset:
                continue
            if base >= max_offset_exclusive:
                break
            if used + size > max_bytes and not (min_one_batch and not expected):
                break
            expected.append(base)
            used += size
            if used > max_bytes:
                break
        data = log.read(fetch_offset, max_bytes, max_offset_exclusive, min_one_batch)
        assert base_offsets(data) == expected, (fetch_offset, max_bytes, max_offset_exclusive, min_one_batch)


def test_offset_for_timestamp_matches_a_simple_model(tmp_path: Path) -> None:
    """Out-of-order timestamps across segments and sparse indexes; survives a reopen."""
    rng = random.Random(7)
    config = LogConfig(segment_bytes=1500, index_interval_bytes=120)
    directory = tmp_path / "orders-0"
    log = open_log(directory, config)
    model: list[tuple[int, int]] = []  # (base offset, max timestamp)
    for _ in range(200):
        timestamp = rng.randint(0, 10_000)
        records = rng.randint(1, 3)
        model.append((produce(log, records, timestamp_ms=timestamp), timestamp))
    log.close()
    log = open_log(directory, config, recovery_point=log.log_end_offset)
    for target in [*range(-5, 10_010, 37), 10_000, 0]:
        expected = next(((base, ts) for base, ts in model if ts >= target), None)
        assert log.offset_for_timestamp(target) == expected, target
