"""Opening a partition: segment files, recovery after an unclean stop, producer-state rebuild.

Theory of operation (Kafka's `LogLoader`): list the `.log` files (removing stray and orphaned files),
recover every segment from the one holding the recovery point on after an unclean stop (a torn or corrupt
tail is cut and later segments deleted, with a warning giving the bytes dropped), then rebuild producer
state from the newest snapshot at or below the log end offset plus a replay of the batch headers after
it, which also rebuilds open transactions and the aborted-transaction index.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from oncelog.fs import DataDir
from oncelog.protocol.records import CONTROL_ABORT, read_marker

from .producer_state import ProducerStateManager, drop_producers_below, load_latest_snapshot
from .segment import LogSegment

if TYPE_CHECKING:
    from .partition import LogConfig, PartitionLog

logger = logging.getLogger(__name__)

STRAY_FILE_SUFFIXES = (".deleted", ".cleaned", ".swap", ".tmp")
"""Leftovers of Kafka's deferred deletion and compaction swaps, and of interrupted atomic writes; removed on
open."""

INDEX_SUFFIXES = (".index", ".timeindex")
COMPANION_SUFFIXES = (*INDEX_SUFFIXES, ".txnindex")
REPLAY_CHUNK_BYTES = 1024 * 1024


def new_segment(directory: Path, data_dir: DataDir, config: LogConfig, base_offset: int, now_ms: int) -> LogSegment:
    return LogSegment(
        directory, base_offset, data_dir, index_interval_bytes=config.index_interval_bytes, opened_ms=now_ms
    )


def segment_base_offsets(directory: Path, data_dir: DataDir) -> list[int]:
    """Base offsets of the `.log` files in `directory`, sorted; removes stray and orphaned files.
    Files that are not named like segment files are left alone (other components own them)."""
    fs = data_dir.fs
    bases: set[int] = set()
    companions: list[tuple[int, Path]] = []
    for name in fs.list_dir(directory):
        entry = directory / name
        if name.endswith(STRAY_FILE_SUFFIXES):
            fs.unlink(entry)
            continue
        stem, _, suffix = name.partition(".")
        if len(stem) != 20 or not stem.isdigit() or fs.is_dir(entry):
            continue
        if suffix == "log":
            bases.add(int(stem))
        elif "." + suffix in COMPANION_SUFFIXES:
            companions.append((int(stem), entry))
    for base, entry in companions:
        if base not in bases:
            fs.unlink(entry)
    return sorted(bases)


def recover_segments(name: str, segments: list[LogSegment], first_recovered: int, config: LogConfig) -> None:
    """Recover `segments[first_recovered:]` and any segment whose open-time check failed; after a
    truncation, delete every later segment (their offsets would no longer follow on)."""
    # A batch on disk may predate a lowered max.message.bytes; only a batch no segment could hold is
    # certainly corrupt.
    max_batch_bytes = max(config.message_bytes_max, config.segment_bytes)
    index = 0
    while index < len(segments):
        segment = segments[index]
        if index >= first_recovered or segment.needs_recovery:
            truncated = segment.recover(max_batch_bytes)
            if truncated:
                later = segments[index + 1 :]
                del segments[index + 1 :]
                for doomed in later:
                    doomed.delete()
                logger.warning(
                    "partition=%s segment=%s truncated %d bytes of torn or corrupt tail%s",
                    name,
                    segment.log_path.name,
                    truncated,
                    f"; deleted {len(later)} later segments" if later else "",
                )
        index += 1


def rebuild_producer_state(log: PartitionLog) -> None:
    """Newest snapshot ≤ log end offset, then replay every batch header after it (no checks)."""
    state = load_latest_snapshot(log.data_dir.fs, log.directory, log.log_end_offset, log.name)
    if state is None or state.last_map_offset < log.log_start_offset:
        state = state or ProducerStateManager()
        state.last_map_offset = max(state.last_map_offset, log.log_start_offset)
        # Replay starts at the log start, so what happened between the snapshot and it is not seen: a
        # producer whose last data lies below the log start is dropped, its open transaction with it
        # (Kafka's ProducerStateManager.truncateAndReload), or a COMMIT below the log start that the
        # snapshot predates would leave that transaction open forever and pin the LSO.
        drop_producers_below(state, log.log_start_offset)
    offset = state.last_map_offset
    log.producer_state = state
    log.txn_index.truncate_from(offset)
    replayed = 0
    for data, position, header in log.iter_batches(offset):
        if header.is_control:
            marker = read_marker(data, position)
            if marker is not None:
                log.complete_transaction(header.producer_id, header.producer_epoch, marker[1], header.base_offset,
                                         marker[0] == CONTROL_ABORT, header.max_timestamp)
        else:
            state.apply(header, header.base_offset, header.max_timestamp)
        state.advance(header.next_offset)
        replayed += 1
    if replayed:
        logger.info("partition=%s rebuilt producer state from %d batches (%d producers)",
                    log.name, replayed, len(state.entries))
