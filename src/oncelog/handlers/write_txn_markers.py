"""WriteTxnMarkers (key 27), version 1, advertised as Kafka's brokers do (CLUSTER_ACTION with ACLs on).

Kafka's brokers send it to partition leaders; our coordinator writes markers in-process instead. Tools
use it: `oncelog transactions abort` (like `kafka-transactions.sh abort`) uses it to
close a hanging transaction the coordinator no longer knows, writing an ABORT marker with the producer
epoch and coordinator epoch the partition reports (DescribeProducers). Per partition: unknown →
UNKNOWN_TOPIC_OR_PARTITION; a stale producer or coordinator epoch → INVALID_PRODUCER_EPOCH /
TRANSACTION_COORDINATOR_FENCED; answered once the markers are durable.
"""

from __future__ import annotations

from typing import Any

from oncelog.coordinator.group.coordinator import OFFSETS_TOPIC
from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response
from oncelog.storage.api import Marker

from .base import AwaitCompletion, RequestContext

API_KEY = 27
VERSIONS = (1, 1)


def handle(context: RequestContext, request: Any) -> Any:
    broker = context.broker
    markers = [Marker(topic.name, index, int(marker.producer_id), int(marker.producer_epoch),
                      int(marker.coordinator_epoch), bool(marker.transaction_result))
               for marker in request.markers for topic in marker.topics for index in topic.partition_indexes]

    def respond(codes: list[ErrorCode]) -> Any:
        for marker, code in zip(markers, codes, strict=True):
            if marker.topic == OFFSETS_TOPIC and code == ErrorCode.none:
                # The producer's pending transactional offsets there are committed or dropped with it.
                broker.groups.complete_transaction(marker.producer_id, marker.commit, marker.partition)
        found = iter(codes)
        results = []
        for marker in request.markers:
            topics = []
            for topic in marker.topics:
                partitions = []
                for index in topic.partition_indexes:
                    partitions.append({"partition_index": index, "error_code": next(found)})
                topics.append({"name": topic.name, "partitions": partitions})
            results.append({"producer_id": marker.producer_id, "topics": topics})
        return build_response(API_KEY, context.api_version, {"markers": results})

    completion = broker.storage.write_markers(markers, broker.now_ms())
    return respond(completion.value()) if completion.done else AwaitCompletion(completion, respond)


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return {"markers": [
        {"producer_id": marker.producer_id, "topics": [
            {"name": topic.name, "partitions": [{"partition_index": index, "error_code": code}
                                                for index in topic.partition_indexes]}
            for topic in marker.topics]}
        for marker in request.markers]}
