"""ElectLeaders (key 43, versions 0–2), AlterPartitionReassignments (key 45, version 0) and
ListPartitionReassignments (key 46, version 0), answered as a Kafka cluster whose every partition has
one replica would answer them (`kafka-leader-election.sh`, `kafka-reassign-partitions.sh`).

- ElectLeaders: ALTER on the cluster; each named partition → ELECTION_NOT_NEEDED (its one replica leads
  already), unknown → UNKNOWN_TOPIC_OR_PARTITION; `topic_partitions` null (every partition) lists none,
  as Kafka lists only the partitions it elected.
- AlterPartitionReassignments: ALTER on the cluster; replicas equal to the partition's one replica, or
  null (cancel) when none is in progress → NONE for the first, NO_REASSIGNMENT_IN_PROGRESS for the
  second; any other replica set → INVALID_REPLICA_ASSIGNMENT (one copy, placed by the storage).
- ListPartitionReassignments: DESCRIBE on the cluster; never any in progress.
"""

from __future__ import annotations

from typing import Any

from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response
from oncelog.security.acl import Operation, ResourceType

from .base import RequestContext


def _known(context: RequestContext, topic: str, partition: int) -> bool:
    info = context.broker.storage.topic(topic)
    return info is not None and 0 <= partition < info.partitions


def elect_leaders(context: RequestContext, request: Any, api_key: int) -> Any:
    if not context.allowed(Operation.ALTER, ResourceType.CLUSTER):
        return build_response(api_key, context.api_version, {"throttle_time": 0, "error_code":
                                                             ErrorCode.cluster_authorization_failed,
                                                             "replica_election_results": []})
    if request.topic_partitions is None:  # every partition: Kafka lists only those it elected (none here)
        return build_response(api_key, context.api_version, {"throttle_time": 0, "error_code": ErrorCode.none,
                                                             "replica_election_results": []})
    wanted = [(t.topic, [int(p) for p in t.partitions]) for t in request.topic_partitions]
    results = []
    for topic, partitions in wanted:
        results.append({"topic": topic, "partition_result": [
            {"partition_id": partition,
             "error_code": ErrorCode.election_not_needed if _known(context, topic, partition)
             else ErrorCode.unknown_topic_or_partition,
             "error_message": None} for partition in partitions]})
    return build_response(api_key, context.api_version, {"throttle_time": 0, "error_code": ErrorCode.none,
                                                         "replica_election_results": results})


def alter_reassignments(context: RequestContext, request: Any, api_key: int) -> Any:
    if not context.allowed(Operation.ALTER, ResourceType.CLUSTER):
        return build_response(api_key, context.api_version, {
            "throttle_time": 0, "error_code": ErrorCode.cluster_authorization_failed,
            "error_message": None, "responses": []})
    leader = context.broker.cluster.leader
    responses = []
    for topic in request.topics:
        answers = []
        for partition in topic.partitions:
            index = int(partition.partition_index)
            if not _known(context, topic.name, index):
                code, message = ErrorCode.unknown_topic_or_partition, None
            elif partition.replicas is None:
                code, message = ErrorCode.no_reassignment_in_progress, None
            elif [int(r) for r in partition.replicas] == [leader(topic.name, index)]:
                code, message = ErrorCode.none, None
            else:
                code, message = ErrorCode.invalid_replica_assignment, "every partition has one replica here"
            answers.append({"partition_index": index, "error_code": code, "error_message": message})
        responses.append({"name": topic.name, "partitions": answers})
    return build_response(api_key, context.api_version, {"throttle_time": 0, "error_code": ErrorCode.none,
                                                         "error_message": None, "responses": responses})


def list_reassignments(context: RequestContext, request: Any, api_key: int) -> Any:
    code = ErrorCode.none if context.allowed(Operation.DESCRIBE, ResourceType.CLUSTER) else \
        ErrorCode.cluster_authorization_failed
    return build_response(api_key, context.api_version, {"throttle_time": 0, "error_code": code,
                                                         "error_message": None, "topics": []})
