"""OffsetForLeaderEpoch (key 23), versions 2–4.

Behaviour: the leader epoch never changes on one node, so every epoch up to ours ends at the log end
offset. A requested epoch above ours is answered as Kafka's `lastOffsetForLeaderEpoch` answers an epoch it
has not seen (epoch -1, offset -1); a `current_leader_epoch` above ours → UNKNOWN_LEADER_EPOCH.
librdkafka only sends this when a leader epoch changes, which never happens here (KIP-320).
"""

from __future__ import annotations

from typing import Any

from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response
from oncelog.security.acl import Operation, ResourceType
from oncelog.storage.api import LEADER_EPOCH, PartitionOffsets

from .base import AwaitCompletion, RequestContext

API_KEY = 23
VERSIONS = (2, 4)


def handle(context: RequestContext, request: Any) -> Any:
    keys = [(topic.topic, partition.partition) for topic in request.topics for partition in topic.partitions]
    denied = {topic.topic for topic in request.topics
              if not context.allowed(Operation.DESCRIBE, ResourceType.TOPIC, topic.topic)}

    def respond(offsets: list[PartitionOffsets]) -> Any:
        found = iter(offsets)
        topics = []
        for topic in request.topics:
            partitions = []
            for partition in topic.partitions:
                state = next(found)
                entry: dict[str, Any] = {"partition": partition.partition, "error_code": ErrorCode.none}
                if topic.topic in denied:
                    entry["error_code"] = ErrorCode.topic_authorization_failed
                elif state.error != ErrorCode.none:
                    entry["error_code"] = state.error
                elif int(partition.current_leader_epoch) > LEADER_EPOCH:
                    entry["error_code"] = ErrorCode.unknown_leader_epoch
                elif int(partition.leader_epoch) > LEADER_EPOCH:
                    entry.update(leader_epoch=-1, end_offset=-1)
                else:
                    entry.update(leader_epoch=LEADER_EPOCH, end_offset=state.log_end_offset)
                partitions.append(entry)
            topics.append({"topic": topic.topic, "partitions": partitions})
        return build_response(API_KEY, context.api_version, {"throttle_time": 0, "topics": topics})

    completion = context.broker.storage.partition_offsets(keys)
    return respond(completion.value()) if completion.done else AwaitCompletion(completion, respond)


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return {"throttle_time": 0, "topics": [
        {"topic": topic.topic, "partitions": [
            {"partition": p.partition, "error_code": code, "leader_epoch": -1, "end_offset": -1}
            for p in topic.partitions]}
        for topic in request.topics]}
