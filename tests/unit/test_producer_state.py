"""Broker-side idempotence (docs/protocol.md, Idempotent producers): the producer state of one partition.

A hypothesis state machine drives one `ProducerStateManager` against a small model written from
Kafka's rules (duplicate check first, then epoch, then sequence; a window of the last five batches,
one after a snapshot reload). Plain tests pin the individual rules, the snapshot format and files, and
the `PartitionLog` integration: retries are recognised after a clean close, an unclean reopen and a roll.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from oncelog.errors import ErrorCode, KafkaError
from oncelog.fs import OS_FILE_SYSTEM
from oncelog.log.partition import LogConfig, PartitionLog
from oncelog.log.producer_state import (
    Duplicate,
    ProducerStateManager,
    list_snapshots,
    load_latest_snapshot,
    snapshot_path,
    write_snapshot,
)
from oncelog.protocol.records import BatchHeader, build_batch, iter_batches, iter_records, parse_header
from tests.helpers import local_data_dir

SEQUENCE_MODULUS = 1 << 31
SEQUENCE_MAX = SEQUENCE_MODULUS - 1
WINDOW = 5
PRODUCER_IDS = (1000, 1001, 1002)


def header_of(
    producer_id: int, producer_epoch: int, base_sequence: int, record_count: int = 1, timestamp_ms: int = 0
) -> BatchHeader:
    batch = build_batch(
        [(None, b"v")] * record_count,
        timestamp_ms=timestamp_ms,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
    )
    return parse_header(batch)


def outcome_of(state: ProducerStateManager, header: BatchHeader) -> tuple[str, int, int] | tuple[str, ErrorCode]:
    """("accept", 0, 0), ("duplicate", base_offset, timestamp) or ("error", code)."""
    try:
        duplicate = state.check(header)
    except KafkaError as error:
        return ("error", error.code)
    if duplicate is None:
        return ("accept", 0, 0)
    assert isinstance(duplicate, Duplicate)
    return ("duplicate", duplicate.base_offset, duplicate.timestamp)


# --- the state machine ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelBatch:
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int
    base_offset: int
    timestamp: int

    @property
    def last_sequence(self) -> int:
        return (self.base_sequence + self.record_count - 1) % SEQUENCE_MODULUS


@dataclass
class ModelProducer:
    epoch: int
    window: list[ModelBatch] = field(default_factory=list)
    """The batches the broker must recognise as duplicates, oldest first (≤ 5)."""

    @property
    def next_sequence(self) -> int:
        return (self.window[-1].last_sequence + 1) % SEQUENCE_MODULUS


class ProducerStateMachine(RuleBasedStateMachine):
    """One partition's producer state against a model of Kafka's `ProducerAppendInfo` rules."""

    def __init__(self) -> None:
        super().__init__()
        self.state = ProducerStateManager()
        self.producers: dict[int, ModelProducer] = {}
        self.log: list[ModelBatch] = []
        """Every batch appended, in offset order (producer id -1 for non-idempotent batches)."""
        self.next_offset = 0
        self.clock_ms = 1_000

    # --- the model ---------------------------------------------------------------------------------

    def expected(self, producer_id: int, epoch: int, base_sequence: int, record_count: int) -> tuple[object, ...]:
        """What Kafka answers, written from Kafka's rules (docs/protocol.md) independently of the code under test."""
        producer = self.producers.get(producer_id)
        if producer is None:
            return ("accept", 0, 0)
        last_sequence = (base_sequence + record_count - 1) % SEQUENCE_MODULUS
        if epoch == producer.epoch:
            for batch in producer.window:
                if batch.base_sequence == base_sequence and batch.last_sequence == last_sequence:
                    return ("duplicate", batch.base_offset, batch.timestamp)
        if epoch < producer.epoch:
            return ("error", ErrorCode.invalid_producer_epoch)
        if epoch > producer.epoch:
            return ("accept", 0, 0) if base_sequence == 0 else ("error", ErrorCode.out_of_order_sequence_number)
        if base_sequence == producer.next_sequence:
            return ("accept", 0, 0)
        return ("error", ErrorCode.out_of_order_sequence_number)

    def send(self, producer_id: int, epoch: int, base_sequence: int, record_count: int) -> tuple[object, ...]:
        """Check (and if accepted, apply) one batch; the answer must be the model's."""
        self.clock_ms += 1
        header = header_of(producer_id, epoch, base_sequence, record_count, self.clock_ms)
        expected = self.expected(producer_id, epoch, base_sequence, record_count)
        before = self.state.snapshot_bytes()
        actual = outcome_of(self.state, header)
        assert actual == expected, (producer_id, epoch, base_sequence, record_count)
        assert self.state.snapshot_bytes() == before, "check must not change state"
        if actual[0] == "accept":
            batch = ModelBatch(producer_id, epoch, base_sequence, record_count, self.next_offset, self.clock_ms)
            self.state.apply(header, self.next_offset, self.clock_ms)
            self.state.advance(self.next_offset + record_count)
            self.next_offset += record_count
            self.log.append(batch)
            producer = self.producers.get(producer_id)
            if producer is None or producer.epoch != epoch:
                producer = self.producers[producer_id] = ModelProducer(epoch)
            producer.window = [*producer.window, batch][-WINDOW:]
        return actual

    def pick(self, index: int) -> tuple[int, ModelProducer]:
        producer_id = sorted(self.producers)[index % len(self.producers)]
        return producer_id, self.producers[producer_id]

    def old_batches(self) -> list[ModelBatch]:
        """Batches in the log that no longer are in their producer's duplicate window."""
        return [
            batch
            for batch in self.log
            if batch.producer_id >= 0 and batch not in self.producers[batch.producer_id].window
        ]

    # --- rules ---------------------------------------------------------------------------------------

    @rule(
        producer_id=st.sampled_from(PRODUCER_IDS),
        record_count=st.integers(1, 4),
        first_sequence=st.one_of(
            st.integers(SEQUENCE_MAX - 6, SEQUENCE_MAX), st.integers(0, 50), st.integers(0, SEQUENCE_MAX)
        ),
        first_epoch=st.integers(0, 3),
    )
    def append_next(self, producer_id: int, record_count: int, first_sequence: int, first_epoch: int) -> None:
        """The next batch of a producer; an unknown producer may start at any sequence (near 2^31-1 too)."""
        producer = self.producers.get(producer_id)
        if producer is None:
            epoch, base_sequence = first_epoch, first_sequence
        else:
            epoch, base_sequence = producer.epoch, producer.next_sequence
        assert self.send(producer_id, epoch, base_sequence, record_count) == ("accept", 0, 0)

    @precondition(lambda self: bool(self.producers))
    @rule(index=st.integers(0, 1000), which=st.integers(0, 1000))
    def retry_recent(self, index: int, which: int) -> None:
        """A retry of any batch in the window is a duplicate answered with its original offset."""
        _producer_id, producer = self.pick(index)
        batch = producer.window[which % len(producer.window)]
        answer = self.send(batch.producer_id, batch.producer_epoch, batch.base_sequence, batch.record_count)
        assert answer == ("duplicate", batch.base_offset, batch.timestamp)

    @precondition(lambda self: bool(self.producers))
    @rule(index=st.integers(0, 1000), which=st.integers(0, 1000), extra=st.integers(1, 3))
    def retry_resized(self, index: int, which: int, extra: int) -> None:
        """Same first sequence, different last sequence: not the cached batch, so not a duplicate."""
        _producer_id, producer = self.pick(index)
        batch = producer.window[which % len(producer.window)]
        record_count = batch.record_count + extra if extra < 3 or batch.record_count == 1 else 1
        answer = self.send(batch.producer_id, batch.producer_epoch, batch.base_sequence, record_count)
        assert answer == ("error", ErrorCode.out_of_order_sequence_number)

    @precondition(lambda self: bool(self.old_batches()))
    @rule(which=st.integers(0, 1000))
    def retry_old(self, which: int) -> None:
        """A retry of a batch that left the window is never answered as a duplicate (or written again)."""
        candidates = self.old_batches()
        batch = candidates[which % len(candidates)]
        answer = self.send(batch.producer_id, batch.producer_epoch, batch.base_sequence, batch.record_count)
        assert answer[0] == "error"

    @precondition(lambda self: bool(self.producers))
    @rule(index=st.integers(0, 1000), gap=st.integers(1, 1000), record_count=st.integers(1, 4))
    def skip_sequences(self, index: int, gap: int, record_count: int) -> None:
        producer_id, producer = self.pick(index)
        base_sequence = (producer.next_sequence + gap) % SEQUENCE_MODULUS
        answer = self.send(producer_id, producer.epoch, base_sequence, record_count)
        assert answer == ("error", ErrorCode.out_of_order_sequence_number)

    @precondition(lambda self: bool(self.producers))
    @rule(index=st.integers(0, 1000), bump=st.integers(1, 3), record_count=st.integers(1, 4))
    def bump_epoch(self, index: int, bump: int, record_count: int) -> None:
        producer_id, producer = self.pick(index)
        answer = self.send(producer_id, producer.epoch + bump, 0, record_count)
        assert answer == ("accept", 0, 0)

    @precondition(lambda self: bool(self.producers))
    @rule(index=st.integers(0, 1000), base_sequence=st.integers(1, SEQUENCE_MAX))
    def new_epoch_not_at_zero(self, index: int, base_sequence: int) -> None:
        producer_id, producer = self.pick(index)
        answer = self.send(producer_id, producer.epoch + 1, base_sequence, 1)
        assert answer == ("error", ErrorCode.out_of_order_sequence_number)

    @precondition(lambda self: any(producer.epoch > 0 for producer in self.producers.values()))
    @rule(index=st.integers(0, 1000), lower=st.integers(1, 3))
    def stale_epoch(self, index: int, lower: int) -> None:
        """An older epoch is fenced even with the sequence the current epoch expects next."""
        fenced = [producer_id for producer_id, producer in sorted(self.producers.items()) if producer.epoch > 0]
        producer_id = fenced[index % len(fenced)]
        producer = self.producers[producer_id]
        epoch = max(producer.epoch - lower, 0)
        answer = self.send(producer_id, epoch, producer.next_sequence, 1)
        assert answer == ("error", ErrorCode.invalid_producer_epoch)

    @rule(record_count=st.integers(1, 3))
    def append_non_idempotent(self, record_count: int) -> None:
        header = header_of(-1, -1, -1, record_count)
        assert self.state.check(header) is None
        self.state.apply(header, self.next_offset, self.clock_ms)
        self.state.advance(self.next_offset + record_count)
        self.log.append(ModelBatch(-1, -1, -1, record_count, self.next_offset, self.clock_ms))
        self.next_offset += record_count

    @rule()
    def snapshot_and_reload(self) -> None:
        """A snapshot keeps only each producer's last batch (Kafka's ProducerSnapshot v1)."""
        data = self.state.snapshot_bytes()
        self.state = ProducerStateManager.from_snapshot(data, self.state.last_map_offset)
        for producer in self.producers.values():
            producer.window = producer.window[-1:]

    # --- invariants ----------------------------------------------------------------------------------

    @invariant()
    def offsets_strictly_increase_without_gaps(self) -> None:
        offset = 0
        for batch in self.log:
            assert batch.base_offset == offset
            offset += batch.record_count
        assert offset == self.next_offset == self.state.last_map_offset

    @invariant()
    def every_accepted_batch_is_in_the_log_once(self) -> None:
        keys = [
            (batch.producer_id, batch.producer_epoch, batch.base_sequence)
            for batch in self.log
            if batch.producer_id >= 0
        ]
        assert len(keys) == len(set(keys))

    @invariant()
    def state_matches_model(self) -> None:
        assert set(self.state.entries) == set(self.producers)
        for producer_id, producer in self.producers.items():
            entry = self.state.entries[producer_id]
            assert entry.producer_epoch == producer.epoch
            assert entry.last_sequence == producer.window[-1].last_sequence
            assert [batch.first_offset for batch in entry.batches] == [batch.base_offset for batch in producer.window]
            assert [batch.first_sequence for batch in entry.batches] == [b.base_sequence for b in producer.window]


TestProducerStateMachine = ProducerStateMachine.TestCase
TestProducerStateMachine.settings = settings(max_examples=120, stateful_step_count=40, deadline=None)


# --- single rules -----------------------------------------------------------------------------------------


def apply_at(state: ProducerStateManager, header: BatchHeader, base_offset: int, timestamp: int = 0) -> None:
    assert state.check(header) is None
    state.apply(header, base_offset, timestamp)
    state.advance(base_offset + header.record_count)


@pytest.mark.parametrize("base_sequence", [0, 1, 17, SEQUENCE_MAX])
@pytest.mark.parametrize("epoch", [0, 5])
def test_unknown_producer_is_accepted_at_any_sequence(base_sequence: int, epoch: int) -> None:
    state = ProducerStateManager()
    apply_at(state, header_of(8, 3, 100), 0)  # another producer's state does not matter
    assert state.check(header_of(7, epoch, base_sequence)) is None
    apply_at(state, header_of(7, epoch, base_sequence, 2), 1)
    assert state.entries[7].last_sequence == (base_sequence + 1) % SEQUENCE_MODULUS


def test_new_epoch_must_start_at_zero() -> None:
    state = ProducerStateManager()
    apply_at(state, header_of(7, 0, 0, 3), 0)
    with pytest.raises(KafkaError) as raised:
        state.check(header_of(7, 1, 3))
    assert raised.value.code == ErrorCode.out_of_order_sequence_number
    apply_at(state, header_of(7, 1, 0), 3)
    assert state.entries[7].producer_epoch == 1
    assert [batch.first_offset for batch in state.entries[7].batches] == [3], "a new epoch clears the window"
    with pytest.raises(KafkaError) as raised:
        state.check(header_of(7, 0, 3))
    assert raised.value.code == ErrorCode.invalid_producer_epoch


def test_sequence_wraps_from_int32_max_to_zero() -> None:
    state = ProducerStateManager()
    apply_at(state, header_of(7, 0, SEQUENCE_MAX - 1, 2), 0)  # sequences 2^31-2, 2^31-1
    assert state.entries[7].last_sequence == SEQUENCE_MAX
    for wrong in (SEQUENCE_MAX, 1):
        with pytest.raises(KafkaError) as raised:
            state.check(header_of(7, 0, wrong))
        assert raised.value.code == ErrorCode.out_of_order_sequence_number
    apply_at(state, header_of(7, 0, 0, 3), 2)
    assert state.entries[7].last_sequence == 2
    # A batch whose sequences themselves wrap (2^31-1, 0, 1) is checked and remembered as one batch.
    other = ProducerStateManager()
    apply_at(other, header_of(8, 0, SEQUENCE_MAX, 3), 0)
    assert other.entries[8].batches[-1].first_sequence == SEQUENCE_MAX
    duplicate = other.check(header_of(8, 0, SEQUENCE_MAX, 3))
    assert duplicate is not None and duplicate.base_offset == 0
    apply_at(other, header_of(8, 0, 2), 3)


def test_only_the_last_five_batches_are_recognised() -> None:
    state = ProducerStateManager()
    for index in range(7):
        apply_at(state, header_of(7, 0, index), index, timestamp=100 + index)
    for index in range(2, 7):
        assert state.check(header_of(7, 0, index)) == Duplicate(index, 100 + index)
    for index in range(2):
        with pytest.raises(KafkaError) as raised:
            state.check(header_of(7, 0, index))
        assert raised.value.code == ErrorCode.out_of_order_sequence_number


def populated_state() -> ProducerStateManager:
    state = ProducerStateManager()
    apply_at(state, header_of(7, 0, 0, 2), 0, timestamp=500)
    apply_at(state, header_of(7, 0, 2, 3), 2, timestamp=600)
    apply_at(state, header_of(9, 4, SEQUENCE_MAX, 2), 5, timestamp=700)
    state.advance(10)  # a non-idempotent batch at offsets 7..9
    state.entries[9].coordinator_epoch = 3
    state.entries[9].current_txn_first_offset = 5
    return state


def test_snapshot_round_trip() -> None:
    state = populated_state()
    restored = ProducerStateManager.from_snapshot(state.snapshot_bytes(), state.last_map_offset)
    assert restored.last_map_offset == state.last_map_offset == 10
    assert set(restored.entries) == {7, 9}
    for producer_id, entry in state.entries.items():
        again = restored.entries[producer_id]
        assert (again.producer_epoch, again.last_sequence, again.last_offset) == (
            entry.producer_epoch,
            entry.last_sequence,
            entry.last_offset,
        )
        assert (again.last_timestamp, again.coordinator_epoch, again.current_txn_first_offset) == (
            entry.last_timestamp,
            entry.coordinator_epoch,
            entry.current_txn_first_offset,
        )
        assert list(again.batches) == [entry.batches[-1]], "a snapshot keeps each producer's last batch only"
    assert restored.snapshot_bytes() == state.snapshot_bytes()
    # After a reload the last batch is still a duplicate, the one before it no longer is.
    assert restored.check(header_of(7, 0, 2, 3)) == Duplicate(2, 600)
    with pytest.raises(KafkaError):
        restored.check(header_of(7, 0, 0, 2))
    assert restored.check(header_of(7, 0, 5)) is None


@pytest.mark.parametrize("position", [0, 1, 2, 5, 6, 9, 20, -1])
def test_corrupt_snapshot_is_rejected(position: int) -> None:
    data = bytearray(populated_state().snapshot_bytes())
    data[position] ^= 0x40
    with pytest.raises(ValueError):
        ProducerStateManager.from_snapshot(bytes(data), 10)


@pytest.mark.parametrize("cut", [0, 3, 9, 30])
def test_torn_snapshot_is_rejected(cut: int) -> None:
    data = populated_state().snapshot_bytes()
    with pytest.raises(ValueError):
        ProducerStateManager.from_snapshot(data[:cut], 10)


def test_load_latest_snapshot_skips_a_corrupt_one(tmp_path: Path) -> None:
    older = ProducerStateManager()
    apply_at(older, header_of(7, 0, 0, 2), 0, timestamp=500)
    newer = populated_state()
    assert write_snapshot(OS_FILE_SYSTEM, tmp_path, older) == snapshot_path(tmp_path, 2)
    assert write_snapshot(OS_FILE_SYSTEM, tmp_path, newer) == snapshot_path(tmp_path, 10)
    assert snapshot_path(tmp_path, 10).name == "00000000000000000010.snapshot"
    assert list_snapshots(OS_FILE_SYSTEM, tmp_path) == [2, 10]
    loaded = load_latest_snapshot(OS_FILE_SYSTEM, tmp_path, 100, "orders-0")
    assert loaded is not None and loaded.last_map_offset == 10 and set(loaded.entries) == {7, 9}

    data = bytearray(snapshot_path(tmp_path, 10).read_bytes())
    data[len(data) // 2] ^= 0x01
    snapshot_path(tmp_path, 10).write_bytes(bytes(data))
    loaded = load_latest_snapshot(OS_FILE_SYSTEM, tmp_path, 100, "orders-0")
    assert loaded is not None and loaded.last_map_offset == 2
    assert set(loaded.entries) == {7} and loaded.entries[7].last_sequence == 1
    assert list_snapshots(OS_FILE_SYSTEM, tmp_path) == [2], "the corrupt snapshot is deleted"


def test_load_latest_snapshot_ignores_snapshots_past_the_log_end(tmp_path: Path) -> None:
    state = populated_state()
    write_snapshot(OS_FILE_SYSTEM, tmp_path, state)
    assert load_latest_snapshot(OS_FILE_SYSTEM, tmp_path, 9, "orders-0") is None
    assert list_snapshots(OS_FILE_SYSTEM, tmp_path) == []


def test_remove_expired() -> None:
    state = ProducerStateManager()
    apply_at(state, header_of(1, 0, 0), 0, timestamp=1_000)
    apply_at(state, header_of(2, 0, 0), 1, timestamp=5_000)
    apply_at(state, header_of(3, 0, 0), 2, timestamp=1_000)
    state.entries[3].current_txn_first_offset = 2  # an open transaction keeps its producer alive
    assert state.remove_expired(now_ms=5_999, expiration_ms=5_000) == 0
    assert state.remove_expired(now_ms=6_000, expiration_ms=5_000) == 1
    assert set(state.entries) == {2, 3}
    # Expired means unknown: any sequence is accepted again (Kafka, KIP-360).
    assert state.check(header_of(1, 0, 77)) is None
    with pytest.raises(KafkaError):
        state.check(header_of(2, 0, 77))
    assert state.remove_expired(now_ms=10_000, expiration_ms=5_000) == 1
    assert set(state.entries) == {3}


# --- in the partition log --------------------------------------------------------------------------------


def open_log(directory: Path, config: LogConfig | None = None, *, clean: bool = True) -> PartitionLog:
    return PartitionLog.open(
        directory,
        "orders",
        0,
        config or LogConfig(),
        local_data_dir(directory.parent),
        recovery_point=0,
        log_start_offset=0,
        clean_shutdown=clean,
        now_ms=0,
    )


def idempotent_batch(producer_id: int, base_sequence: int, value: bytes, records: int = 2) -> bytes:
    return build_batch(
        [(None, value)] * records,
        timestamp_ms=10_000 + base_sequence,
        producer_id=producer_id,
        producer_epoch=0,
        base_sequence=base_sequence,
    )


def write_batches(log: PartitionLog, count: int, producer_id: int = 42) -> list[bytes]:
    batches = []
    for index in range(count):
        batch = idempotent_batch(producer_id, 2 * index, b"value-%03d" % index)
        result = log.append(batch, parse_header(batch), 0)
        assert (result.base_offset, result.duplicate) == (2 * index, False)
        batches.append(batch)
    return batches


def assert_retry_is_duplicate(log: PartitionLog, batch: bytes, base_offset: int) -> None:
    end = log.log_end_offset
    result = log.append(batch, parse_header(batch), 0)
    assert result.duplicate and result.base_offset == base_offset
    assert result.timestamp == parse_header(batch).max_timestamp
    assert log.log_end_offset == end, "a duplicate must not be written"


def values_in(log: PartitionLog) -> list[bytes | None]:
    data = log.read(log.log_start_offset, 1 << 30, log.log_end_offset)
    return [record.value for position, _ in iter_batches(data) for record in iter_records(data, position)]


def test_retry_is_a_duplicate_before_and_after_a_clean_reopen(tmp_path: Path) -> None:
    log = open_log(tmp_path / "orders-0")
    batches = write_batches(log, 4)
    assert_retry_is_duplicate(log, batches[1], 2)
    log.close()
    assert list_snapshots(OS_FILE_SYSTEM, tmp_path / "orders-0") == [8], "a clean close snapshots at the log end offset"

    log = open_log(tmp_path / "orders-0")
    assert_retry_is_duplicate(log, batches[-1], 6)
    with pytest.raises(KafkaError) as raised:
        log.append(batches[0], parse_header(batches[0]), 0)
    assert raised.value.code == ErrorCode.out_of_order_sequence_number
    follow = idempotent_batch(42, 8, b"value-004")
    assert log.append(follow, parse_header(follow), 0).base_offset == 8
    assert values_in(log) == [b"value-%03d" % (i // 2) for i in range(10)]
    log.close()


def test_retry_is_a_duplicate_after_an_unclean_reopen(tmp_path: Path) -> None:
    crashed = open_log(tmp_path / "orders-0")
    batches = write_batches(crashed, 4)
    # No close: no snapshot, nothing checkpointed. Only the files the appends wrote remain.
    assert list_snapshots(OS_FILE_SYSTEM, tmp_path / "orders-0") == []

    log = open_log(tmp_path / "orders-0", clean=False)
    for segment in crashed.segments:
        segment.close()
    assert log.log_end_offset == 8
    assert log.producer_state.entries[42].last_sequence == 7
    assert_retry_is_duplicate(log, batches[-1], 6)
    assert_retry_is_duplicate(log, batches[-2], 4)
    follow = idempotent_batch(42, 8, b"value-004")
    assert log.append(follow, parse_header(follow), 0).base_offset == 8
    log.close()


def test_roll_writes_a_snapshot_at_the_new_segment_base_offset(tmp_path: Path) -> None:
    batch_size = len(idempotent_batch(42, 0, b"value-000"))
    config = LogConfig(segment_bytes=3 * batch_size)
    log = open_log(tmp_path / "orders-0", config)
    batches = write_batches(log, 4)
    assert [segment.base_offset for segment in log.segments] == [0, 6]
    assert (tmp_path / "orders-0" / "00000000000000000006.snapshot").is_file()
    assert list_snapshots(OS_FILE_SYSTEM, tmp_path / "orders-0") == [6]
    snapshot = ProducerStateManager.from_snapshot(snapshot_path(tmp_path / "orders-0", 6).read_bytes(), 6)
    assert snapshot.entries[42].last_sequence == 5 and snapshot.entries[42].last_offset == 5

    # Crash after one more batch: the roll snapshot plus a replay of the active segment rebuild the state.
    last = idempotent_batch(42, 8, b"value-004")
    assert log.append(last, parse_header(last), 0).base_offset == 8
    reopened = open_log(tmp_path / "orders-0", config, clean=False)
    for segment in log.segments:
        segment.close()
    assert reopened.producer_state.entries[42].last_sequence == 9
    assert_retry_is_duplicate(reopened, last, 8)
    assert_retry_is_duplicate(reopened, batches[-1], 6)
    reopened.close()
