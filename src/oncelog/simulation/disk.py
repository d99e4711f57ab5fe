"""A simulated disk: the `FileSystem` seam in memory, with a page cache a crash can tear.

Theory of operation: every file is an inode holding two contents, what the page cache has (`data`,
what reads see) and what is on the platter (`synced`, what survives a crash). `fsync` copies the first
into the second. Names are the same: creating, renaming or removing a name changes the namespace
reads see at once, but only `sync_dir` of its directory makes the change durable; the changes not yet
synced are kept in order, and a crash applies a seeded random prefix of them (a journaling file
system commits metadata in order).

`crash()` is a power cut: every file goes back to its synced content plus a random prefix of what was
written after it (sometimes zero-filled instead, as a file system that extended the size before the
data reached the disk leaves it), and the namespace is the durable one plus a prefix of the pending
changes. An fsync that fails loses its dirty pages for good ("fsyncgate"): a later fsync that succeeds
does not bring them back, they read as zeros after a crash.

Faults come from `faults(operation, path)`, called before every operation that can fail; it returns an
errno to fail it with (EIO, ENOSPC) or None. A failed write may have written a prefix (a short write
then ENOSPC, as a full disk does). Everything is deterministic given the `random.Random` it is handed.
"""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

FaultHook = Callable[[str, Path], int | None]


@dataclass
class _Inode:
    data: bytearray = field(default_factory=bytearray)
    synced: bytes = b""
    lost_from: int | None = None
    """Set by a failed fsync: bytes from here that were dirty then never reach the disk."""
    mtime_ns: int = 0


_DIRECTORY = "dir"


@dataclass
class _NameChange:
    directory: Path
    name: str
    inode: _Inode | str | None
    """What the name points to after the change (an inode, _DIRECTORY, or None: removed)."""


def _fail(code: int, operation: str, path: Path) -> OSError:
    return OSError(code, f"simulated {operation} failure ({os.strerror(code)})", str(path))


class SimFile:
    __slots__ = ("_append", "_closed", "_disk", "_inode", "_path", "_position")

    def __init__(self, disk: SimDisk, path: Path, inode: _Inode, append: bool) -> None:
        self._disk = disk
        self._path = path
        self._inode = inode
        self._append = append
        self._position = 0
        self._closed = False

    def _check(self, operation: str) -> None:
        assert not self._closed, f"{operation} on a closed file {self._path}"
        self._disk.check(operation, self._path)

    def write(self, data: bytes | memoryview) -> int:
        assert not self._closed, f"write on a closed file {self._path}"
        code = self._disk.faults("write", self._path)
        inode = self._inode
        data = bytes(data)
        if code is not None:
            if code == errno.ENOSPC and len(data) > 1:  # a full disk takes what fits, then refuses
                written = self._disk.random.randrange(0, len(data))
                if written:
                    return self._put(data[:written])
            raise _fail(code, "write", self._path)
        inode.mtime_ns = self._disk.now_ns()
        return self._put(data)

    def _put(self, data: bytes) -> int:
        inode = self._inode
        position = len(inode.data) if self._append else self._position
        if position > len(inode.data):
            inode.data.extend(bytes(position - len(inode.data)))
        inode.data[position:position + len(data)] = data
        self._position = position + len(data)
        return len(data)

    def writev(self, buffers: Sequence[bytes | memoryview]) -> int:
        return self.write(b"".join(bytes(buffer) for buffer in buffers))

    def pread(self, size: int, position: int) -> bytes:
        self._check("read")
        return bytes(self._inode.data[position:position + size])

    def truncate(self, size: int) -> None:
        self._check("truncate")
        data = self._inode.data
        if self._inode.lost_from is not None and size <= self._inode.lost_from:
            self._inode.lost_from = None  # the dropped pages are cut off anyway
        if size < len(data):
            del data[size:]
        else:
            data.extend(bytes(size - len(data)))

    def fsync(self) -> None:
        assert not self._closed, f"fsync on a closed file {self._path}"
        inode = self._inode
        code = self._disk.faults("fsync", self._path)
        if code is not None:
            # The kernel drops the dirty pages it could not write and forgets they were dirty.
            common = _common_prefix(inode.synced, inode.data)
            inode.lost_from = common if inode.lost_from is None else min(inode.lost_from, common)
            raise _fail(code, "fsync", self._path)
        synced = bytes(inode.data)
        if inode.lost_from is not None and inode.lost_from < len(synced):
            old = inode.synced
            end = len(synced)
            kept_end = min(end, len(old))
            # The lost range keeps whatever the disk had before (zeros where it had nothing).
            lost = old[inode.lost_from:kept_end] + bytes(max(0, end - max(kept_end, inode.lost_from)))
            synced = synced[:inode.lost_from] + lost[:end - inode.lost_from]
        inode.synced = synced
        inode.lost_from = None  # the dropped pages stay lost in `synced`; pages written since are new

    def size(self) -> int:
        return len(self._inode.data)

    def start_writeback(self, position: int, size: int) -> None:
        pass

    def close(self) -> None:
        self._closed = True


def _common_prefix(a: bytes, b: bytes | bytearray) -> int:
    limit = min(len(a), len(b))
    if a[:limit] == b[:limit]:
        return limit
    low, high = 0, limit
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


class SimDisk:
    """The simulated file system (`oncelog.fs.FileSystem`)."""

    def __init__(self, rng: random.Random, faults: FaultHook | None = None,
                 now_ns: Callable[[], int] = lambda: 0) -> None:
        self.random = rng
        self.faults: FaultHook = faults or (lambda operation, path: None)
        self.now_ns = now_ns
        self._names: dict[Path, _Inode | str] = {Path("/"): _DIRECTORY}
        """What reads see now."""
        self._durable: dict[Path, _Inode | str] = {Path("/"): _DIRECTORY}
        """What a crash leaves (before the pending changes)."""
        self._pending: list[_NameChange] = []
        self._locks: set[Path] = set()
        self.crashes = 0

    def check(self, operation: str, path: Path) -> None:
        code = self.faults(operation, path)
        if code is not None:
            raise _fail(code, operation, path)

    # --- namespace ----------------------------------------------------------------------------------

    def _set_name(self, path: Path, target: _Inode | str | None) -> None:
        if target is None:
            self._names.pop(path, None)
        else:
            self._names[path] = target
        self._pending.append(_NameChange(path.parent, path.name, target))

    def _inode(self, path: Path) -> _Inode:
        found = self._names.get(path)
        if found is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        if not isinstance(found, _Inode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        return found

    def _require_parent(self, path: Path) -> None:
        if self._names.get(path.parent) != _DIRECTORY:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path.parent))

    def open(self, path: Path, *, append: bool = True, create: bool = True) -> SimFile:
        self.check("open", path)
        inode = self._names.get(path)
        if inode is None:
            if not create:
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
            self._require_parent(path)
            inode = _Inode(mtime_ns=self.now_ns())
            self._set_name(path, inode)
        if not isinstance(inode, _Inode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        return SimFile(self, path, inode, append)

    def read_bytes(self, path: Path) -> bytes:
        self.check("read", path)
        return bytes(self._inode(path).data)

    def file_size(self, path: Path) -> int:
        return len(self._inode(path).data)

    def exists(self, path: Path) -> bool:
        return path in self._names

    def is_dir(self, path: Path) -> bool:
        return self._names.get(path) == _DIRECTORY

    def list_dir(self, path: Path) -> list[str]:
        if not self.is_dir(path):
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(path))
        return sorted(name.name for name in self._names if name.parent == path and name != path)

    def make_dir(self, path: Path) -> None:
        self.check("mkdir", path)
        for directory in [*reversed(path.parents), path]:
            found = self._names.get(directory)
            if found is None:
                self._set_name(directory, _DIRECTORY)
            elif found != _DIRECTORY:
                raise FileExistsError(errno.EEXIST, "File exists", str(directory))

    def rename(self, source: Path, target: Path) -> None:
        self.check("rename", target)
        found = self._names.get(source)
        if found is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(source))
        self._require_parent(target)
        if found == _DIRECTORY:
            moved = sorted((name for name in self._names if source in name.parents), key=lambda p: len(p.parts))
            self._set_name(source, None)
            self._set_name(target, _DIRECTORY)
            for name in moved:
                self._set_name(target / name.relative_to(source), self._names.pop(name))
                self._pending.append(_NameChange(name.parent, name.name, None))
            return
        self._set_name(source, None)
        self._set_name(target, found)

    def unlink(self, path: Path) -> None:
        self.check("unlink", path)
        if isinstance(self._names.get(path), _Inode):
            self._set_name(path, None)

    def remove_tree(self, path: Path) -> None:
        self.check("remove_tree", path)
        for name in sorted((n for n in self._names if n == path or path in n.parents),
                           key=lambda p: -len(p.parts)):
            self._set_name(name, None)

    def sync_dir(self, path: Path) -> None:
        self.check("sync_dir", path)
        remaining = []
        for change in self._pending:
            if change.directory == path:
                self._apply(self._durable, change)
            else:
                remaining.append(change)
        self._pending = remaining

    @staticmethod
    def _apply(names: dict[Path, _Inode | str], change: _NameChange) -> None:
        path = change.directory / change.name
        if change.inode is None:
            names.pop(path, None)
        else:
            names[path] = change.inode

    def mtime_ns(self, path: Path) -> int:
        found = self._names.get(path)
        return found.mtime_ns if isinstance(found, _Inode) else 0

    def set_mtime_ns(self, path: Path, mtime_ns: int) -> None:
        self._inode(path).mtime_ns = mtime_ns

    def lock(self, path: Path) -> Callable[[], None] | None:
        if path in self._locks:
            return None
        self._locks.add(path)
        if path not in self._names:
            self._require_parent(path)
            self._set_name(path, _Inode())
        return lambda: self._locks.discard(path)

    # --- power cut ----------------------------------------------------------------------------------

    def crash(self) -> None:
        """Lose what the page cache held and the disk did not: see the module docstring."""
        self.crashes += 1
        rng = self.random
        applied = rng.randint(0, len(self._pending))
        names = dict(self._durable)
        for change in self._pending[:applied]:
            self._apply(names, change)
        # A name whose directory is gone is gone with it.
        names = {path: target for path, target in names.items()
                 if path == Path("/") or all(names.get(parent) == _DIRECTORY for parent in path.parents)}
        for inode in {id(target): target for target in names.values() if isinstance(target, _Inode)}.values():
            self._tear(inode)
        self._names = names
        self._durable = dict(names)
        self._pending = []
        self._locks.clear()

    def _tear(self, inode: _Inode) -> None:
        rng = self.random
        synced, data = inode.synced, bytes(inode.data)
        if data.startswith(synced) and len(data) > len(synced):
            kept = rng.randint(0, len(data) - len(synced))
            tail = data[len(synced):len(synced) + kept]
            if kept and rng.random() < 0.2:
                tail = bytes(kept)  # the size reached the disk, the data did not
            survived = synced + tail
        elif data != synced and rng.random() < 0.5:
            survived = data  # rewritten or truncated: the disk may have it all the same
        else:
            survived = synced
        if inode.lost_from is not None:
            survived = synced  # the dropped pages are gone, and what was written after them with them
        inode.data = bytearray(survived)
        inode.synced = survived
        inode.lost_from = None

    def files(self) -> dict[str, int]:
        """Every file and its size (for traces)."""
        return {str(path): len(target.data) for path, target in sorted(self._names.items())
                if isinstance(target, _Inode)}
