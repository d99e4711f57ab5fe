"""RecordBatch v2 (magic 2): the 61-byte header, CRC-32C, validation and offset assignment.

Theory of operation: batches stay bytes. The produce path reads only the fixed-size header (all the
fields it needs are there, even for compressed batches), checks the CRC-32C over bytes [21, end) and
rewrites BaseOffset and PartitionLeaderEpoch, which the CRC does not cover. Records are decoded only for
internal topics and tests (`iter_records`, uncompressed batches only). Layout and rules follow Kafka's
`DefaultRecordBatch` and `LogValidator.validateBatch`; see docs/protocol.md, Record batches.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import crc32c as _crc32c

from oncelog.errors import ErrorCode, KafkaError

# Header field positions (DefaultRecordBatch).
BASE_OFFSET_POSITION = 0
LENGTH_POSITION = 8
PARTITION_LEADER_EPOCH_POSITION = 12
MAGIC_POSITION = 16
CRC_POSITION = 17
ATTRIBUTES_POSITION = 21
MAX_TIMESTAMP_POSITION = 35
BATCH_HEADER_BYTES = 61
LOG_OVERHEAD_BYTES = 12
"""BaseOffset + BatchLength: the bytes in front of what BatchLength counts."""

MAGIC_V2 = 2
COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_BIT = 0x08
TRANSACTIONAL_BIT = 0x10
CONTROL_BIT = 0x20
NO_TIMESTAMP = -1

_HEADER = struct.Struct(">qiibIhiqqqhii")
_PREFIX = struct.Struct(">qii")  # base offset, batch length, partition leader epoch


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """The fixed fields of one RecordBatch v2, as stored on disk or sent by a producer."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        """Bytes the whole batch occupies, header included."""
        return self.batch_length + LOG_OVERHEAD_BYTES

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_BIT)

    @property
    def last_sequence(self) -> int:
        """BaseSequence + LastOffsetDelta, wrapping past 2^31-1 to 0 (Kafka's `incrementSequence`)."""
        if self.base_sequence < 0:
            return self.base_sequence
        return (self.base_sequence + self.last_offset_delta) % (1 << 31)


def parse_header(data: bytes | bytearray | memoryview, position: int = 0) -> BatchHeader:
    """Read the header of the batch starting at `position`; the caller made sure 61 bytes are there."""
    return BatchHeader(*_HEADER.unpack_from(data, position))


def crc_of(data: bytes | bytearray | memoryview, position: int, size: int) -> int:
    """CRC-32C of the batch at `position` of `size` bytes, over [attributes, end)."""
    view = memoryview(data)[position + ATTRIBUTES_POSITION : position + size]
    return int(_crc32c.crc32c(view))


def crc32c(data: bytes | bytearray | memoryview) -> int:
    return int(_crc32c.crc32c(data))


def validate_client_batch(records: bytes, message_bytes_max: int) -> BatchHeader:
    """Check a Produce v3+ records field: exactly one magic-2 batch, sound, CRC-valid, not control.

    Mirrors `ProduceRequest.validateRecords` and `LogValidator.validateBatch`. Raises `KafkaError` with
    the code Kafka would return; never decodes or decompresses records.
    """
    size = len(records)
    if size < BATCH_HEADER_BYTES:
        raise KafkaError(ErrorCode.corrupt_message, f"records of {size} bytes hold no whole batch header")
    header = parse_header(records)
    if header.magic != MAGIC_V2:
        raise KafkaError(ErrorCode.invalid_record, f"magic {header.magic} is not 2")
    if header.size != size:
        # Either a torn batch or more than one batch: Produce v3+ allows exactly one per partition.
        code = ErrorCode.corrupt_message if header.size > size else ErrorCode.invalid_record
        raise KafkaError(code, f"batch length {header.size} does not match the {size} bytes sent")
    if size > message_bytes_max:
        raise KafkaError(ErrorCode.message_too_large, f"batch of {size} bytes exceeds {message_bytes_max}")
    if crc_of(records, 0, size) != header.crc:
        raise KafkaError(ErrorCode.corrupt_message, "CRC-32C mismatch")
    if header.record_count <= 0 or header.last_offset_delta + 1 != header.record_count:
        raise KafkaError(
            ErrorCode.invalid_record,
            f"record count {header.record_count} does not match last offset delta {header.last_offset_delta}",
        )
    if header.is_control:
        raise KafkaError(ErrorCode.invalid_record, "clients are not allowed to write control records")
    if header.producer_id >= 0 and header.base_sequence < 0:
        raise KafkaError(ErrorCode.invalid_record, "idempotent batch without a base sequence")
    if header.compression > 4:
        raise KafkaError(ErrorCode.unsupported_compression_type, f"compression codec {header.compression}")
    return header


def assigned_prefix(base_offset: int, batch_length: int, partition_leader_epoch: int) -> bytes:
    """The first 16 bytes of a stored batch: what the broker rewrites on append (outside the CRC)."""
    return _PREFIX.pack(base_offset, batch_length, partition_leader_epoch)


def with_log_append_time(records: bytes, now_ms: int) -> bytes:
    """Set the LogAppendTime bit and MaxTimestamp=now and recompute the CRC, as Kafka does for
    `message.timestamp.type=LogAppendTime` topics (records keep their own deltas)."""
    batch = bytearray(records)
    (attributes,) = struct.unpack_from(">h", batch, ATTRIBUTES_POSITION)
    struct.pack_into(">h", batch, ATTRIBUTES_POSITION, attributes | TIMESTAMP_TYPE_BIT)
    struct.pack_into(">q", batch, MAX_TIMESTAMP_POSITION, now_ms)
    struct.pack_into(">I", batch, CRC_POSITION, crc_of(batch, 0, len(batch)))
    return bytes(batch)


# --- building and reading records (internal topics, control batches, tests) -------------------------


def _zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


def encode_varint(value: int) -> bytes:
    """Signed zig-zag varint, as records use."""
    n = _zigzag(value) & 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def decode_varint(data: bytes | memoryview, position: int) -> tuple[int, int]:
    """Return (value, next position) of the signed zig-zag varint at `position`."""
    shift = 0
    n = 0
    while True:
        if position >= len(data):
            raise ValueError("varint runs past the end of the data")
        byte = data[position]
        position += 1
        n |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift > 63:
            raise ValueError("varint is too long")
    return (n >> 1) ^ -(n & 1), position


@dataclass(frozen=True, slots=True)
class Record:
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


def _encode_bytes(value: bytes | None) -> bytes:
    if value is None:
        return encode_varint(-1)
    return encode_varint(len(value)) + value


def encode_record(
    offset_delta: int,
    timestamp_delta: int,
    key: bytes | None,
    value: bytes | None,
    headers: tuple[tuple[str, bytes | None], ...] = (),
) -> bytes:
    body = bytearray(b"\x00")  # record attributes
    body += encode_varint(timestamp_delta)
    body += encode_varint(offset_delta)
    body += _encode_bytes(key)
    body += _encode_bytes(value)
    body += encode_varint(len(headers))
    for header_key, header_value in headers:
        body += _encode_bytes(header_key.encode())
        body += _encode_bytes(header_value)
    return encode_varint(len(body)) + bytes(body)


def build_batch(
    records: Sequence[tuple[bytes | None, bytes | None]],
    *,
    base_offset: int = 0,
    timestamp_ms: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    transactional: bool = False,
    control: bool = False,
    partition_leader_epoch: int = 0,
    headers: Sequence[tuple[tuple[str, bytes | None], ...]] | None = None,
    compress: Callable[[bytes], bytes] | None = None,
    compression: int = 0,
) -> bytes:
    """Encode a RecordBatch v2 of (key, value) records (with `headers[i]` for record i, if given), all
    with one timestamp; uncompressed unless `compress` (codec `compression`'s, protocol.compression)."""
    assert records, "a batch holds at least one record"
    body = b"".join(encode_record(i, 0, key, value, headers[i] if headers else ())
                    for i, (key, value) in enumerate(records))
    if compress is not None:
        body = compress(body)
    attributes = (TRANSACTIONAL_BIT if transactional else 0) | (CONTROL_BIT if control else 0) | compression
    after_crc = struct.pack(
        ">hiqqqhii",
        attributes,
        len(records) - 1,
        timestamp_ms,
        timestamp_ms,
        producer_id,
        producer_epoch,
        base_sequence,
        len(records),
    ) + body
    crc = crc32c(after_crc)
    batch_length = len(after_crc) + 4 + 1 + 4  # leader epoch + magic + crc
    return _PREFIX.pack(base_offset, batch_length, partition_leader_epoch) + struct.pack(
        ">bI", MAGIC_V2, crc
    ) + after_crc


def retain_records(data: bytes | memoryview, position: int, keep: set[int]) -> bytes:
    """The uncompressed batch at `position` with only the records whose offsets are in `keep`.

    Like Kafka's `MemoryRecords.filterTo`, the batch keeps its base offset, last offset delta, producer
    id, epoch and base sequence (so producer state and segment offsets stay what they were); only the
    record count, the records and the CRC change.
    """
    header = parse_header(data, position)
    kept = [record for record in iter_records(data, position) if record.offset in keep]
    body = b"".join(
        encode_record(record.offset - header.base_offset, record.timestamp - header.base_timestamp,
                      record.key, record.value, record.headers)
        for record in kept
    )
    after_crc = struct.pack(
        ">hiqqqhii", header.attributes, header.last_offset_delta, header.base_timestamp, header.max_timestamp,
        header.producer_id, header.producer_epoch, header.base_sequence, len(kept),
    ) + body
    batch_length = len(after_crc) + 4 + 1 + 4
    return _PREFIX.pack(header.base_offset, batch_length, header.partition_leader_epoch) + struct.pack(
        ">bI", MAGIC_V2, crc32c(after_crc)
    ) + after_crc


CONTROL_ABORT = 0
CONTROL_COMMIT = 1
_CONTROL_KEY = struct.Struct(">hh")  # version 0, type
_MARKER_VALUE = struct.Struct(">hi")  # version 0, coordinator epoch


def build_marker(producer_id: int, producer_epoch: int, coordinator_epoch: int, commit: bool,
                 timestamp_ms: int) -> bytes:
    """A COMMIT or ABORT control batch (`MemoryRecords.writeEndTransactionalMarker`): one record with a
    4-byte key (version 0, type) and a 6-byte value (version 0, coordinator epoch), 78 bytes in all."""
    key = _CONTROL_KEY.pack(0, CONTROL_COMMIT if commit else CONTROL_ABORT)
    value = _MARKER_VALUE.pack(0, coordinator_epoch)
    return build_batch([(key, value)], timestamp_ms=timestamp_ms, producer_id=producer_id,
                       producer_epoch=producer_epoch, base_sequence=-1, transactional=True, control=True)


def read_marker(data: bytes | memoryview, position: int) -> tuple[int, int] | None:
    """(control type, coordinator epoch) of the control batch at `position`; None for an empty batch or
    a control record we do not know (clients and brokers must ignore unknown types)."""
    for record in iter_records(data, position):
        if record.key is None or len(record.key) < _CONTROL_KEY.size:
            return None
        _version, control_type = _CONTROL_KEY.unpack_from(record.key)
        if control_type not in (CONTROL_ABORT, CONTROL_COMMIT):
            return None
        coordinator_epoch = -1
        if record.value is not None and len(record.value) >= _MARKER_VALUE.size:
            coordinator_epoch = _MARKER_VALUE.unpack_from(record.value)[1]
        return control_type, coordinator_epoch
    return None


def iter_batches(data: bytes | memoryview) -> Iterator[tuple[int, BatchHeader]]:
    """Yield (position, header) of each whole batch in `data`; stops at the first incomplete one."""
    position = 0
    end = len(data)
    while position + BATCH_HEADER_BYTES <= end:
        header = parse_header(data, position)
        if header.batch_length < BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES or position + header.size > end:
            return
        yield position, header
        position += header.size


def iter_records(data: bytes | memoryview, position: int = 0) -> Iterator[Record]:
    """Decode the records of the uncompressed batch at `position` (internal topics and tests)."""
    header = parse_header(data, position)
    if header.compression != 0:
        raise ValueError("iter_records reads uncompressed batches only")
    view = memoryview(data)[: position + header.size]
    yield from decode_records(view[position + BATCH_HEADER_BYTES:], header)


def decode_records(body: bytes | memoryview, header: BatchHeader, *, headers: bool = True) -> Iterator[Record]:
    """The records of a batch from its (decompressed) records section. Each record must end exactly where
    its length says (ValueError otherwise), so nothing is read past a record and a header count cannot
    claim more headers than its bytes hold. `headers=False` skips the headers without reading them (the
    broker's checks need only keys and timestamps: a record stuffed with millions of empty headers costs
    them nothing)."""
    view = memoryview(body)
    cursor = 0
    for _ in range(header.record_count):
        length, cursor = decode_varint(view, cursor)
        end = cursor + length
        if length < 0 or end > len(view):
            raise ValueError("record length runs past the end of the batch")
        record = view[:end]
        cursor += 1  # record attributes
        timestamp_delta, cursor = decode_varint(record, cursor)
        offset_delta, cursor = decode_varint(record, cursor)
        key, cursor = _decode_bytes(record, cursor)
        value, cursor = _decode_bytes(record, cursor)
        decoded: list[tuple[str, bytes | None]] = []
        if headers:
            header_count, cursor = decode_varint(record, cursor)
            if not 0 <= header_count <= (end - cursor) // 2:  # each header takes at least two bytes
                raise ValueError("bad header count")
            for _h in range(header_count):
                header_key, cursor = _decode_bytes(record, cursor)
                header_value, cursor = _decode_bytes(record, cursor)
                decoded.append(((header_key or b"").decode(errors="replace"), header_value))
            if cursor != end:
                raise ValueError("record length does not match its fields")
        elif cursor > end:
            raise ValueError("record fields run past its length")
        cursor = end
        yield Record(
            offset=header.base_offset + offset_delta,
            timestamp=header.base_timestamp + timestamp_delta,
            key=key,
            value=value,
            headers=tuple(decoded),
        )


def _decode_bytes(view: memoryview, cursor: int) -> tuple[bytes | None, int]:
    length, cursor = decode_varint(view, cursor)
    if length < 0:
        return None, cursor
    if cursor + length > len(view):
        raise ValueError("record field runs past the end of the batch")
    return bytes(view[cursor : cursor + length]), cursor + length


def visible_batches(records: bytes | memoryview, aborted_transactions: Iterable[tuple[int, int]],
                    read_committed: bool) -> Iterator[tuple[int, BatchHeader]]:
    """(position, header) of the batches a consumer hands its application from one partition's fetch
    data: control batches are skipped and, for read_committed, so are the batches of aborted
    transactions — a producer's batches from an aborted transaction's (first offset, producer id) up to
    its next control batch, as Kafka's consumers filter them (the Fetch answer's aborted_transactions)."""
    aborted = sorted(aborted_transactions)
    aborting: set[int] = set()
    for position, header in iter_batches(records):
        while aborted and aborted[0][0] <= header.base_offset:
            aborting.add(aborted.pop(0)[1])
        if header.is_control:
            aborting.discard(header.producer_id)
            continue
        if read_committed and header.is_transactional and header.producer_id in aborting:
            continue
        yield position, header


def first_record_at(batch: bytes, header: BatchHeader, timestamp: int, min_offset: int = 0) -> tuple[int, int]:
    """(offset, timestamp) of the first record of `batch` stamped at or after `timestamp`, whose max
    timestamp is (Kafka's `LogSegment.findOffsetByTimestamp`, which decodes the one batch it lands in).
    LogAppendTime stamps every record with the batch's max timestamp; a batch this process cannot
    decompress (snappy/lz4/zstd without cramjam) answers its base offset, which still holds the record.
    Records below `min_offset` (the log start offset) are not candidates, as in Kafka."""
    from oncelog.protocol.compression import CompressionError, decompress

    if header.attributes & TIMESTAMP_TYPE_BIT:
        return max(header.base_offset, min_offset), header.max_timestamp
    try:
        body = decompress(header.compression, batch[BATCH_HEADER_BYTES:header.size])
        for record in decode_records(body, header, headers=False):
            if record.timestamp >= timestamp and record.offset >= min_offset:
                return record.offset, record.timestamp
    except (CompressionError, ValueError):
        pass
    return max(header.base_offset, min_offset), header.max_timestamp


def first_record_where(batch: bytes, header: BatchHeader, wrong: Callable[[Record], bool]) -> int | None:
    """Index in the batch of its first record for which `wrong(record)`, or None: the checks Kafka's
    LogValidator makes per record (a key on compacted topics, timestamps within the topic's window).
    A batch whose records cannot be read counts as wrong at 0."""
    from oncelog.protocol.compression import CompressionError, decompress

    try:
        body = decompress(header.compression, batch[BATCH_HEADER_BYTES:header.size])
        for index, record in enumerate(decode_records(body, header, headers=False)):
            if wrong(record):
                return index
    except (CompressionError, ValueError):
        return 0
    return None


def recompressed(batch: bytes, header: BatchHeader, codec: int, level: int | None = None) -> bytes:
    """The client batch re-encoded with codec `codec` (a topic's compression.type other than `producer`,
    as Kafka's LogValidator does): the records, checked one by one, unchanged; every header field kept
    but the codec bits, the length and the CRC. CompressionError if the batch's own codec cannot be
    read, ValueError if its records are malformed."""
    from oncelog.protocol.compression import compress, decompress

    records = decompress(header.compression, batch[BATCH_HEADER_BYTES:header.size])
    if sum(1 for _record in decode_records(records, header, headers=False)) != header.record_count:
        raise ValueError("the batch holds fewer records than it says")  # (decode_records checks each one)
    body = compress(codec, records, level)
    attributes = (header.attributes & ~COMPRESSION_MASK) | codec
    after_crc = struct.pack(">h", attributes) + batch[ATTRIBUTES_POSITION + 2:BATCH_HEADER_BYTES] + body
    return _PREFIX.pack(header.base_offset, len(after_crc) + 4 + 1 + 4, header.partition_leader_epoch) + \
        struct.pack(">bI", MAGIC_V2, crc32c(after_crc)) + after_crc
