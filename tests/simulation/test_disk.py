"""The simulated disk keeps the promises a real one keeps, and no more: what was fsynced survives a power
cut, what was not may be torn, a new name needs its directory synced, a failed fsync loses its pages."""

from __future__ import annotations

import errno
import random
from pathlib import Path

import pytest

from oncelog.fs import write_atomically
from oncelog.simulation.disk import SimDisk

DATA = Path("/data")


def _disk(seed: int = 1, faults: dict[str, int] | None = None) -> SimDisk:
    plan = dict(faults or {})
    disk = SimDisk(random.Random(seed), lambda operation, path: plan.pop(operation, None))
    disk.make_dir(DATA)
    disk.sync_dir(Path("/"))
    return disk


def test_fsynced_bytes_survive_and_unsynced_ones_are_a_prefix_or_zeros() -> None:
    outcomes = set()
    for seed in range(40):
        disk = _disk(seed)
        file = disk.open(DATA / "a.log")
        file.write(b"durable-")
        file.fsync()
        disk.sync_dir(DATA)
        file.write(b"volatile")
        disk.crash()
        content = disk.read_bytes(DATA / "a.log")
        assert content.startswith(b"durable-")
        tail = content[len(b"durable-"):]
        assert b"volatile".startswith(tail) or tail == bytes(len(tail)), tail
        outcomes.add(tail)
    assert b"" in outcomes and b"volatile" in outcomes and len(outcomes) > 3, outcomes


def test_a_new_name_is_durable_only_once_its_directory_is_synced() -> None:
    lost = kept = 0
    for seed in range(40):
        disk = _disk(seed)
        file = disk.open(DATA / "new.log")
        file.write(b"x")
        file.fsync()  # the data is on disk, the name may not be
        disk.crash()
        if disk.exists(DATA / "new.log"):
            kept += 1
            assert disk.read_bytes(DATA / "new.log") == b"x"
        else:
            lost += 1
    assert lost and kept
    disk = _disk()
    disk.open(DATA / "synced.log").fsync()
    disk.sync_dir(DATA)
    disk.crash()
    assert disk.exists(DATA / "synced.log")


def test_an_atomic_replace_leaves_the_old_or_the_new_content() -> None:
    seen = set()
    for seed in range(40):
        disk = _disk(seed)
        write_atomically(disk, DATA / "checkpoint", b"old")
        write_atomically(disk, DATA / "checkpoint", b"new")
        disk.crash()
        seen.add(disk.read_bytes(DATA / "checkpoint"))
    assert seen == {b"new"}  # write_atomically syncs the directory after the rename
    seen = set()
    for seed in range(40):
        disk = _disk(seed)
        write_atomically(disk, DATA / "checkpoint", b"old")
        temporary = DATA / "checkpoint.tmp"
        file = disk.open(temporary, append=False)
        file.write(b"new")
        file.fsync()
        disk.rename(temporary, DATA / "checkpoint")  # no directory sync: either name may win
        disk.crash()
        seen.add(disk.read_bytes(DATA / "checkpoint"))
    assert seen == {b"old", b"new"}


def test_a_failed_fsync_loses_its_pages_even_if_a_later_fsync_succeeds() -> None:
    disk = _disk(faults={"fsync": errno.EIO})
    file = disk.open(DATA / "a.log")
    disk.sync_dir(DATA)
    file.write(b"dropped")
    with pytest.raises(OSError):
        file.fsync()
    file.fsync()  # reports success, as Linux does after dropping the dirty pages
    disk.crash()
    assert disk.read_bytes(DATA / "a.log") in (b"", bytes(7))


def test_a_full_disk_writes_a_prefix_then_refuses() -> None:
    disk = _disk(faults={"write": errno.ENOSPC})
    file = disk.open(DATA / "a.log")
    written = None
    try:
        written = file.write(b"0123456789")
    except OSError as error:
        assert error.errno == errno.ENOSPC
    if written is not None:
        assert 0 < written < 10 and disk.read_bytes(DATA / "a.log") == b"0123456789"[:written]
