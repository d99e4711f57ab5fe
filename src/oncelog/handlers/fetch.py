"""Fetch (key 1), versions 4–12.

Behaviour:
- Reads whole stored batches, never re-encoded, from `fetch_offset` up to the high watermark
  (read_uncommitted) or the last stable offset (read_committed), at most `partition_max_bytes` per
  partition and `max_bytes` in all; the first partition with data always gets at least one whole batch
  even if it is larger (KIP-74), so no client can get stuck behind a big batch.
- Offsets below the log start offset or above the log end offset → OFFSET_OUT_OF_RANGE; an offset
  inside a batch returns that whole batch (clients skip the records before their offset).
- Long poll: with fewer than `min_bytes` available the server parks the request until a fetched
  partition's log changes or `max_wait` passes (capped by `fetch_max_wait_ms_max`).
- No fetch sessions (KIP-227): the response's session id is always 0, which makes clients send full
  fetches. A request naming an unknown session gets FETCH_SESSION_ID_NOT_FOUND.
- read_committed responses stop at the last stable offset and carry the aborted transactions overlapping
  the returned bytes (every entry with last offset ≥ fetch offset and first offset < the offset after the
  returned bytes), sorted by first offset (kafkajs relies on that order); read_uncommitted responses carry
  null, as Kafka does. Control batches are returned like any batch: each takes an offset.
"""

from __future__ import annotations

from typing import Any

from oncelog.broker import LEADER_EPOCH
from oncelog.errors import ErrorCode, KafkaError
from oncelog.log.partition import PartitionLog
from oncelog.protocol.codec import build_response, duration_ms
from oncelog.protocol.records import iter_batches

from .base import AwaitData, RequestContext

API_KEY = 1
VERSIONS = (4, 12)

READ_COMMITTED = 1


def _error(index: int, code: ErrorCode) -> dict[str, Any]:
    return {
        "partition_index": index,
        "error_code": code,
        "high_watermark": -1,
        "last_stable_offset": -1,
        "log_start_offset": -1,
        "aborted_transactions": None,
        "preferred_read_replica": -1,
        "records": None,
    }


def _read_partition(context: RequestContext, topic_name: str, partition: Any, max_bytes: int,
                    read_committed: bool, first: bool, logs: list[PartitionLog]) -> dict[str, Any]:
    index = partition.partition
    log = context.broker.logs.get(topic_name, index)
    if log is None:
        return _error(index, ErrorCode.unknown_topic_or_partition)
    current_leader_epoch = int(getattr(partition, "current_leader_epoch", -1))
    if current_leader_epoch > LEADER_EPOCH:
        return _error(index, ErrorCode.unknown_leader_epoch)
    logs.append(log)
    high_watermark = log.high_watermark
    last_stable_offset = log.last_stable_offset
    upper_bound = last_stable_offset if read_committed else high_watermark
    try:
        records = log.read(partition.fetch_offset, max_bytes, upper_bound, min_one_batch=first)
    except KafkaError as error:
        result = _error(index, error.code)
        result.update(high_watermark=high_watermark, last_stable_offset=last_stable_offset,
                      log_start_offset=log.log_start_offset)
        return result
    aborted = None
    if read_committed:
        returned_end = _end_offset(records) if records else partition.fetch_offset
        aborted = [{"producer_id": producer_id, "first_offset": first_offset}
                   for producer_id, first_offset in log.aborted_transactions(partition.fetch_offset, returned_end)]
    return {
        "partition_index": index,
        "error_code": ErrorCode.none,
        "high_watermark": high_watermark,
        "last_stable_offset": last_stable_offset,
        "log_start_offset": log.log_start_offset,
        "aborted_transactions": aborted,
        "preferred_read_replica": -1,
        "records": records,
    }


def _end_offset(records: bytes) -> int:
    """The offset after the last batch in `records` (whole batches, as the log returns them)."""
    end = 0
    for _position, header in iter_batches(records):
        end = header.next_offset
    return end


def _respond(context: RequestContext, request: Any, deadline_passed: bool) -> Any:
    read_committed = int(getattr(request, "isolation_level", 0)) == READ_COMMITTED
    # The broker's fetch.max.bytes caps what one response may carry, whatever the client asks for.
    remaining = min(int(getattr(request, "max_bytes", 2**31 - 1)), context.broker.config.fetch_max_bytes)
    total = 0
    logs: list[PartitionLog] = []
    responses = []
    for topic in request.topics:
        partitions = []
        for partition in topic.partitions:
            limit = max(0, min(int(partition.partition_max_bytes), remaining))
            result = _read_partition(context, topic.topic, partition, limit, read_committed, total == 0, logs)
            size = len(result["records"] or b"")
            total += size
            remaining -= size
            partitions.append(result)
        responses.append({"topic": topic.topic, "partitions": partitions})
    wait_ms = min(duration_ms(request.max_wait), context.broker.config.fetch_max_wait_ms_max)
    if not deadline_passed and total < int(request.min_bytes) and wait_ms > 0 and logs:
        return AwaitData(logs, wait_ms, lambda passed: _respond(context, request, passed))
    return build_response(
        API_KEY,
        context.api_version,
        {"throttle_time": 0, "error_code": ErrorCode.none, "session_id": 0, "responses": responses},
    )


def handle(context: RequestContext, request: Any) -> Any:
    session_id = int(getattr(request, "session_id", 0))
    if session_id != 0:
        return build_response(
            API_KEY,
            context.api_version,
            {"throttle_time": 0, "error_code": ErrorCode.fetch_session_id_not_found, "session_id": 0,
             "responses": []},
        )
    return _respond(context, request, deadline_passed=False)


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    """The top-level error (v7+) and every partition's, as Kafka's `FetchRequest.getErrorResponse`."""
    return {"throttle_time": 0, "error_code": code, "session_id": 0, "responses": [
        {"topic": topic.topic, "partitions": [_error(p.partition, code) for p in topic.partitions]}
        for topic in request.topics]}
