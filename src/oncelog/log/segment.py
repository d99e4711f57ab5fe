"""One log segment: a `.log` file of RecordBatch v2 batches with its sparse offset and time indexes.

Theory of operation (mirrors Kafka's `LogSegment`): the segment is named by its base offset
(`{base_offset:020d}.log`, `.index`, `.timeindex`) and only ever grows at the end. The log file is
opened through the file-system seam (`oncelog.fs`) for appending, lazily, and may be closed again by
the open-file budget once everything in it is fsynced; `size` (the byte position of the end) is kept
in memory, so the file is never stat'ed on the hot path. An append is one `writev` of the
broker-rewritten 16-byte prefix and the rest of the producer's bytes, so the batch is never copied.
Every `index_interval_bytes` the batch being appended gets an offset index entry (its last offset,
Kafka's choice) and, if the segment's maximum timestamp grew, a time index entry.

An append is all or nothing: if any write of it fails (a full disk after the log write but before the
index write, say), the log file and both indexes are cut back to where they were and the error is
raised with memory unchanged, so the next append goes to the same offset and position and nothing
after it can land behind a hole. If even the cut fails, `RollbackFailed` is raised and the segment is
`broken`: its owner must take the partition offline.

Reads return whole batches only. The offset index gives a position at or before the batch that holds
the start offset; one `os.pread` of `max_bytes` plus one index interval usually covers both the scan
to the start batch and the batches returned, and the batch headers are walked in memory.

Opening an existing segment is cheap: the data before the last offset index entry is trusted, and the
batches after it (about one index interval) are walked to find the next offset and the maximum timestamp
and to check the tail is whole. If that check fails, or the owner knows the shutdown was unclean,
`recover` validates every batch (length, magic, CRC-32C, increasing offsets), rebuilds both indexes and
cuts the file at the first bad byte.

Threads: the owner (the event loop) does everything except `fsync`, which a flusher may run in a worker
thread; a lock makes closing wait for an fsync in progress. A closed file has nothing left to fsync:
the open-file budget only closes files whose bytes are all fsynced.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from oncelog.fs import DataDir, File, RollbackFailed
from oncelog.protocol.records import (
    BATCH_HEADER_BYTES,
    LOG_OVERHEAD_BYTES,
    MAGIC_V2,
    NO_TIMESTAMP,
    BatchHeader,
    crc_of,
    first_record_at,
    parse_header,
)

from .index import INT32_MAX, OffsetIndex, TimeIndex

BATCH_LENGTH_MIN = BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES
"""The smallest BatchLength a well-formed batch can have: a header and no records."""

SCAN_CHUNK_BYTES = 64 * 1024
"""Bytes read at a time when only batch headers are needed (open-time tail check, timestamp search)."""

RECOVERY_CHUNK_BYTES = 1024 * 1024
"""Bytes read at a time by `recover`, which needs every byte for the CRC."""


def segment_file_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:020d}{suffix}"


class LogSegment:
    """A `.log` file and its indexes. Not thread-safe except for `fsync` (see the module docstring)."""

    def __init__(
        self,
        directory: Path,
        base_offset: int,
        data_dir: DataDir,
        *,
        index_interval_bytes: int = 4096,
        opened_ms: int = 0,
    ) -> None:
        assert base_offset >= 0 and index_interval_bytes >= 0
        self._directory = directory
        self._base_offset = base_offset
        self._data_dir = data_dir
        self._fs = data_dir.fs
        self._index_interval_bytes = index_interval_bytes
        self._opened_ms = opened_ms
        self.log_path = directory / segment_file_name(base_offset, ".log")
        existed = self._fs.exists(self.log_path)
        # A file's directory entry must reach the disk before the file's data counts as durable. An
        # existing file is no proof of that: a roll that failed after creating it leaves it behind, and
        # the next roll opens it again (the simulation found acknowledged records lost that way).
        self._directory_synced = False
        self._lock = threading.Lock()
        self._file: File | None = None
        self._closed = False
        self.broken = False
        """A failed change could not be undone: the file no longer matches memory (see RollbackFailed)."""
        self._size = self._fs.file_size(self.log_path) if existed else self._open().size()
        self._synced_size = self._size
        """Bytes known to be fsynced (all of an existing file: it was fsynced before or is recovered now)."""
        self._next_offset = base_offset
        self._max_timestamp = NO_TIMESTAMP
        self._offset_of_max_timestamp = base_offset
        self._bytes_since_index_entry = 0
        self._offset_index = OffsetIndex(
            directory / segment_file_name(base_offset, ".index"), data_dir, base_offset, self._size
        )
        tail_whole, tail_max = self._scan_tail()
        self._time_index = TimeIndex(
            directory / segment_file_name(base_offset, ".timeindex"), data_dir, base_offset, self._next_offset
        )
        self._combine_max_timestamp(tail_max)
        # A missing offset index on a non-empty segment is rebuilt by recovery rather than scanned
        # around on every read.
        self.needs_recovery = not tail_whole or (self._size > 0 and not self._offset_index.existed)
        self._roll_base_ms: int | None = opened_ms if self._size > 0 else None

    # --- properties -------------------------------------------------------------------------------

    @property
    def base_offset(self) -> int:
        return self._base_offset

    @property
    def size(self) -> int:
        """Bytes in the log file (the position where the next batch goes)."""
        return self._size

    @property
    def next_offset(self) -> int:
        """Offset after the last batch, or the base offset when the segment is empty."""
        return self._next_offset

    @property
    def max_timestamp(self) -> int:
        """Largest batch MaxTimestamp in the segment, or -1 when no batch carries one."""
        return self._max_timestamp

    @property
    def roll_base_ms(self) -> int | None:
        """When the segment's time-based roll clock started: the wall-clock time of the first append, or
        the time the segment was opened if it already held data; None while empty."""
        return self._roll_base_ms

    @property
    def last_modified_ms(self) -> int:
        """The log file's mtime, which retention uses when batches carry no timestamps (as Kafka)."""
        return self._fs.mtime_ns(self.log_path) // 1_000_000

    @property
    def closed(self) -> bool:
        """Closed for good (the log is closing, or the segment was deleted or replaced)."""
        return self._closed

    # --- the file ---------------------------------------------------------------------------------

    def _open(self) -> File:
        """The log file, opened on first use (and again after the open-file budget closed it)."""
        assert not self._closed, "use of a closed segment"
        file = self._file
        if file is None:
            file = self._file = self._fs.open(self.log_path)
        self._data_dir.open_files.touch(self)
        return file

    def close_if_idle(self) -> bool:
        """Close the file unless it holds bytes not yet fsynced (called by the open-file budget)."""
        with self._lock:
            if self._file is None:
                return True
            if self._synced_size < self._size:
                return False
            file, self._file = self._file, None
        file.close()
        return True

    # --- writing ----------------------------------------------------------------------------------

    def append(
        self,
        prefix: bytes,
        rest: memoryview | bytes,
        first_offset: int,
        last_offset: int,
        max_timestamp: int,
        *,
        now_ms: int,
    ) -> int:
        """Write one batch (`prefix` + `rest`) at the end; return the position it was written at.

        All or nothing: on an I/O error the files are cut back and memory is unchanged (or, if the cut
        fails, the segment is `broken` and RollbackFailed is raised)."""
        assert not self.broken, "append to a broken segment"
        assert self._next_offset <= first_offset <= last_offset
        assert last_offset - self._base_offset <= INT32_MAX
        position = self._size
        size = len(prefix) + len(rest)
        assert position + size <= INT32_MAX, "index positions are int32: the owner rolls before this"
        file = self._open()
        offset_entry, time_entry, max_state, since = self._index_entries(position, size, last_offset, max_timestamp)
        index_lengths = (len(self._offset_index), len(self._time_index))
        try:
            self._write(file, [memoryview(prefix), memoryview(rest)])
            if offset_entry is not None:
                self._offset_index.append(*offset_entry)
            if time_entry is not None:
                self._time_index.append(*time_entry)
        except OSError as error:
            self._roll_back(file, position, index_lengths, error)
            raise
        file.start_writeback(position, size)
        self._size += size
        self._max_timestamp, self._offset_of_max_timestamp = max_state
        self._bytes_since_index_entry = since
        self._next_offset = last_offset + 1
        if self._roll_base_ms is None:
            self._roll_base_ms = now_ms
        return position

    @staticmethod
    def _write(file: File, buffers: list[memoryview]) -> None:
        while buffers:
            written = file.writev(buffers)
            while buffers and written >= len(buffers[0]):
                written -= len(buffers[0])
                buffers.pop(0)
            if buffers and written:
                buffers[0] = buffers[0][written:]

    def _roll_back(self, file: File, size: int, index_lengths: tuple[int, int], error: OSError) -> None:
        """Undo a failed append: the log file back to `size`, the indexes back to their entry counts."""
        try:
            file.truncate(size)
            self._offset_index.keep(index_lengths[0])
            self._time_index.keep(index_lengths[1])
        except (OSError, RollbackFailed) as second:
            self.broken = True
            raise RollbackFailed(f"segment {self.log_path.name}: cannot undo a failed append ({second})") from error

    def _index_entries(
        self, position: int, size: int, last_offset: int, max_timestamp: int
    ) -> tuple[tuple[int, int] | None, tuple[int, int] | None, tuple[int, int], int]:
        """What appending a batch at `position` adds to the indexes: (offset entry, time entry, (max
        timestamp, its offset), bytes since the last offset entry), without changing anything."""
        max_state = (self._max_timestamp, self._offset_of_max_timestamp)
        if max_timestamp > max_state[0]:
            max_state = (max_timestamp, last_offset)
        offset_entry = time_entry = None
        since = self._bytes_since_index_entry
        # Position 0 needs no entry: a lookup with no entry at or below the offset answers 0 anyway.
        if position > 0 and since >= self._index_interval_bytes:
            offset_entry = (last_offset, position)
            # Time index entries only when the maximum grew, so both of its columns stay increasing.
            last_time_entry = self._time_index.last_entry()
            if max_state[0] > NO_TIMESTAMP and (
                last_time_entry is None or (max_state[0] > last_time_entry[0] and max_state[1] > last_time_entry[1])
            ):
                time_entry = max_state
            since = 0
        return offset_entry, time_entry, max_state, since + size

    def _track(self, position: int, size: int, last_offset: int, max_timestamp: int) -> None:
        """Account for a batch already in the file at `position` (recovery): indexes and maximum timestamp."""
        offset_entry, time_entry, max_state, since = self._index_entries(position, size, last_offset, max_timestamp)
        if offset_entry is not None:
            self._offset_index.append(*offset_entry)
        if time_entry is not None:
            self._time_index.append(*time_entry)
        self._max_timestamp, self._offset_of_max_timestamp = max_state
        self._bytes_since_index_entry = since

    def truncate_to(self, offset: int) -> int:
        """Drop every batch holding an offset ≥ `offset` (Kafka's `LogSegment.truncateTo`: a batch that
        straddles `offset` goes whole). Returns the number of bytes removed."""
        if offset >= self._next_offset:
            return 0
        cut = self._size
        for position, header in self._walk(self._offset_index.lookup(offset), self._size):
            if header.last_offset >= offset:
                cut = position
                break
        removed = self._size - cut
        self._open().truncate(cut)
        self._size = cut
        self._synced_size = min(self._synced_size, cut)
        self._offset_index.truncate_to(offset)
        self._time_index.truncate_to(offset)
        _tail_whole, tail_max = self._scan_tail()
        self._combine_max_timestamp(tail_max)
        if self._size == 0:
            self._roll_base_ms = None
        return removed

    # --- reading ----------------------------------------------------------------------------------

    def read(
        self, start_offset: int, max_bytes: int, max_offset_exclusive: int, min_one_batch: bool
    ) -> bytes:
        """Whole batches from the one holding `start_offset`, stopping before a batch whose base offset is
        ≥ `max_offset_exclusive` and after at most `max_bytes` bytes, except that with `min_one_batch` an
        oversized first batch is returned whole (KIP-74)."""
        return self.read_extent(start_offset, max_bytes, max_offset_exclusive, min_one_batch)[0]

    def read_extent(
        self, start_offset: int, max_bytes: int, max_offset_exclusive: int, min_one_batch: bool
    ) -> tuple[bytes, int]:
        """`read`, plus the offset a follow-up read would start at: the offset after the last batch
        returned, or `start_offset` when nothing was returned."""
        assert max_bytes >= 0
        if start_offset >= min(self._next_offset, max_offset_exclusive):
            return b"", start_offset
        position = self._offset_index.lookup(start_offset)
        # Enough to walk from the index entry to the start batch (about one index interval) and to hold
        # everything we may return, so one pread is usually all it takes.
        chunk_bytes = max_bytes + self._index_interval_bytes + BATCH_HEADER_BYTES
        buffer_position, buffer = position, b""
        start = end = -1
        resume_offset = start_offset
        while position + BATCH_HEADER_BYTES <= self._size:
            if position + BATCH_HEADER_BYTES > buffer_position + len(buffer):
                buffer_position = position
                buffer = self._pread(position, min(chunk_bytes, self._size - position))
            header = parse_header(buffer, position - buffer_position)
            assert header.batch_length >= BATCH_LENGTH_MIN, "a validated segment holds only whole batches"
            if start < 0:
                if header.last_offset < start_offset:
                    position += header.size
                    continue
                if header.base_offset >= max_offset_exclusive:
                    break
                start = position
                if header.size > max_bytes:
                    if min_one_batch:
                        end, resume_offset = position + header.size, header.next_offset
                    break
            elif header.base_offset >= max_offset_exclusive or position + header.size - start > max_bytes:
                break
            position += header.size
            end, resume_offset = position, header.next_offset
        if end < 0:
            return b"", start_offset
        if buffer_position <= start and end <= buffer_position + len(buffer):
            return buffer[start - buffer_position : end - buffer_position], resume_offset
        return self._pread(start, end - start), resume_offset

    def find_offset_for_timestamp(self, timestamp: int, min_offset: int = 0) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record stamped at or after `timestamp`, as Kafka's
        `LogSegment.findOffsetByTimestamp`: the time index finds the first batch whose max timestamp is
        ≥ it, and that one batch is decoded (`records.first_record_at`)."""
        if self._max_timestamp < timestamp:
            return None
        position = self._offset_index.lookup(self._time_index.lookup(timestamp))
        for found, header in self._walk(position, self._size):
            if header.max_timestamp >= timestamp and header.last_offset >= min_offset:
                return first_record_at(self._pread(found, header.size), header, timestamp, min_offset)
        return None

    def _pread(self, position: int, size: int) -> bytes:
        # Short reads are legal: loop until we have `size` bytes or reach the end of the file.
        chunks: list[bytes] = []
        file = self._open()
        while size > 0:
            chunk = file.pread(size, position)
            if not chunk:
                break
            chunks.append(chunk)
            position += len(chunk)
            size -= len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _walk(self, position: int, end: int) -> Iterator[tuple[int, BatchHeader]]:
        """Yield (position, header) of each batch between `position` and `end`, reading headers in
        chunks; stops at a header whose batch cannot be whole (too short, or running past `end`)."""
        buffer_position, buffer = position, b""
        while position + BATCH_HEADER_BYTES <= end:
            if position + BATCH_HEADER_BYTES > buffer_position + len(buffer):
                buffer_position = position
                buffer = self._pread(position, min(SCAN_CHUNK_BYTES, end - position))
                if len(buffer) < BATCH_HEADER_BYTES:
                    return
            header = parse_header(buffer, position - buffer_position)
            if header.batch_length < BATCH_LENGTH_MIN or position + header.size > end:
                return
            yield position, header
            position += header.size

    # --- loading and recovery ---------------------------------------------------------------------

    def _plausible(self, header: BatchHeader, base_offset_min: int) -> bool:
        return (
            header.magic == MAGIC_V2
            and header.batch_length >= BATCH_LENGTH_MIN
            and header.last_offset_delta >= 0
            and header.base_offset >= base_offset_min
            and header.last_offset - self._base_offset <= INT32_MAX
        )

    def _scan_tail(self) -> tuple[bool, tuple[int, int]]:
        """Walk the batches after the last offset index entry: set the next offset and the bytes since
        that entry; return whether they end exactly at `size`, and (max timestamp, its offset) seen."""
        entry = self._offset_index.last_entry()
        start = entry[1] if entry is not None else 0
        next_offset = self._base_offset
        tail_max = (NO_TIMESTAMP, self._base_offset)
        end = start
        for position, header in self._walk(start, self._size):
            indexed_batch_mismatch = (
                entry is not None and position == start and header.last_offset != entry[0]
            )
            if indexed_batch_mismatch or not self._plausible(header, next_offset):
                break
            next_offset = header.next_offset
            if header.max_timestamp > tail_max[0]:
                tail_max = (header.max_timestamp, header.last_offset)
            end = position + header.size
        self._next_offset = next_offset
        self._bytes_since_index_entry = end - start
        return end == self._size, tail_max

    def _combine_max_timestamp(self, tail_max: tuple[int, int]) -> None:
        # The last time index entry holds the maximum over every batch up to the last offset index
        # entry; the tail walk covers the rest.
        time_entry = self._time_index.last_entry()
        if time_entry is not None and time_entry[0] >= tail_max[0]:
            self._max_timestamp, self._offset_of_max_timestamp = time_entry
        else:
            self._max_timestamp, self._offset_of_max_timestamp = tail_max

    def recover(self, max_batch_bytes: int) -> int:
        """Validate every batch from position 0, rebuild both indexes and cut the file at the first
        invalid or torn byte (Kafka's `LogSegment.recover`). Returns the number of bytes cut."""
        self._offset_index.truncate_to(self._base_offset)
        self._time_index.truncate_to(self._base_offset)
        self._next_offset = self._base_offset
        self._max_timestamp = NO_TIMESTAMP
        self._offset_of_max_timestamp = self._base_offset
        self._bytes_since_index_entry = 0
        file = self._open()
        file_size = file.size()
        position = 0
        buffer_position, buffer = 0, b""
        while position + BATCH_HEADER_BYTES <= file_size:
            if position + BATCH_HEADER_BYTES > buffer_position + len(buffer):
                buffer_position = position
                buffer = self._pread(position, min(RECOVERY_CHUNK_BYTES, file_size - position))
            header = parse_header(buffer, position - buffer_position)
            if (
                not self._plausible(header, self._next_offset)
                or header.size > max_batch_bytes
                or position + header.size > file_size
            ):
                break
            if position + header.size > buffer_position + len(buffer):
                buffer_position = position
                buffer = self._pread(
                    position, min(max(RECOVERY_CHUNK_BYTES, header.size), file_size - position)
                )
            if crc_of(buffer, position - buffer_position, header.size) != header.crc:
                break
            self._track(position, header.size, header.last_offset, header.max_timestamp)
            self._next_offset = header.next_offset
            position += header.size
        truncated = file_size - position
        if truncated:
            file.truncate(position)
        self._size = position
        # Recovery runs once at start; making its result durable now lets the owner advance the
        # recovery point past it.
        file.fsync()
        self._synced_size = position
        self.flush_indexes()
        self.needs_recovery = False
        if self._size == 0:
            self._roll_base_ms = None
        elif self._roll_base_ms is None:
            self._roll_base_ms = self._opened_ms
        return truncated

    # --- durability and lifecycle -----------------------------------------------------------------

    def fsync(self) -> None:
        """fsync the log file (and, the first time, its directory). Safe from a worker thread; raises
        OSError when the fsync fails (the data it covered is then not known to be durable)."""
        with self._lock:
            file = self._file
            size = self._size
            if file is None or self._closed or self._synced_size >= size:
                return  # closed files hold nothing unsynced: the open-file budget closes only synced ones
            file.fsync()
            if not self._directory_synced:
                self._fs.sync_dir(self._directory)
                self._directory_synced = True
            self._synced_size = max(self._synced_size, size)

    def flush_indexes(self) -> None:
        """fsync both index files; the owner calls this when the segment stops being active."""
        self._offset_index.flush()
        self._time_index.flush()

    def close(self) -> None:
        with self._lock:
            file, self._file = self._file, None
            self._closed = True
        if file is not None:
            file.close()
        self._data_dir.open_files.forget(self)
        self._offset_index.close()
        self._time_index.close()

    def delete(self) -> None:
        self.close()
        self._offset_index.delete()
        self._time_index.delete()
        # The aborted-transaction index belongs to the partition's TransactionIndex, but a file left behind
        # would be read back if a later segment reused this base offset.
        self._fs.unlink(self._directory / segment_file_name(self._base_offset, ".txnindex"))
        self._fs.unlink(self.log_path)

    def __repr__(self) -> str:
        return f"LogSegment({self.log_path.name}, size={self._size}, next_offset={self._next_offset})"
