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
in-memory arrays are the source for lookups, so a file never has to be trimmed on close. A file is
opened only to append, truncate or fsync, and may be closed again at any time by the open-file budget.

An append that fails (a full disk) restores the file to its previous entries; if even that fails, it
raises `RollbackFailed` and the owner stops using the index.

Loading is defensive because index files are fsynced only when a segment rolls: a partial trailing entry
(torn write) is ignored, and the first entry that is not strictly increasing or points past the data
the segment really holds ends the index; the file is cut there so later appends stay consistent. A lost
index entry costs only a longer scan, never a wrong answer.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_left, bisect_right
from pathlib import Path

from oncelog.fs import DataDir, File, RollbackFailed, read_all, write_all

INT32_MAX = 2**31 - 1

_OFFSET_ENTRY = struct.Struct(">ii")
_TIME_ENTRY = struct.Struct(">qi")


class _IndexFile:
    """The file half of an index: an append-only file, opened on demand."""

    entry_bytes = 0

    def __init__(self, path: Path, data_dir: DataDir) -> None:
        self.path = path
        self._data_dir = data_dir
        self._file: File | None = None
        self._dirty = False
        self.existed = data_dir.fs.exists(path)
        if not self.existed:
            self._open()  # create it now: a segment whose index is missing is recovered on the next open

    def _read(self) -> bytes:
        if not self.existed:
            return b""
        file = self._open()
        return read_all(file)

    def _open(self) -> File:
        if self._file is None:
            self._file = self._data_dir.fs.open(self.path)
        self._data_dir.open_files.touch(self)
        return self._file

    def close_if_idle(self) -> bool:
        """An index loses nothing by being closed (the open-file budget calls this)."""
        if self._file is not None:
            file, self._file = self._file, None
            file.close()
        return True

    def _append_entry(self, data: bytes, entries_before: int) -> None:
        file = self._open()
        try:
            write_all(file, data)
        except OSError as error:
            try:
                file.truncate(entries_before * self.entry_bytes)
            except OSError:
                raise RollbackFailed(f"{self.path.name}: cannot undo a failed append") from error
            raise
        self._dirty = True

    def _truncate_entries(self, entries: int) -> None:
        self._open().truncate(entries * self.entry_bytes)
        self._dirty = True

    def flush(self) -> None:
        """fsync the index file if it changed; called when its segment rolls or closes."""
        if self._dirty:
            self._open().fsync()
            self._dirty = False

    def close(self) -> None:
        self.close_if_idle()
        self._data_dir.open_files.forget(self)

    def delete(self) -> None:
        self.close()
        self._data_dir.fs.unlink(self.path)


class OffsetIndex(_IndexFile):
    """Maps an offset to the byte position of a batch at or before the batch that holds it."""

    entry_bytes = _OFFSET_ENTRY.size

    def __init__(self, path: Path, data_dir: DataDir, base_offset: int, log_size_bytes: int) -> None:
        super().__init__(path, data_dir)
        self.base_offset = base_offset
        self._offsets = array("q")
        self._positions = array("q")
        data = self._read()
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
        self._append_entry(_OFFSET_ENTRY.pack(offset - self.base_offset, position), len(self._offsets))
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
        self.keep(bisect_left(self._offsets, offset))

    def keep(self, entries: int) -> None:
        """Keep only the first `entries` entries (file first, then memory)."""
        if entries < len(self._offsets):
            self._truncate_entries(entries)
        del self._offsets[entries:]
        del self._positions[entries:]


class TimeIndex(_IndexFile):
    """Maps a timestamp to an offset from which a scan finds the first batch at or after it."""

    entry_bytes = _TIME_ENTRY.size

    def __init__(self, path: Path, data_dir: DataDir, base_offset: int, next_offset: int) -> None:
        super().__init__(path, data_dir)
        self.base_offset = base_offset
        self._timestamps = array("q")
        self._offsets = array("q")
        data = self._read()
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
        self._append_entry(_TIME_ENTRY.pack(timestamp, offset - self.base_offset), len(self._offsets))
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
        self.keep(bisect_left(self._offsets, offset))

    def keep(self, entries: int) -> None:
        """Keep only the first `entries` entries (file first, then memory)."""
        if entries < len(self._offsets):
            self._truncate_entries(entries)
        del self._timestamps[entries:]
        del self._offsets[entries:]
