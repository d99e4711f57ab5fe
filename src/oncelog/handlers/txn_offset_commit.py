"""TxnOffsetCommit (key 28), versions 0–3.

Behaviour: the group's `__consumer_offsets` partition must be in the producer's ongoing transaction
(AddOffsetsToTxn first): otherwise INVALID_TXN_STATE, a stale epoch INVALID_PRODUCER_EPOCH, an unknown
producer INVALID_PRODUCER_ID_MAPPING. v3 carries the consumer's generation, member id and instance id and
is checked as Kafka's KIP-447 rules (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, FENCED_INSTANCE_ID; never
REBALANCE_IN_PROGRESS). The offsets are written in a transactional batch and stay pending (invisible to
OffsetFetch, UNSTABLE_OFFSET_COMMIT with RequireStable) until the COMMIT marker; an ABORT drops them.
"""

from __future__ import annotations

from typing import Any

from oncelog.coordinator.group.coordinator import OFFSETS_TOPIC, OffsetCommit
from oncelog.coordinator.runtime import Completion, resolved_or
from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response
from oncelog.security.acl import Operation, ResourceType

from .base import AwaitCompletion, RequestContext

API_KEY = 28
VERSIONS = (0, 3)

_VERIFICATION_ERRORS = {
    ErrorCode.producer_fenced: ErrorCode.invalid_producer_epoch,
    ErrorCode.transaction_abortable: ErrorCode.invalid_txn_state,
}


def handle(context: RequestContext, request: Any) -> Any:
    broker = context.broker
    # The transactional id's WRITE and the group's READ are checked before (handlers/authorization.py).
    denied = {topic.name for topic in request.topics
              if not context.allowed(Operation.READ, ResourceType.TOPIC, topic.name)}
    commits = [
        OffsetCommit(topic.name, int(p.partition_index), int(p.committed_offset),
                     int(getattr(p, "committed_leader_epoch", -1)), p.committed_metadata)
        for topic in request.topics for p in topic.partitions if topic.name not in denied
    ]
    partition = (OFFSETS_TOPIC, broker.groups.partition_of(request.group_id))
    verified = resolved_or(broker.transactions.verify_partition(
        request.transactional_id, int(request.producer_id), int(request.producer_epoch), partition))
    completion: Completion[dict[tuple[str, int], ErrorCode]] = Completion()

    def commit(problem: ErrorCode | None) -> None:
        if problem is not None:
            code = _VERIFICATION_ERRORS.get(problem, problem)
            completion.resolve({(c.topic, c.partition): code for c in commits})
            return
        broker.groups.commit_transactional_offsets(
            request.group_id, int(request.producer_id), int(request.producer_epoch),
            getattr(request, "member_id", ""), getattr(request, "group_instance_id", None),
            int(getattr(request, "generation_id", -1)), commits).on_done(completion.resolve)

    verified.on_done(commit)

    def respond(errors: dict[tuple[str, int], ErrorCode]) -> Any:
        errors = {**errors, **{(topic.name, int(p.partition_index)): ErrorCode.topic_authorization_failed
                               for topic in request.topics if topic.name in denied for p in topic.partitions}}
        topics = [{"name": topic.name, "partitions": [
            {"partition_index": p.partition_index, "error_code": errors[(topic.name, int(p.partition_index))]}
            for p in topic.partitions]} for topic in request.topics]
        return build_response(API_KEY, context.api_version, {"throttle_time": 0, "topics": topics})

    return AwaitCompletion(completion, respond)


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return {"throttle_time": 0, "topics": [
        {"name": topic.name, "partitions": [{"partition_index": p.partition_index, "error_code": code}
                                            for p in topic.partitions]}
        for topic in request.topics]}
