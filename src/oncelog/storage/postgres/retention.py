"""Time and size retention on PostgreSQL: Kafka's `retention.ms` and `retention.bytes` for topics whose
cleanup.policy includes `delete`, with a batch as the unit the local log deletes a segment as.

The oldest batches go while they are expired (their newest timestamp is older than `retention.ms`) or
what stays without them is still at least `retention.bytes`; deletion is a prefix (the first batch that
stays keeps everything after it) and the newest batch always stays, as the local log keeps its active
segment. In one transaction that holds the partition's row lock (so no append interleaves): the batches
and the aborted-transaction ranges below the new start go and `log_start_offset` moves to the first
batch that stays. Producer state is kept (Kafka keeps it in its snapshots too). Compacted topics are not
touched: compaction on PostgreSQL is not done yet.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from oncelog.errors import ErrorCode

# The first batch that stays: the oldest one not deletable, or the newest one.
_FIRST_KEPT = """
    SELECT min(base_offset) FROM (
        SELECT base_offset, max_timestamp, size,
               sum(size) OVER (ORDER BY base_offset DESC) AS from_here,
               row_number() OVER (ORDER BY base_offset DESC) AS from_end
        FROM batch WHERE topic_id = %(topic_id)s AND partition = %(partition)s) batches
    WHERE from_end = 1
       OR NOT ((%(retention_ms)s >= 0 AND max_timestamp < %(cutoff_ms)s)
               OR (%(retention_bytes)s >= 0 AND from_here - size >= %(retention_bytes)s))
"""


async def retain(connection: psycopg.AsyncConnection[Any], topic_id: uuid.UUID, partition: int, now_ms: int,
                 retention_ms: int, retention_bytes: int) -> int | None:
    """Apply retention to one partition in its own transaction; the new log start offset if it moved."""
    async with connection.transaction():
        cursor = await connection.execute(
            "SELECT log_start_offset FROM partition_log WHERE topic_id = %s AND partition = %s FOR UPDATE",
            (topic_id, partition))
        row = await cursor.fetchone()
        if row is None:
            return None
        cursor = await connection.execute(_FIRST_KEPT, {
            "topic_id": topic_id, "partition": partition, "retention_ms": retention_ms,
            "cutoff_ms": now_ms - retention_ms, "retention_bytes": retention_bytes})
        kept = await cursor.fetchone()
        if kept is None or kept[0] is None or kept[0] <= row[0]:
            return None
        start = int(kept[0])
        await _move_log_start(connection, topic_id, partition, start)
        return start


async def delete_records(connection: psycopg.AsyncConnection[Any], topic_id: uuid.UUID, partition: int,
                         offset: int) -> tuple[ErrorCode, int]:
    """DeleteRecords on one partition, in its own transaction: the log start offset moves up to `offset`
    (-1: the high watermark) and the batches wholly below it go. (error, new low watermark)."""
    async with connection.transaction():
        cursor = await connection.execute(
            "SELECT log_start_offset, next_offset FROM partition_log WHERE topic_id = %s AND partition = %s"
            " FOR UPDATE", (topic_id, partition))
        row = await cursor.fetchone()
        if row is None:
            return ErrorCode.unknown_topic_or_partition, -1
        log_start, high_watermark = int(row[0]), int(row[1])
        target = high_watermark if offset == -1 else offset
        if not 0 <= target <= high_watermark:
            return ErrorCode.offset_out_of_range, -1
        if target <= log_start:
            return ErrorCode.none, log_start
        await _move_log_start(connection, topic_id, partition, target)
        return ErrorCode.none, target


async def _move_log_start(connection: psycopg.AsyncConnection[Any], topic_id: uuid.UUID, partition: int,
                          start: int) -> None:
    """Inside the caller's transaction (the partition row locked): drop the batches and aborted
    transactions wholly below `start` and make it the log start offset. (Retention's `start` is a batch's
    base offset, so "ends below it" and "begins below it" are the same batches there.)"""
    key = (topic_id, partition, start)
    await connection.execute("DELETE FROM batch WHERE topic_id = %s AND partition = %s AND last_offset < %s", key)
    await connection.execute("DELETE FROM aborted_txn WHERE topic_id = %s AND partition = %s AND last_offset < %s",
                             key)
    await connection.execute("UPDATE partition_log SET log_start_offset = %s WHERE topic_id = %s AND partition = %s",
                             (start, topic_id, partition))
