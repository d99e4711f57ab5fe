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

from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response, duration_ms
from oncelog.security.acl import Operation, ResourceType
from oncelog.storage.api import LEADER_EPOCH, PartitionData, PartitionKey, Read

from .base import AwaitCompletion, AwaitData, RequestContext

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
        # Kafka answers an errored partition with empty records, never null: librdkafka rejects a whole
        # response holding a null record set ("invalid MessageSetSize -1").
        "records": b"",
    }


def _entry(index: int, data: PartitionData) -> dict[str, Any]:
    aborted = None
    if data.aborted is not None:
        aborted = [{"producer_id": producer_id, "first_offset": first_offset}
                   for producer_id, first_offset in data.aborted]
    return {
        "partition_index": index,
        "error_code": data.error,
        "high_watermark": data.high_watermark,
        "last_stable_offset": data.last_stable_offset,
        "log_start_offset": data.log_start_offset,
        "aborted_transactions": aborted,
        "preferred_read_replica": -1,
        "records": data.records if data.records is not None else b"",
    }


def _respond(context: RequestContext, request: Any, deadline_passed: bool) -> Any:
    read_committed = int(getattr(request, "isolation_level", 0)) == READ_COMMITTED
    # The broker's fetch.max.bytes caps what one response may carry, whatever the client asks for.
    max_bytes = min(int(getattr(request, "max_bytes", 2**31 - 1)), context.broker.config.fetch_max_bytes)
    reads: list[Read] = []
    entries: list[dict[str, Any] | None] = []
    for topic in request.topics:
        readable = context.allowed(Operation.READ, ResourceType.TOPIC, topic.topic)
        for partition in topic.partitions:
            if not readable:
                entries.append(_error(partition.partition, ErrorCode.topic_authorization_failed))
                continue
            if int(getattr(partition, "current_leader_epoch", -1)) > LEADER_EPOCH:
                entries.append(_error(partition.partition, ErrorCode.unknown_leader_epoch))
                continue
            entries.append(None)
            reads.append(Read(topic.topic, partition.partition, int(partition.fetch_offset),
                              int(partition.partition_max_bytes)))

    def finish(results: list[PartitionData]) -> Any:
        found = iter(results)
        responses = []
        total = 0
        waiting_on: list[PartitionKey] = []
        served_by_topic: dict[str, int] = {}
        position = 0
        for topic in request.topics:
            partitions = []
            for partition in topic.partitions:
                entry = entries[position]
                position += 1
                if entry is None:
                    data = next(found)
                    entry = _entry(partition.partition, data)
                    served = len(data.records or b"")
                    total += served
                    if served:
                        served_by_topic[topic.topic] = served_by_topic.get(topic.topic, 0) + served
                    if data.error != ErrorCode.unknown_topic_or_partition:
                        waiting_on.append((topic.topic, partition.partition))
                partitions.append(entry)
            responses.append({"topic": topic.topic, "partitions": partitions})
        wait_ms = min(duration_ms(request.max_wait), context.broker.config.fetch_max_wait_ms_max)
        if not deadline_passed and total < int(request.min_bytes) and wait_ms > 0 and waiting_on:
            return AwaitData(waiting_on, wait_ms, lambda passed: _respond(context, request, passed))
        for name, served in served_by_topic.items():  # counted once the bytes are really answered
            context.broker.metrics.served(name, served)
        return build_response(
            API_KEY,
            context.api_version,
            {"throttle_time": 0, "error_code": ErrorCode.none, "session_id": 0, "responses": responses},
        )

    if not reads:
        return finish([])
    completion = context.broker.storage.fetch(reads, max_bytes, read_committed)
    if completion.done:
        return finish(completion.value())
    return AwaitCompletion(completion, finish)


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
