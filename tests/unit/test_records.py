"""RecordBatch v2 validation, offset assignment and record decoding."""

from __future__ import annotations

import struct

import pytest

from oncelog.errors import ErrorCode, KafkaError
from oncelog.protocol import records
from oncelog.protocol.records import (
    BATCH_HEADER_BYTES,
    build_batch,
    crc_of,
    iter_batches,
    iter_records,
    parse_header,
    validate_client_batch,
    with_log_append_time,
)

LIMIT = 1_048_588


def code_of(batch: bytes, limit: int = LIMIT) -> ErrorCode:
    with pytest.raises(KafkaError) as raised:
        validate_client_batch(batch, limit)
    return raised.value.code


def test_valid_batch_header_fields() -> None:
    batch = build_batch([(b"k", b"v"), (None, b"w")], timestamp_ms=1000, producer_id=7, producer_epoch=1,
                        base_sequence=10)
    header = validate_client_batch(batch, LIMIT)
    assert header.record_count == 2 and header.last_offset_delta == 1
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (7, 1, 10)
    assert header.last_sequence == 11
    assert header.size == len(batch)


def test_sequence_wraps_past_int32_max() -> None:
    batch = build_batch([(None, b"a"), (None, b"b")], producer_id=1, producer_epoch=0, base_sequence=2**31 - 1)
    assert parse_header(batch).last_sequence == 0


def test_corrupt_crc_is_corrupt_message() -> None:
    batch = bytearray(build_batch([(None, b"value")]))
    batch[-1] ^= 0xFF
    assert code_of(bytes(batch)) == ErrorCode.corrupt_message


def test_torn_batch_is_corrupt_and_two_batches_are_invalid() -> None:
    batch = build_batch([(None, b"value")])
    assert code_of(batch[:-3]) == ErrorCode.corrupt_message
    assert code_of(batch[:30]) == ErrorCode.corrupt_message
    assert code_of(batch + batch) == ErrorCode.invalid_record


def test_wrong_magic_count_mismatch_and_control_batches_are_invalid() -> None:
    batch = bytearray(build_batch([(None, b"value")]))
    batch[16] = 1
    assert code_of(bytes(batch)) == ErrorCode.invalid_record
    mismatched = bytearray(build_batch([(None, b"a"), (None, b"b")]))
    struct.pack_into(">i", mismatched, 57, 3)  # record count 3 with last offset delta 1
    struct.pack_into(">I", mismatched, 17, crc_of(mismatched, 0, len(mismatched)))
    assert code_of(bytes(mismatched)) == ErrorCode.invalid_record
    control = build_batch([(b"\x00\x00\x00\x01", b"\x00\x00\x00\x00\x00\x00")], control=True, transactional=True,
                          producer_id=1, producer_epoch=0)
    assert code_of(control) == ErrorCode.invalid_record


def test_idempotent_batch_without_sequence_is_invalid() -> None:
    assert code_of(build_batch([(None, b"a")], producer_id=5, producer_epoch=0)) == ErrorCode.invalid_record


def test_oversized_batch_is_message_too_large() -> None:
    batch = build_batch([(None, b"x" * 500)])
    assert code_of(batch, limit=len(batch) - 1) == ErrorCode.message_too_large
    validate_client_batch(batch, len(batch))


def test_log_append_time_sets_bit_timestamp_and_a_valid_crc() -> None:
    batch = build_batch([(None, b"a")], timestamp_ms=5)
    rewritten = with_log_append_time(batch, 123_456)
    header = validate_client_batch(rewritten, LIMIT)
    assert header.attributes & records.TIMESTAMP_TYPE_BIT
    assert header.max_timestamp == 123_456


def test_records_round_trip_and_batch_iteration() -> None:
    first = build_batch([(b"k1", b"v1"), (None, None)], base_offset=10, timestamp_ms=77)
    second = build_batch([(b"k2", b"v2")], base_offset=12)
    data = first + second + first[:BATCH_HEADER_BYTES]  # a torn third batch is not yielded
    found = list(iter_batches(data))
    assert [(position, header.base_offset) for position, header in found] == [(0, 10), (len(first), 12)]
    decoded = list(iter_records(first))
    assert [(r.offset, r.key, r.value, r.timestamp) for r in decoded] == [(10, b"k1", b"v1", 77), (11, None, None, 77)]


def test_varint_round_trip() -> None:
    for value in (0, 1, -1, 63, -64, 64, 2**31 - 1, -(2**31), 2**62):
        encoded = records.encode_varint(value)
        assert records.decode_varint(encoded, 0) == (value, len(encoded))


def test_records_are_read_within_their_length_and_checks_skip_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found: a small compressed batch holding one record with millions of empty headers made the broker
    build every header on the event loop while checking keys or timestamps."""
    from oncelog.protocol import records as records_module
    from oncelog.protocol.records import BATCH_HEADER_BYTES, decode_records, encode_record, parse_header

    many = tuple(("", None) for _ in range(50_000))
    batch = build_batch([(b"k", b"v")], headers=[many])
    header = parse_header(batch)
    body = batch[BATCH_HEADER_BYTES:]
    calls = []
    original = records_module._decode_bytes
    monkeypatch.setattr(records_module, "_decode_bytes", lambda *a: calls.append(1) or original(*a))
    [record] = list(decode_records(body, header, headers=False))
    assert (record.key, record.value, record.headers, len(calls)) == (b"k", b"v", (), 2)
    assert len(next(iter(decode_records(body, header))).headers) == 50_000
    lying = bytearray(encode_record(0, 0, b"k", b"v", (("h", b"x"),)))
    lying[-5] = 0x7E  # the header count (varint 1 → 63) now claims more headers than the record holds
    with pytest.raises(ValueError):
        list(decode_records(bytes(lying), header))
