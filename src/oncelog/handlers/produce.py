"""Produce (key 0), versions 3–10.

Behaviour:
- acks must be -1, 0 or 1, else INVALID_REQUIRED_ACKS for every partition.
- Each partition's records must be exactly one RecordBatch v2 that passes `validate_client_batch`
  (size ≤ the topic's max.message.bytes → MESSAGE_TOO_LARGE, CRC → CORRUPT_MESSAGE, counts, no control
  batches → INVALID_RECORD). Records are never decompressed.
- Unknown topic or partition → UNKNOWN_TOPIC_OR_PARTITION (Produce never auto-creates; Metadata does).
  Internal topics (`__*`) cannot be written by clients → INVALID_TOPIC_EXCEPTION, as in Kafka.
- Batches of idempotent producers (producer id ≥ 0) are checked against the partition's producer state
  first (docs/protocol.md, Idempotent producers): a retried batch still in the last-five window is answered
  NONE with its *original* base offset and not written again; a stale epoch → INVALID_PRODUCER_EPOCH;
  a sequence gap → OUT_OF_ORDER_SEQUENCE_NUMBER; an unknown producer is accepted at any sequence.
- Transactions: a producer's first transactional batch on a partition is verified with the transaction
  coordinator (KIP-890 part 1): partition not in its ongoing transaction → INVALID_TXN_STATE, stale epoch
  → INVALID_PRODUCER_EPOCH, transaction completing → NOT_ENOUGH_REPLICAS (retriable). A plain batch from
  a producer with an open transaction → INVALID_TXN_STATE.
- The log assigns offsets by rewriting the batch's base offset and leader epoch. LogAppendTime topics get
  the timestamp-type bit, MaxTimestamp = now and a new CRC; `log_append_time` is then now, else -1.
- acks=1 is answered once the batch is written to the segment file (the page cache survives kill -9);
  acks=-1 (all) only after the flusher fsynced it; acks=0 gets no response, and a failure closes the
  connection (`KafkaApis.handleProduceRequest`).
"""

from __future__ import annotations

from typing import Any

from oncelog.config import BrokerConfig
from oncelog.errors import ErrorCode, KafkaError
from oncelog.log.manager import INTERNAL_TOPICS
from oncelog.protocol.codec import build_response
from oncelog.protocol.compression import CODECS, CompressionError
from oncelog.protocol.records import (
    BATCH_HEADER_BYTES,
    BatchHeader,
    first_record_where,
    parse_header,
    recompressed,
    validate_client_batch,
    with_log_append_time,
)
from oncelog.security.acl import Operation, ResourceType
from oncelog.storage.api import PRODUCE_VERIFICATION_ERRORS, Append, Appended, AppendResult, PartitionKey
from oncelog.topic_config import LONG_MAX, TopicConfig

from .base import CLOSE_CONNECTION, NO_RESPONSE, AwaitCompletion, RequestContext

API_KEY = 0
VERSIONS = (3, 10)

_VALID_ACKS = (-1, 0, 1)


def _partition_result(index: int, code: ErrorCode, base_offset: int = -1, log_append_time: int = -1,
                      log_start_offset: int = -1, message: str | None = None,
                      record_errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "index": index,
        "error_code": code,
        "base_offset": base_offset,
        "log_append_time": log_append_time,
        "log_start_offset": log_start_offset,
        "record_errors": record_errors or [],
        "error_message": message,
    }


def _verifier(context: RequestContext) -> Any:
    """KIP-890 part 1, asked by the storage for a producer's first transactional batch on a partition: it
    must belong to its ongoing transaction with this partition added (a zombie can't open a transaction
    the coordinator never sees)."""
    transactions = context.broker.transactions

    def verify(transactional_id: str | None, header: BatchHeader, partition: PartitionKey) -> ErrorCode | None:
        problem = transactions.verify_partition(transactional_id, header.producer_id, header.producer_epoch,
                                                partition)
        return None if problem is None else PRODUCE_VERIFICATION_ERRORS.get(problem, problem)

    return verify


class _Pending:
    """One partition of the request: its response entry, and the append waiting for its result."""

    __slots__ = ("entry", "log_append_time")

    def __init__(self, entry: dict[str, Any], log_append_time: int) -> None:
        self.entry = entry
        self.log_append_time = log_append_time


def _validate(context: RequestContext, topic_name: str, index: int, records: bytes | None,
              now_ms: int) -> tuple[Append, int] | dict[str, Any]:
    """The batch to append with its LogAppendTime (-1 on CreateTime topics), or the partition's error
    entry (the checks that need no storage round trip)."""
    broker = context.broker
    if topic_name in INTERNAL_TOPICS:  # first, as Kafka's ReplicaManager.appendToLocalLog
        return _partition_result(index, ErrorCode.invalid_topic_exception, message="internal topic")
    topic = broker.storage.topic(topic_name)
    if topic is None or not 0 <= index < topic.partitions:
        return _partition_result(index, ErrorCode.unknown_topic_or_partition)
    try:
        if records is None:
            raise KafkaError(ErrorCode.invalid_record, "records are null")
        header = validate_client_batch(records, topic.config.int_value("max.message.bytes", broker.config))
        refused = _refused_record(topic.config, broker.config, topic_name, index, records, header, now_ms)
        if refused is not None:
            return refused
        records, header = _topic_codec(topic.config, broker.config, records, header)
        log_append_time = -1
        if topic.config.value("message.timestamp.type", broker.config) == "LogAppendTime":
            records = with_log_append_time(records, now_ms)
            header = parse_header(records)
            log_append_time = now_ms
    except KafkaError as error:
        return _partition_result(index, error.code, message=error.message)
    return Append(topic_name, index, records, header), log_append_time


def _refused_record(topic: TopicConfig, broker: BrokerConfig, topic_name: str, index: int, records: bytes,
                    header: BatchHeader, now_ms: int) -> dict[str, Any] | None:
    """Kafka's per-record LogValidator checks, made only where a topic config asks for them (they decode
    the batch): a key on compacted topics, CreateTime timestamps within message.timestamp.before/after.max.ms."""
    if "compact" in topic.value("cleanup.policy", broker):
        wrong = first_record_where(records, header, lambda record: record.key is None)
        if wrong is not None:
            return _record_error(index, ErrorCode.invalid_record, wrong, topic_name,
                                 "Compacted topic cannot accept message without key")
    before = topic.int_value("message.timestamp.before.max.ms", broker)
    after = topic.int_value("message.timestamp.after.max.ms", broker)
    if (before, after) == (LONG_MAX, LONG_MAX) or topic.value("message.timestamp.type", broker) != "CreateTime":
        return None
    low, high = now_ms - before, now_ms + after
    wrong = first_record_where(records, header, lambda record: not low <= record.timestamp <= high)
    if wrong is None:
        return None
    return _record_error(index, ErrorCode.invalid_timestamp, wrong, topic_name,
                         f"Timestamp is out of range ({low}..{high})")


def _topic_codec(topic: TopicConfig, broker: BrokerConfig, records: bytes,
                 header: BatchHeader) -> tuple[bytes, BatchHeader]:
    """The batch in the topic's compression.type (Kafka re-compresses what a producer sent otherwise);
    as sent for `producer` or when it already matches. Checked against max.message.bytes again."""
    wanted = topic.value("compression.type", broker)
    if wanted == "producer":
        return records, header
    codec = 0 if wanted == "uncompressed" else CODECS[wanted]
    if header.compression == codec:
        return records, header
    level = topic.int_value(f"compression.{wanted}.level", broker) if wanted in ("gzip", "lz4", "zstd") else None
    try:
        records = recompressed(records, header, codec, level)
    except (CompressionError, ValueError) as error:
        raise KafkaError(ErrorCode.invalid_record, f"cannot read the batch to re-compress it: {error}") from error
    header = parse_header(records)
    limit = topic.int_value("max.message.bytes", broker)
    if header.size > limit:
        raise KafkaError(ErrorCode.message_too_large, f"re-compressed as {wanted} the batch takes {header.size} "
                                                       f"bytes, over max.message.bytes {limit}")
    return records, header


def _record_error(index: int, code: ErrorCode, record: int, topic_name: str, problem: str) -> dict[str, Any]:
    return _partition_result(index, code, message=f"{problem} in topic partition {topic_name}-{index}.",
                             record_errors=[{"batch_index": record, "batch_index_error_message": f"{problem}."}])


def _has_transactional_batches(request: Any) -> bool:
    for topic_data in request.topic_data:
        for partition_data in topic_data.partition_data:
            records = partition_data.records
            if records is not None and len(records) >= BATCH_HEADER_BYTES and parse_header(records).is_transactional:
                return True
    return False


def handle(context: RequestContext, request: Any) -> Any:
    acks = int(request.acks)
    transactional_id = request.transactional_id
    # Kafka's handleProduceRequest: transactional records need WRITE on their transactional id, so
    # transactional batches sent without one are refused when an authorizer is on.
    guarded = transactional_id is not None or (context.broker.authorizer.config.enabled
                                               and _has_transactional_batches(request))
    if guarded and (transactional_id is None
                    or not context.allowed(Operation.WRITE, ResourceType.TRANSACTIONAL_ID, transactional_id)):
        if acks == 0:
            return CLOSE_CONNECTION
        return build_response(API_KEY, context.api_version,
                              error_response(request, ErrorCode.transactional_id_authorization_failed))
    broker = context.broker
    now_ms = broker.now_ms()
    appends: list[Append] = []
    pending: list[_Pending] = []
    topics: list[dict[str, Any]] = []
    for topic_data in request.topic_data:
        partitions = []
        writable = context.allowed(Operation.WRITE, ResourceType.TOPIC, topic_data.name)
        for partition_data in topic_data.partition_data:
            if not writable:
                partitions.append(_partition_result(partition_data.index, ErrorCode.topic_authorization_failed))
                continue
            if acks not in _VALID_ACKS:
                partitions.append(_partition_result(partition_data.index, ErrorCode.invalid_required_acks))
                continue
            checked = _validate(context, topic_data.name, partition_data.index, partition_data.records, now_ms)
            if isinstance(checked, dict):
                partitions.append(checked)
                continue
            entry = _partition_result(partition_data.index, ErrorCode.none)
            partitions.append(entry)
            appends.append(checked[0])
            pending.append(_Pending(entry, checked[1]))
        topics.append({"name": topic_data.name, "partition_responses": partitions})

    def respond(results: list[AppendResult]) -> Any:
        metrics = broker.metrics
        for waiting, append, result in zip(pending, appends, results, strict=True):
            entry = waiting.entry
            if isinstance(result, Appended):
                if result.duplicate:
                    metrics.duplicates.labels(append.topic).inc()
                else:
                    metrics.appended(append.topic, len(append.records), append.header.record_count)
                entry["base_offset"] = result.base_offset
                entry["log_start_offset"] = result.log_start_offset
                if waiting.log_append_time >= 0:
                    entry["log_append_time"] = result.timestamp if result.duplicate else waiting.log_append_time
            else:
                entry.update(error_code=result.code, error_message=result.message,
                             log_start_offset=result.log_start_offset)
        if acks == 0:
            failed = any(p["error_code"] != ErrorCode.none for t in topics for p in t["partition_responses"])
            return CLOSE_CONNECTION if failed else NO_RESPONSE
        return build_response(API_KEY, context.api_version, {"responses": topics, "throttle_time": 0})

    if not appends:
        return respond([])
    completion = broker.storage.append(request.transactional_id, appends, acks, now_ms, _verifier(context))
    if completion.done:
        return respond(completion.value())
    return AwaitCompletion(completion, respond)


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    """Kafka's `ProduceRequest.getErrorResponse`: every partition gets the error."""
    return {"throttle_time": 0, "responses": [
        {"name": topic.name, "partition_responses": [_partition_result(p.index, code) for p in topic.partition_data]}
        for topic in request.topic_data]}
