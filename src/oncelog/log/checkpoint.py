"""Kafka's offset checkpoint files (`recovery-point-offset-checkpoint`, `log-start-offset-checkpoint`).

Theory of operation: the format is Kafka's `OffsetCheckpointFile`, plain text so Kafka tools and people
can read it:

    0                      version
    2                      number of entries
    orders 0 1500          topic, partition, offset (topic names never contain whitespace)
    orders 1 1320

A checkpoint is replaced atomically: the new content goes to `<name>.tmp`, which is fsynced and renamed
over the old file, and then the directory is fsynced so the rename itself survives a crash. A reader
therefore sees the old or the new file, never a mix. A file that does not parse is reported and treated
as absent: every checkpoint we keep is a hint that only makes recovery cheaper (an absent recovery
point means "recover everything"), so ignoring it is always safe.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from oncelog.fs import FileSystem, write_atomically

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 0


def read_checkpoint(fs: FileSystem, path: Path) -> dict[tuple[str, int], int]:
    """The entries of the checkpoint at `path`; {} if it is missing or malformed (with a warning)."""
    if not fs.exists(path):
        return {}
    try:
        return _parse(fs.read_bytes(path).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        logger.warning("checkpoint=%s is malformed and is ignored: %s", path, error)
        return {}


def _parse(text: str) -> dict[tuple[str, int], int]:
    lines = text.splitlines()
    if len(lines) < 2:
        raise ValueError("missing the version or entry count line")
    version = int(lines[0])
    if version != CHECKPOINT_VERSION:
        raise ValueError(f"unknown version {version}")
    count = int(lines[1])
    entry_lines = [line for line in lines[2:] if line.strip()]
    if count != len(entry_lines):
        raise ValueError(f"header says {count} entries but the file holds {len(entry_lines)}")
    entries: dict[tuple[str, int], int] = {}
    for line in entry_lines:
        fields = line.split()
        if len(fields) != 3:
            raise ValueError(f"entry {line!r} is not 'topic partition offset'")
        topic, partition, offset = fields[0], int(fields[1]), int(fields[2])
        entries[(topic, partition)] = offset
    return entries


def write_checkpoint(fs: FileSystem, path: Path, entries: Mapping[tuple[str, int], int]) -> None:
    """Replace the checkpoint at `path` with `entries`, atomically and durably."""
    lines = [str(CHECKPOINT_VERSION), str(len(entries))]
    for (topic, partition), offset in sorted(entries.items()):
        assert topic and not any(character.isspace() for character in topic), f"bad topic name {topic!r}"
        lines.append(f"{topic} {partition} {offset}")
    write_atomically(fs, path, ("\n".join(lines) + "\n").encode("utf-8"))
