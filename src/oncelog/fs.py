"""The file-system seam: every byte the broker keeps goes through a `FileSystem`, so tests can fail it.

Theory of operation: the log layer (segments, indexes, snapshots, checkpoints, metadata files) and the
broker's own state files never call `os` directly; they take a `FileSystem` and the `File`s it opens.
`OsFileSystem` is the real one, a thin layer over file descriptors. `FaultyFileSystem` wraps another file
system and fails operations on command, deterministically: the n-th write, fsync, rename, truncate or
any other operation (optionally only on paths containing a given string), or every write once a byte
budget is spent (a full disk: the write that crosses the budget is partial, the next raises ENOSPC).
Tests walk every write path through it and check that nothing acknowledged is lost; the simulation
builds on the same seam.

Durable replacement of small files (`write_atomically`) lives here too, because it is a sequence of
seam operations whose order is the crash argument: write `<name>.tmp`, fsync it, rename it over the
old file, fsync the directory. A reader sees the old or the new content, never a mix; a failure at any
step leaves the old content and removes the temporary file.

`OpenFiles` bounds how many files the log keeps open at once (an LRU of closable files); segments and
indexes reopen lazily, so the number of partitions is not limited by file descriptors.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import shutil
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

SYNC_FILE_RANGE_WRITE = 2
WRITEBACK_BYTES_MIN = 256 * 1024
"""Smaller appends are left to the kernel: one syscall per small batch would cost more than it saves."""


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's `sync_file_range`, which queues pages for writeback without waiting; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_sync_file_range = _load_sync_file_range()


class RollbackFailed(Exception):
    """A failed change could not be undone on disk: the files no longer match what memory says, so the
    owner must stop using them (the partition goes offline). The I/O error is the `__cause__`."""


class File(Protocol):
    """An open file. Writes go to the end when opened for appending."""

    def write(self, data: bytes | memoryview) -> int: ...
    def writev(self, buffers: Sequence[bytes | memoryview]) -> int: ...
    def pread(self, size: int, position: int) -> bytes: ...
    def truncate(self, size: int) -> None: ...
    def fsync(self) -> None: ...
    def size(self) -> int: ...
    def start_writeback(self, position: int, size: int) -> None: ...
    def close(self) -> None: ...


class FileSystem(Protocol):
    def open(self, path: Path, *, append: bool = True, create: bool = True) -> File:
        """Open for reading and writing (appending at the end unless `append` is false)."""
        ...

    def read_bytes(self, path: Path) -> bytes: ...
    def file_size(self, path: Path) -> int: ...
    def exists(self, path: Path) -> bool: ...
    def is_dir(self, path: Path) -> bool: ...
    def list_dir(self, path: Path) -> list[str]: ...
    def make_dir(self, path: Path) -> None:
        """Create `path` and missing parents; an existing directory is fine."""
        ...

    def rename(self, source: Path, target: Path) -> None:
        """Atomically replace `target` with `source` (POSIX rename)."""
        ...

    def unlink(self, path: Path) -> None:
        """Remove a file; a missing file is fine."""
        ...

    def remove_tree(self, path: Path) -> None: ...
    def sync_dir(self, path: Path) -> None:
        """fsync a directory so the names created, renamed or removed in it are durable."""
        ...

    def mtime_ns(self, path: Path) -> int: ...
    def set_mtime_ns(self, path: Path, mtime_ns: int) -> None: ...
    def lock(self, path: Path) -> Callable[[], None] | None:
        """Take an exclusive lock on `path` for this process; None if another holds it. Returns the
        function that releases it."""
        ...


# --- the real file system -----------------------------------------------------------------------------


class OsFile:
    """A file descriptor."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, data: bytes | memoryview) -> int:
        return os.write(self._fd, data)

    def writev(self, buffers: Sequence[bytes | memoryview]) -> int:
        return os.writev(self._fd, buffers)

    def pread(self, size: int, position: int) -> bytes:
        return os.pread(self._fd, size, position)

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)

    def fsync(self) -> None:
        os.fsync(self._fd)

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def start_writeback(self, position: int, size: int) -> None:
        """Start disk writeback of freshly appended bytes early, so the flusher's fsync has less left to
        do (it overlaps the disk write with receiving the next request). It changes no durability
        guarantee: only the fsync counts, and errors here only mean no head start."""
        if _sync_file_range is not None and size >= WRITEBACK_BYTES_MIN:
            _sync_file_range(self._fd, position, size, SYNC_FILE_RANGE_WRITE)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class OsFileSystem:
    def open(self, path: Path, *, append: bool = True, create: bool = True) -> File:
        flags = os.O_RDWR | (os.O_CREAT if create else 0) | (os.O_APPEND if append else 0)
        return OsFile(os.open(path, flags, 0o644))

    def read_bytes(self, path: Path) -> bytes:
        return path.read_bytes()

    def file_size(self, path: Path) -> int:
        return os.stat(path).st_size

    def exists(self, path: Path) -> bool:
        return path.exists()

    def is_dir(self, path: Path) -> bool:
        return path.is_dir()

    def list_dir(self, path: Path) -> list[str]:
        return os.listdir(path)

    def make_dir(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)

    def rename(self, source: Path, target: Path) -> None:
        os.replace(source, target)

    def unlink(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def remove_tree(self, path: Path) -> None:
        shutil.rmtree(path)

    def sync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def mtime_ns(self, path: Path) -> int:
        return os.stat(path).st_mtime_ns

    def set_mtime_ns(self, path: Path, mtime_ns: int) -> None:
        os.utime(path, ns=(mtime_ns, mtime_ns))

    def lock(self, path: Path) -> Callable[[], None] | None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return lambda: os.close(fd)


OS_FILE_SYSTEM = OsFileSystem()


# --- helpers over any file system ---------------------------------------------------------------------


def write_all(file: File, data: bytes | memoryview) -> None:
    """`File.write` may write less than asked (a full disk, a signal): keep going until all is written."""
    view = memoryview(data)
    while view:
        view = view[file.write(view) :]


def read_all(file: File) -> bytes:
    size = file.size()
    chunks: list[bytes] = []
    position = 0
    while position < size:
        chunk = file.pread(size - position, position)
        if not chunk:
            break
        chunks.append(chunk)
        position += len(chunk)
    return b"".join(chunks)


def write_synced(fs: FileSystem, path: Path, data: bytes) -> None:
    """Write `data` as the whole content of `path` and fsync it."""
    file = fs.open(path, append=False)
    try:
        file.truncate(0)
        write_all(file, data)
        file.fsync()
    finally:
        file.close()


def write_atomically(fs: FileSystem, path: Path, data: bytes) -> None:
    """Replace `path` with `data` durably: temp file, fsync, rename, fsync of the directory. On failure
    the old content stays and the temporary file is removed (best effort)."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        write_synced(fs, temporary, data)
        fs.rename(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):  # the next write truncates it, and loaders remove .tmp files
            fs.unlink(temporary)
        raise
    fs.sync_dir(path.parent)


# --- open-file budget ---------------------------------------------------------------------------------


class Reopenable(Protocol):
    def close_if_idle(self) -> bool:
        """Close the underlying file if nothing would be lost by it; True if closed."""
        ...


class OpenFiles:
    """An LRU of open files with a cap: opening one more closes the least recently used idle ones.

    Owners call `touch(owner)` whenever they use their file and `forget(owner)` when they close it for
    good. Eviction calls `owner.close_if_idle()`, which refuses for files with data not yet fsynced, so
    the cap is soft for those (the flusher makes them idle within log.flush.interval.ms).
    """

    def __init__(self, open_files_max: int) -> None:
        assert open_files_max >= 2
        self.open_files_max = open_files_max
        self._open: OrderedDict[Reopenable, None] = OrderedDict()

    def touch(self, owner: Reopenable) -> None:
        self._open[owner] = None
        self._open.move_to_end(owner)
        if len(self._open) > self.open_files_max:
            self._evict()

    def forget(self, owner: Reopenable) -> None:
        self._open.pop(owner, None)

    def __len__(self) -> int:
        return len(self._open)

    def _evict(self) -> None:
        excess = len(self._open) - self.open_files_max
        for owner in list(self._open)[: max(excess * 2, 1)]:
            if excess <= 0:
                break
            if owner.close_if_idle():
                self._open.pop(owner, None)
                excess -= 1


@dataclass(frozen=True, slots=True)
class DataDir:
    """Where the logs live and how they are reached: the directory, its file system, the open-file budget."""

    path: Path
    fs: FileSystem
    open_files: OpenFiles


# --- fault injection ----------------------------------------------------------------------------------

OPERATIONS = ("open", "write", "fsync", "truncate", "read", "rename", "unlink", "mkdir", "sync_dir", "remove_tree")


@dataclass
class Fault:
    """Fail the `nth` (1-based, counted from when the fault was added) `operation` on a matching path."""

    operation: str
    nth: int = 1
    error: int = errno.EIO
    path_contains: str = ""
    repeat: bool = False
    """Keep failing every matching operation after the n-th (a disk that stays broken)."""
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        assert self.operation in OPERATIONS, self.operation
        assert self.nth >= 1


class FaultPlan:
    """What a `FaultyFileSystem` fails. Thread-safe: the flusher fsyncs from a worker thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.faults: list[Fault] = []
        self.disk_bytes_left: int | None = None
        """When set, writes fail with ENOSPC once this many more bytes were written."""
        self.counts: dict[str, int] = dict.fromkeys(OPERATIONS, 0)
        self.log: list[tuple[str, str]] = []
        """Every (operation, path) seen, for tests that enumerate injection points."""

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.disk_bytes_left = None

    def check(self, operation: str, path: Path) -> None:
        with self._lock:
            self.counts[operation] += 1
            self.log.append((operation, str(path)))
            for fault in self.faults:
                if fault.operation != operation or fault.path_contains not in str(path):
                    continue
                fault.seen += 1
                if fault.seen == fault.nth or (fault.repeat and fault.seen > fault.nth):
                    fault.fired += 1
                    raise OSError(fault.error, f"injected {operation} failure ({os.strerror(fault.error)})", str(path))

    def writable(self, wanted: int, path: Path) -> int:
        """How many of `wanted` bytes a write may put on the disk now (raises ENOSPC for none)."""
        with self._lock:
            if self.disk_bytes_left is None:
                return wanted
            if self.disk_bytes_left <= 0 and wanted > 0:
                raise OSError(errno.ENOSPC, "injected full disk", str(path))
            allowed = min(wanted, self.disk_bytes_left)
            self.disk_bytes_left -= allowed
            return allowed


class FaultyFile:
    __slots__ = ("_file", "_path", "_plan")

    def __init__(self, file: File, path: Path, plan: FaultPlan) -> None:
        self._file = file
        self._path = path
        self._plan = plan

    def write(self, data: bytes | memoryview) -> int:
        self._plan.check("write", self._path)
        allowed = self._plan.writable(len(data), self._path)
        return self._file.write(memoryview(data)[:allowed])

    def writev(self, buffers: Sequence[bytes | memoryview]) -> int:
        self._plan.check("write", self._path)
        total = sum(len(buffer) for buffer in buffers)
        allowed = self._plan.writable(total, self._path)
        if allowed == total:
            return self._file.writev(buffers)
        return self._file.write(memoryview(b"".join(buffers))[:allowed])

    def pread(self, size: int, position: int) -> bytes:
        self._plan.check("read", self._path)
        return self._file.pread(size, position)

    def truncate(self, size: int) -> None:
        self._plan.check("truncate", self._path)
        self._file.truncate(size)

    def fsync(self) -> None:
        self._plan.check("fsync", self._path)
        self._file.fsync()

    def size(self) -> int:
        return self._file.size()

    def start_writeback(self, position: int, size: int) -> None:
        self._file.start_writeback(position, size)

    def close(self) -> None:
        self._file.close()


class FaultyFileSystem:
    """Another file system with the faults of `plan` injected into it."""

    def __init__(self, inner: FileSystem, plan: FaultPlan) -> None:
        self.inner = inner
        self.plan = plan

    def open(self, path: Path, *, append: bool = True, create: bool = True) -> File:
        self.plan.check("open", path)
        return FaultyFile(self.inner.open(path, append=append, create=create), path, self.plan)

    def read_bytes(self, path: Path) -> bytes:
        self.plan.check("read", path)
        return self.inner.read_bytes(path)

    def file_size(self, path: Path) -> int:
        return self.inner.file_size(path)

    def exists(self, path: Path) -> bool:
        return self.inner.exists(path)

    def is_dir(self, path: Path) -> bool:
        return self.inner.is_dir(path)

    def list_dir(self, path: Path) -> list[str]:
        return self.inner.list_dir(path)

    def make_dir(self, path: Path) -> None:
        self.plan.check("mkdir", path)
        self.inner.make_dir(path)

    def rename(self, source: Path, target: Path) -> None:
        self.plan.check("rename", target)
        self.inner.rename(source, target)

    def unlink(self, path: Path) -> None:
        self.plan.check("unlink", path)
        self.inner.unlink(path)

    def remove_tree(self, path: Path) -> None:
        self.plan.check("remove_tree", path)
        self.inner.remove_tree(path)

    def sync_dir(self, path: Path) -> None:
        self.plan.check("sync_dir", path)
        self.inner.sync_dir(path)

    def mtime_ns(self, path: Path) -> int:
        return self.inner.mtime_ns(path)

    def set_mtime_ns(self, path: Path, mtime_ns: int) -> None:
        self.inner.set_mtime_ns(path, mtime_ns)

    def lock(self, path: Path) -> Callable[[], None] | None:
        return self.inner.lock(path)
