"""Log compaction for `cleanup.policy=compact` topics (the internal topics first of all).

Theory of operation (Kafka's `LogCleaner`, simplified for one node and small internal topics): a pass
builds an offset map `key → offset of its latest record` over the whole log, then rewrites every
non-active segment that holds superseded records, keeping only records that are the latest for their key.
A tombstone (null value) is kept until its segment is older than `delete.retention.ms`, so a reader that
was behind still sees the delete; then it goes too. Batches keep their base offset and last offset delta
(`retain_records`), so offsets never move and producer state is unaffected.

Transactional and control batches and compressed batches are kept whole: their records do not enter the
offset map and nothing is removed from them. (Kafka removes aborted transactional data here as well;
until transactions arrive, internal topics hold none.)

Swap, crash-safe: the cleaned bytes go to `{base}.log.cleaned` (fsynced), the old indexes are deleted, the
cleaned file is renamed over the `.log` and the directory fsynced; the segment is then reopened and its
indexes rebuilt. A crash before the rename leaves a stray `.cleaned` file (removed on open); after it,
the missing index makes the segment recover on open. An I/O error before the rename leaves the segment
as it was (the pass stops, the next one retries); after it, the partition goes offline.

A batch whose records cannot be decoded (a client can write a CRC-valid batch of garbage to a compacted
topic) makes the partition uncleanable: `Uncleanable` is raised and the caller stops cleaning it, as
Kafka's LogCleaner marks such partitions and moves on. Nothing is rewritten in that case.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from oncelog.fs import write_synced
from oncelog.protocol.records import iter_batches, iter_records, retain_records

from .partition import PartitionLog
from .segment import LogSegment

logger = logging.getLogger(__name__)

READ_CHUNK_BYTES = 4 * 1024 * 1024
CLEANED_SUFFIX = ".cleaned"


class Uncleanable(Exception):
    """The partition holds records the cleaner cannot decode; it must not be cleaned again."""


@dataclass(frozen=True, slots=True)
class CleanResult:
    segments_rewritten: int
    bytes_before: int
    bytes_after: int


def _segment_bytes(segment: LogSegment) -> bytes:
    return segment.read(segment.base_offset, segment.size, segment.next_offset, True) if segment.size else b""


def _offset_map(log: PartitionLog) -> dict[bytes, int]:
    latest: dict[bytes, int] = {}
    for segment in log.segments:
        data = _segment_bytes(segment)
        for position, header in iter_batches(data):
            if header.is_control or header.is_transactional or header.compression != 0:
                continue
            for record in iter_records(data, position):
                if record.key is not None:
                    latest[record.key] = record.offset
    return latest


def _clean_segment_bytes(data: bytes, latest: dict[bytes, int], drop_tombstones: bool) -> bytes | None:
    """The segment's bytes with superseded records removed, or None if nothing would change."""
    out = bytearray()
    changed = False
    for position, header in iter_batches(data):
        batch = data[position : position + header.size]
        if header.is_control or header.is_transactional or header.compression != 0:
            out += batch
            continue
        keep = {
            record.offset
            for record in iter_records(data, position)
            if record.key is None
            or (latest.get(record.key) == record.offset and (record.value is not None or not drop_tombstones))
        }
        if len(keep) == header.record_count:
            out += batch
            continue
        changed = True
        if keep or header.producer_id >= 0:  # an idempotent producer's empty batch still carries its sequence
            out += retain_records(data, position, keep)
    return bytes(out) if changed else None


def clean(log: PartitionLog, now_ms: int, delete_retention_ms: int) -> CleanResult:
    """One compaction pass over `log` (the active segment is read for the map, never rewritten).
    Raises Uncleanable for undecodable records, OSError or KafkaError for disk errors."""
    try:
        latest = _offset_map(log)
    except ValueError as error:
        raise Uncleanable(str(error)) from error
    rewritten = before = after = 0
    for segment in list(log.segments[:-1]):
        data = _segment_bytes(segment)
        drop_tombstones = segment.last_modified_ms < now_ms - delete_retention_ms
        try:
            cleaned = _clean_segment_bytes(data, latest, drop_tombstones)
        except ValueError as error:
            raise Uncleanable(f"segment {segment.log_path.name}: {error}") from error
        if cleaned is None:
            continue
        before += len(data)
        after += len(cleaned)
        rewritten += 1
        log.replace_segment(segment, _write_cleaned(log, segment, cleaned))
    if rewritten:
        logger.info("partition=%s compacted %d segments: %d → %d bytes", log.name, rewritten, before, after)
    return CleanResult(rewritten, before, after)


def _write_cleaned(log: PartitionLog, segment: LogSegment, data: bytes) -> Path:
    path = segment.log_path.with_name(segment.log_path.name + CLEANED_SUFFIX)
    try:
        write_synced(log.data_dir.fs, path, data)
    except OSError:
        with contextlib.suppress(OSError):  # a stray .cleaned file is removed when the partition is next opened
            log.data_dir.fs.unlink(path)
        raise
    return path
