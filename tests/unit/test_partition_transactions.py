"""Partition side of transactions: LSO, markers, the aborted-transaction index, recovery."""

from __future__ import annotations

from pathlib import Path

import pytest

from oncelog.errors import ErrorCode, KafkaError
from oncelog.log.partition import LogConfig, PartitionLog
from oncelog.protocol.records import build_batch, iter_batches, parse_header
from tests.helpers import local_data_dir, make_durable


def open_log(directory: Path, clean_shutdown: bool = True, segment_bytes: int = 1 << 20) -> PartitionLog:
    return PartitionLog.open(directory, "t", 0, LogConfig(segment_bytes=segment_bytes, message_bytes_max=4096),
                             local_data_dir(directory.parent), recovery_point=0, log_start_offset=0,
                             clean_shutdown=clean_shutdown, now_ms=0)


class Producer:
    def __init__(self, log: PartitionLog, producer_id: int, epoch: int = 0) -> None:
        self.log, self.producer_id, self.epoch, self.sequence = log, producer_id, epoch, 0

    def send(self, count: int = 1, transactional: bool = True) -> int:
        batch = build_batch([(None, b"v")] * count, producer_id=self.producer_id, producer_epoch=self.epoch,
                            base_sequence=self.sequence, transactional=transactional)
        self.sequence += count
        return self.log.append(batch, parse_header(batch), 1).base_offset

    def end(self, commit: bool, epoch: int | None = None, coordinator_epoch: int = 0) -> int:
        return self.log.append_marker(self.producer_id, self.epoch if epoch is None else epoch, coordinator_epoch,
                                      commit, 2)


def plain(log: PartitionLog) -> int:
    batch = build_batch([(None, b"p")])
    return log.append(batch, parse_header(batch), 1).base_offset


def test_open_transaction_holds_the_last_stable_offset(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    plain(log)
    producer = Producer(log, 10)
    first = producer.send(3)
    make_durable(log)
    assert first == 1 and log.last_stable_offset == 1 and log.high_watermark == 4
    plain(log)  # later non-transactional data stays invisible to read_committed too
    make_durable(log)
    assert log.last_stable_offset == 1
    marker = producer.end(commit=True)
    assert log.last_stable_offset == 1 and log.high_watermark == 5, "the marker counts once it is durable"
    make_durable(log)
    assert marker == 5 and log.last_stable_offset == log.high_watermark == 6
    assert log.aborted_transactions(0, 6) == []


def test_aborted_transactions_are_indexed_and_filtered(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    a, b = Producer(log, 1), Producer(log, 2)
    a.send()            # 0
    b.send()            # 1
    a.end(commit=False)  # 2: a aborted [0, 2]
    b.end(commit=True)   # 3
    a.send()            # 4
    a.end(commit=False)  # 5: a aborted [4, 5]
    assert log.aborted_transactions(0, 6) == [(1, 0), (1, 4)]
    assert log.aborted_transactions(3, 6) == [(1, 4)], "entries ending before the fetch offset are left out"
    assert log.aborted_transactions(0, 4) == [(1, 0)], "entries starting at or after the upper bound too"
    entries = log.txn_index.entries()
    assert [(e.first_offset, e.last_offset, e.last_stable_offset) for e in entries] == [(0, 2, 1), (4, 5, 6)]


def test_plain_write_during_a_transaction_is_invalid_txn_state(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    producer = Producer(log, 7)
    producer.send()
    with pytest.raises(KafkaError) as raised:
        producer.send(transactional=False)
    assert raised.value.code == ErrorCode.invalid_txn_state


def test_marker_epoch_and_coordinator_epoch_fencing(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    producer = Producer(log, 3, epoch=5)
    producer.send()
    producer.end(commit=True, coordinator_epoch=4)
    with pytest.raises(KafkaError) as stale:
        producer.end(commit=False, epoch=4, coordinator_epoch=4)
    assert stale.value.code == ErrorCode.invalid_producer_epoch
    with pytest.raises(KafkaError) as fenced:
        producer.end(commit=False, coordinator_epoch=3)
    assert fenced.value.code == ErrorCode.transaction_coordinator_fenced


def test_abort_with_bumped_epoch_resets_sequences(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    producer = Producer(log, 3)
    producer.send(2)
    producer.end(commit=False, epoch=1)  # the coordinator fenced epoch 0 with an abort at epoch 1
    producer.epoch = 1
    with pytest.raises(KafkaError) as raised:
        producer.send()  # sequence 2 at the new epoch
    assert raised.value.code == ErrorCode.out_of_order_sequence_number
    producer.sequence = 0
    producer.send()
    old = Producer(log, 3, epoch=0)
    old.sequence = 2
    with pytest.raises(KafkaError) as zombie:
        old.send()
    assert zombie.value.code == ErrorCode.invalid_producer_epoch


def test_sequences_continue_across_transactions_of_one_epoch(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    producer = Producer(log, 3)
    producer.send(2)
    producer.end(commit=True)
    producer.send()  # sequence 2, same epoch: TV1 keeps counting
    assert log.producer_state.entries[3].last_sequence == 2


def test_empty_marker_changes_nothing_but_takes_an_offset(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    producer = Producer(log, 4)
    assert producer.end(commit=False) == 0
    make_durable(log)
    assert log.last_stable_offset == 1 and log.txn_index.entries() == []
    data = log.read(0, 1 << 20, 1)
    assert [h.is_control for _p, h in iter_batches(data)] == [True]


@pytest.mark.parametrize("clean", [True, False])
def test_reopen_rebuilds_open_transactions_and_the_index(tmp_path: Path, clean: bool) -> None:
    log = open_log(tmp_path / "p", segment_bytes=400)
    a, b = Producer(log, 1), Producer(log, 2)
    for _ in range(5):
        a.send()
        a.end(commit=False)
    b.send()
    make_durable(log)
    open_from = log.last_stable_offset
    expected = log.aborted_transactions(0, log.log_end_offset)
    assert len(log.segments) > 1
    if clean:
        log.close()
    reopened = open_log(tmp_path / "p", clean_shutdown=clean, segment_bytes=400)
    assert reopened.last_stable_offset == open_from
    assert reopened.aborted_transactions(0, reopened.log_end_offset) == expected
    reopened.append_marker(2, 0, 0, True, 3)
    make_durable(reopened)
    assert reopened.last_stable_offset == reopened.high_watermark == reopened.log_end_offset


def test_retention_drops_the_index_of_deleted_segments(tmp_path: Path) -> None:
    config = LogConfig(segment_bytes=300, message_bytes_max=300, retention_bytes=0)
    log = PartitionLog.open(tmp_path / "p", "t", 0, config, local_data_dir(tmp_path), recovery_point=0,
                            log_start_offset=0, clean_shutdown=True, now_ms=0)
    producer = Producer(log, 1)
    for _ in range(6):
        producer.send()
        producer.end(commit=False)
    assert log.apply_retention(10) > 0
    assert all(entry.last_offset >= log.log_start_offset for entry in log.txn_index.entries())


def test_a_restart_after_delete_records_does_not_revive_a_committed_transaction(tmp_path: Path) -> None:
    """Found: the newest producer snapshot predated a COMMIT that DeleteRecords then put below the log
    start; a restart replayed from the log start, never saw the COMMIT, and the LSO stayed pinned."""
    log = open_log(tmp_path / "p")
    producer = Producer(log, 10)
    plain(log)  # 0
    producer.send(2)  # 1-2, open
    log.take_producer_snapshot()  # a snapshot while it is open (as at a segment roll)
    producer.end(commit=True)  # 3
    for _ in range(4):
        plain(log)  # 4..7
    make_durable(log)
    assert log.delete_records_before(6) == 6
    for segment in log.segments:  # a crash: no clean close, the log start offset checkpointed at 6
        segment.close()
    reopened = PartitionLog.open(tmp_path / "p", "t", 0, LogConfig(segment_bytes=1 << 20, message_bytes_max=4096),
                                 local_data_dir(tmp_path), recovery_point=0, log_start_offset=6,
                                 clean_shutdown=False, now_ms=0)
    make_durable(reopened)
    plain(reopened)
    make_durable(reopened)
    assert reopened.last_stable_offset == reopened.high_watermark == 9
