"""Producer id allocation that never reuses an id, even across restarts.

Theory of operation: Kafka hands out producer ids in blocks of 1000 reserved through its controller
(`ProducerIdManager`). We do the same against a file: `producer-ids` in the data directory holds the
first id of the next unreserved block. Taking a new block rewrites that file durably (temp file, fsync,
rename) *before* any id of the block is returned, so after a crash the broker resumes above every id it
ever gave out; ids left unused in a reserved block are simply skipped.
"""

from __future__ import annotations

from pathlib import Path

from oncelog.fs import FileSystem, write_atomically

BLOCK_SIZE = 1000
FILE_NAME = "producer-ids"
PRODUCER_ID_MAX = 2**63 - 1


class ProducerIdAllocator:
    def __init__(self, fs: FileSystem, data_dir: Path) -> None:
        self._fs = fs
        self._path = data_dir / FILE_NAME
        self._next = 0
        self._block_end = 0
        if fs.exists(self._path):
            text = fs.read_bytes(self._path).decode("ascii", "replace").strip()
            if not text.isdigit():
                raise ValueError(f"{self._path} does not hold a producer id high-water mark: {text!r}")
            self._next = self._block_end = int(text)

    def allocate(self) -> int:
        """The next producer id; OSError if a new block cannot be reserved durably (none is handed out)."""
        if self._next >= self._block_end:
            self._reserve(self._next + BLOCK_SIZE)
        producer_id = self._next
        self._next += 1
        return producer_id

    def _reserve(self, block_end: int) -> None:
        assert block_end <= PRODUCER_ID_MAX
        write_atomically(self._fs, self._path, f"{block_end}\n".encode())
        self._block_end = block_end

    @property
    def high_water_mark(self) -> int:
        return self._block_end
