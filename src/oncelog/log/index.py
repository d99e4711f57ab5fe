"""Sparse offset and time indexes of one log segment, in Kafka's on-disk formats.

Theory of operation: an index is a file of fixed-size big-endian entries, appended every
`index_interval_bytes` of log data, plus the same entries in memory (`array`s) so lookups are a bisect.
Offsets are stored relative to the segment's base offset, as in Kafka:

- `.index` (Kafka's `OffsetIndex`): int32 relative offset, int32 byte position; 8 bytes. The offset is
  the *last* offset of the batch that starts at the position (Kafka's `LogSegment.append` indexes
  `largestOffset`), so `lookup(offset)` answers a position at or before the batch holding `offset`.
- `.timeindex` (Kafka's `TimeIndex`): int64 timestamp, int32 relative offset; 12 bytes. An entry records
  the segment's maximum timestamp so far and the last offset of the batch that reached it; entries are
  written only when the maximum grows, so timestamps and offsets are both strictly increasing.

Unlike Kafka we do not preallocate and memory-map the files: they are plain append-only files and the
in-memory arrays are the source for lookups, so a file never has to be trimmed on close.

Loading is defensive because index files are fsynced only when a segment rolls: a partial trailing entry
(torn write) is ignored, and the first entry that is not strictly increasing or points past the data
the segment really holds ends the index; the file is cut there so later appends stay consistent. A lost
index entry costs only a longer scan, never a wrong answer.
"""

from __future__ import annotations

import os
import struct
from array import array
from bisect import bisect_left, bisect_right
from pathlib import Path

INT32_MAX = 2**31 - 1

_OFFSET_ENTRY = struct.Struct(">ii")
_TIME_ENTRY = struct.Struct(">qi")


def _write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (disk full, signals); keep going until all of it is written."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_file(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks: list[bytes] = []
    position = 0
    while position < size:
        chunk = os.pread(fd, size - position, position)
        if not chunk:
            break
        chunks.append(chunk)
        position += len(chunk)
    return b"".join(chunks)


class _IndexFile:
    """The file half of an index: an append-only fd opened with O_APPEND."""

    entry_bytes = 0

    def __init__(self, path: Path) -> None:
        self.path = path
        self.existed = path.exists()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)

    def _truncate_entries(self, entries: int) -> None:
        os.ftruncate(self._fd, entries * self.entry_bytes)

    def flush(self) -> None:
        """fsync the index file; called when its segment rolls or closes."""
        if self._fd >= 0:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def delete(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


class OffsetIndex(_IndexFile):
    """Maps an offset to the byte position of a batch at or before the batch that holds it."""

    entry_bytes = _OFFSET_ENTRY.size

    def __init__(self, path: Path, base_offset: int, log_size_bytes: int) -> None:
        super().__init__(path)
        self.base_offset = base_offset
        self._offsets = array("q")
        self._positions = array("q")
        data = _read_file(self._fd)
        whole = len(data) - len(data) % self.entry_bytes
        for relative_offset, position in _OFFSET_ENTRY.iter_unpack(data[:whole]):
            offset = base_offset + relative_offset
            if (
                relative_offset < 0
                or position >= log_size_bytes
                or (self._offsets and (offset <= self._offsets[-1] or position <= self._positions[-1]))
            ):
                break
            self._offsets.append(offset)
            self._positions.append(position)
        if len(self._offsets) * self.entry_bytes != len(data):
            self._truncate_entries(len(self._offsets))

    def __len__(self) -> int:
        return len(self._offsets)

    def append(self, offset: int, position: int) -> None:
        assert 0 <= offset - self.base_offset <= INT32_MAX and 0 <= position <= INT32_MAX
        assert not self._offsets or (offset > self._offsets[-1] and position > self._positions[-1])
        _write_all(self._fd, _OFFSET_ENTRY.pack(offset - self.base_offset, position))
        self._offsets.append(offset)
        self._positions.append(position)

    def lookup(self, offset: int) -> int:
        """Position of the largest entry whose offset is ≤ `offset`, else 0 (the segment's start)."""
        slot = bisect_right(self._offsets, offset) - 1
        return self._positions[slot] if slot >= 0 else 0

    def last_entry(self) -> tuple[int, int] | None:
        """(offset, position) of the last entry, or None when the index is empty."""
        if not self._offsets:
            return None
        return self._offsets[-1], self._positions[-1]

    def truncate_to(self, offset: int) -> None:
        """Drop every entry whose offset is ≥ `offset`."""
        keep = bisect_left(self._offsets, offset)
        del self._offsets[keep:]
        del self._positions[keep:]
        self._truncate_entries(keep)


class TimeIndex(_IndexFile):
    """Maps a timestamp to an offset from which a scan finds the first batch at or after it."""

    entry_bytes = _TIME_ENTRY.size

    def __init__(self, path: Path, base_offset: int, next_offset: int) -> None:
        super().__init__(path)
        self.base_offset = base_offset
        self._timestamps = array("q")
        self._offsets = array("q")
        data = _read_file(self._fd)
        whole = len(data) - len(data) % self.entry_bytes
        for timestamp, relative_offset in _TIME_ENTRY.iter_unpack(data[:whole]):
            offset = base_offset + relative_offset
            if (
                relative_offset < 0
                or offset >= next_offset
                or (self._offsets and (timestamp <= self._timestamps[-1] or offset <= self._offsets[-1]))
            ):
                break
            self._timestamps.append(timestamp)
            self._offsets.append(offset)
        if len(self._offsets) * self.entry_bytes != len(data):
            self._truncate_entries(len(self._offsets))

    def __len__(self) -> int:
        return len(self._offsets)

    def append(self, timestamp: int, offset: int) -> None:
        assert 0 <= offset - self.base_offset <= INT32_MAX
        assert not self._offsets or (timestamp > self._timestamps[-1] and offset > self._offsets[-1])
        _write_all(self._fd, _TIME_ENTRY.pack(timestamp, offset - self.base_offset))
        self._timestamps.append(timestamp)
        self._offsets.append(offset)

    @property
    def last_timestamp(self) -> int:
        """Timestamp of the last entry, or -1 (Kafka's NO_TIMESTAMP) when the index is empty."""
        return self._timestamps[-1] if self._timestamps else -1

    def last_entry(self) -> tuple[int, int] | None:
        """(timestamp, offset) of the last entry, or None when the index is empty."""
        if not self._offsets:
            return None
        return self._timestamps[-1], self._offsets[-1]

    def lookup(self, timestamp: int) -> int:
        """Offset to start a scan for the first batch with max timestamp ≥ `timestamp`.

        As Kafka's `TimeIndex.lookup`: the offset of the largest entry whose timestamp is ≤ the target,
        else the base offset. Every batch before that entry's batch has a smaller timestamp than the
        entry (entries are written only when the maximum grows), so none of them can match.
        """
        slot = bisect_right(self._timestamps, timestamp) - 1
        return self._offsets[slot] if slot >= 0 else self.base_offset

    def truncate_to(self, offset: int) -> None:
        """Drop every entry whose offset is ≥ `offset`."""
        keep = bisect_left(self._offsets, offset)
        del self._timestamps[keep:]
        del self._offsets[keep:]
        self._truncate_entries(keep)
