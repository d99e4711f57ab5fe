"""Start disk writeback of freshly appended bytes early, so the flusher's fsync has less left to do.

Linux's `sync_file_range(SYNC_FILE_RANGE_WRITE)` queues the pages for writeback without waiting. Calling
it right after a large append overlaps the disk write with the network receive of the next request; the
fsync that acks=all waits for then mostly finds clean pages. It changes no durability guarantee (only the
fsync counts). Where the call is unavailable (not Linux, no libc) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable

SYNC_FILE_RANGE_WRITE = 2
WRITEBACK_BYTES_MIN = 256 * 1024
"""Smaller appends are left to the kernel: one syscall per small batch would cost more than it saves."""


def _load() -> Callable[[int, int, int], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int

    def start_writeback(fd: int, position: int, size: int) -> None:
        function(fd, position, size, SYNC_FILE_RANGE_WRITE)  # errors only mean no head start

    return start_writeback


_start_writeback = _load()


def start_writeback(fd: int, position: int, size: int) -> None:
    if _start_writeback is not None and size >= WRITEBACK_BYTES_MIN:
        _start_writeback(fd, position, size)
