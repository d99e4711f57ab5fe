"""WriteTxnMarkers (key 27), version 1: internal, NOT advertised in ApiVersions.

Kafka's brokers send it to partition leaders; our coordinator writes markers in-process instead. It is
served for tooling only: `oncelog transactions abort` (like `kafka-transactions.sh abort`) uses it to
close a hanging transaction the coordinator no longer knows, writing an ABORT marker with the producer
epoch and coordinator epoch the partition reports (DescribeProducers). Per partition: unknown →
UNKNOWN_TOPIC_OR_PARTITION; a stale producer or coordinator epoch → INVALID_PRODUCER_EPOCH /
TRANSACTION_COORDINATOR_FENCED; answered once the markers are durable.
"""

from __future__ import annotations

from typing import Any

from oncelog.coordinator.group.coordinator import OFFSETS_TOPIC
from oncelog.errors import ErrorCode, KafkaError
from oncelog.log.partition import PartitionLog
from oncelog.protocol.codec import build_response

from .base import AwaitDurable, RequestContext

API_KEY = 27
VERSIONS = (1, 1)


def handle(context: RequestContext, request: Any) -> Any:
    broker = context.broker
    written: list[tuple[PartitionLog, int]] = []
    markers = []
    for marker in request.markers:
        commit = bool(marker.transaction_result)
        topics = []
        for topic in marker.topics:
            partitions = []
            for index in topic.partition_indexes:
                log = broker.logs.get(topic.name, index)
                code = ErrorCode.none
                if log is None:
                    code = ErrorCode.unknown_topic_or_partition
                else:
                    try:
                        offset = log.append_marker(int(marker.producer_id), int(marker.producer_epoch),
                                                   int(marker.coordinator_epoch), commit, broker.now_ms())
                    except KafkaError as error:
                        code = error.code
                    else:
                        if topic.name == OFFSETS_TOPIC:
                            broker.groups.complete_transaction(int(marker.producer_id), commit, index)
                        broker.log_changed(log)
                        written.append((log, offset + 1))
                partitions.append({"partition_index": index, "error_code": code})
            topics.append({"name": topic.name, "partitions": partitions})
        markers.append({"producer_id": marker.producer_id, "topics": topics})

    def respond() -> Any:
        return build_response(API_KEY, context.api_version, {"markers": markers})

    def failed() -> Any:
        for entry in markers:
            for topic in entry["topics"]:
                for partition in topic["partitions"]:
                    if partition["error_code"] == ErrorCode.none:
                        partition["error_code"] = ErrorCode.kafka_storage_error
        return respond()

    return AwaitDurable(written, respond, failed) if written else respond()


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return {"markers": [
        {"producer_id": marker.producer_id, "topics": [
            {"name": topic.name, "partitions": [{"partition_index": index, "error_code": code}
                                                for index in topic.partition_indexes]}
            for topic in marker.topics]}
        for marker in request.markers]}
