"""Small durable-file helpers shared by everything that keeps state in files.

`write_atomically` is the one way metadata files (checkpoints, topics.json, producer-id and coordinator
epoch files, producer snapshots) are replaced: write `<name>.tmp`, fsync it, rename it over the old
file, fsync the directory so the rename survives a crash. A reader sees the old or the new content,
never a mix.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_directory(path: Path) -> None:
    """fsync a directory so the names created, renamed or removed in it are durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` (replacing its content) and fsync the file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    write_synced(temporary, data)
    os.replace(temporary, path)
    fsync_directory(path.parent)
