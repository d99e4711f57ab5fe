"""The aborted-transaction index of one partition (Kafka's `TransactionIndex` / `.txnindex`).

Theory of operation: when an ABORT marker completes a transaction that wrote to this partition, an entry
`(producer id, first offset, last offset = marker offset, last stable offset then)` is appended to the
`.txnindex` file of the segment holding the marker (Kafka's 34-byte format: int16 version 0, int64 ×4).
Entries of every segment are also kept in memory, in marker order, so a read_committed fetch can list
the aborted transactions overlapping the bytes it returns without touching disk.

Recovery: entries at or above the offset the producer-state replay starts from are dropped (from memory
and from their files) and re-added by the replay; segments deleted by retention take their entries
along. An append is written before memory changes; a failed one cuts the file back (or raises
RollbackFailed if it cannot), so a read_committed reader never relies on an entry the disk lacks.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from oncelog.fs import FileSystem, RollbackFailed, write_all, write_synced

TXN_INDEX_SUFFIX = ".txnindex"
_ENTRY = struct.Struct(">hqqqq")
ENTRY_BYTES = _ENTRY.size
_VERSION = 0


@dataclass(frozen=True, slots=True)
class AbortedTxn:
    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int


def txn_index_path(directory: Path, segment_base_offset: int) -> Path:
    return directory / f"{segment_base_offset:020d}{TXN_INDEX_SUFFIX}"


def _pack(entry: AbortedTxn) -> bytes:
    return _ENTRY.pack(_VERSION, entry.producer_id, entry.first_offset, entry.last_offset, entry.last_stable_offset)


def _read_file(fs: FileSystem, path: Path, segment_base: int) -> list[AbortedTxn]:
    """The entries of one file. A torn or foreign tail (a partial entry after a crash, zeros where the
    size reached the disk before the data) is cut off the file too: appends go to the end of the file,
    and one after a partial entry would be misaligned for good."""
    if not fs.exists(path):
        return []
    data = fs.read_bytes(path)
    entries: list[AbortedTxn] = []
    for position in range(0, len(data) - ENTRY_BYTES + 1, ENTRY_BYTES):
        version, producer_id, first, last, lso = _ENTRY.unpack_from(data, position)
        # A marker follows its transaction's first record and lies in its own segment, in marker order.
        if version != _VERSION or first >= last or last < segment_base \
                or (entries and last <= entries[-1].last_offset):
            break
        entries.append(AbortedTxn(producer_id, first, last, lso))
    if len(data) != len(entries) * ENTRY_BYTES:
        write_synced(fs, path, b"".join(_pack(entry) for entry in entries))
    return entries


class TransactionIndex:
    def __init__(self, directory: Path, fs: FileSystem, segment_bases: list[int]) -> None:
        self._directory = directory
        self._fs = fs
        self._by_segment: dict[int, list[AbortedTxn]] = {}
        for base in segment_bases:
            entries = _read_file(fs, txn_index_path(directory, base), base)
            if entries:
                self._by_segment[base] = entries

    def append(self, segment_base: int, entry: AbortedTxn) -> None:
        assert entry.first_offset <= entry.last_offset
        entries = self._by_segment.get(segment_base, [])
        assert not entries or entries[-1].last_offset < entry.last_offset, "markers arrive in offset order"
        file = self._fs.open(txn_index_path(self._directory, segment_base))
        try:
            try:
                write_all(file, _pack(entry))
            except OSError as error:
                try:
                    file.truncate(len(entries) * ENTRY_BYTES)
                except OSError:
                    raise RollbackFailed(f"txnindex of segment {segment_base}: cannot undo a failed append") from error
                raise
        finally:
            file.close()
        self._by_segment.setdefault(segment_base, entries).append(entry)

    def truncate_from(self, offset: int) -> None:
        """Drop entries whose marker is at or above `offset` (the replay re-adds them)."""
        for base in list(self._by_segment):
            entries = self._by_segment[base]
            kept = [entry for entry in entries if entry.last_offset < offset]
            if len(kept) == len(entries):
                continue
            path = txn_index_path(self._directory, base)
            if kept:
                write_synced(self._fs, path, b"".join(_pack(entry) for entry in kept))
                self._by_segment[base] = kept
            else:
                self._fs.unlink(path)
                del self._by_segment[base]

    def drop_segment(self, segment_base: int) -> None:
        self._fs.unlink(txn_index_path(self._directory, segment_base))
        self._by_segment.pop(segment_base, None)

    def flush(self, segment_base: int) -> None:
        path = txn_index_path(self._directory, segment_base)
        if segment_base in self._by_segment:
            file = self._fs.open(path)
            try:
                file.fsync()
            finally:
                file.close()

    def collect(self, fetch_offset: int, upper_bound: int) -> list[tuple[int, int]]:
        """(producer id, first offset) of aborted transactions overlapping [fetch_offset, upper_bound),
        sorted by first offset: every entry with last offset ≥ fetch offset and first offset < upper
        bound (`LocalLog.addAbortedTransactions`; both conditions matter, see docs/protocol.md, read_committed)."""
        found = [
            (entry.producer_id, entry.first_offset)
            for entries in self._by_segment.values()
            for entry in entries
            if entry.last_offset >= fetch_offset and entry.first_offset < upper_bound
        ]
        return sorted(found, key=lambda item: item[1])

    def entries(self) -> list[AbortedTxn]:
        return [entry for base in sorted(self._by_segment) for entry in self._by_segment[base]]
