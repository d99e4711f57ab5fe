"""What a handler receives and what it may return.

Theory of operation: a handler is a plain function `handle(context, request) -> Outcome` that runs on the
broker's event loop without awaiting (only `server/` awaits). When a
response must wait (acks=all durability, a long-poll fetch), the handler returns a description of the
wait and a continuation, and the server does the waiting between two synchronous calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from oncelog.coordinator.runtime import Completion
from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response
from oncelog.security.acl import CLUSTER_NAME, Operation, ResourceType, normal_host
from oncelog.security.principal import ANONYMOUS_PRINCIPAL, KafkaPrincipal

if TYPE_CHECKING:
    from oncelog.broker import Broker
    from oncelog.storage.api import PartitionKey


@dataclass(frozen=True, slots=True)
class RequestContext:
    broker: Broker
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    peer: str
    listener: str = "PLAINTEXT"
    """The name of the listener the request came through (Metadata answers with its advertised address)."""
    session: Any = None
    """The connection's `SaslSession` on a SASL listener, else None."""
    principal: KafkaPrincipal = ANONYMOUS_PRINCIPAL
    """Who sent the request: `User:ANONYMOUS` on PLAINTEXT, the certificate's or the SASL user's name."""

    @property
    def client_host(self) -> str:
        return normal_host(self.peer.rpartition(":")[0] or self.peer)

    def allowed(self, operation: Operation, resource_type: ResourceType, name: str = CLUSTER_NAME) -> bool:
        """May this request's principal do `operation` on the resource (always, without an authorizer)?"""
        return self.broker.authorizer.authorize(self.principal, self.client_host, operation, resource_type, name)

    def authorized_operations(self, wanted: bool, resource_type: ResourceType, name: str = CLUSTER_NAME) -> int:
        """The `*_authorized_operations` bit field of Metadata, DescribeCluster and DescribeGroups: bit N for
        each operation (code N) the principal may do on the resource, among those that apply to its type
        (Kafka's `AclEntry.supportedOperations`; all of them without an authorizer); INT32_MIN when the
        request did not ask."""
        if not wanted:
            return AUTHORIZED_OPERATIONS_OMITTED
        bits = 0
        for operation in SUPPORTED_OPERATIONS[resource_type]:
            if self.allowed(operation, resource_type, name):
                bits |= 1 << int(operation)
        return bits


AUTHORIZED_OPERATIONS_OMITTED = -(2**31)
_O = Operation
SUPPORTED_OPERATIONS: dict[ResourceType, tuple[Operation, ...]] = {
    ResourceType.TOPIC: (_O.READ, _O.WRITE, _O.CREATE, _O.DESCRIBE, _O.DELETE, _O.ALTER, _O.DESCRIBE_CONFIGS,
                         _O.ALTER_CONFIGS),
    ResourceType.GROUP: (_O.READ, _O.DESCRIBE, _O.DELETE, _O.DESCRIBE_CONFIGS, _O.ALTER_CONFIGS),
    ResourceType.CLUSTER: (_O.CREATE, _O.CLUSTER_ACTION, _O.DESCRIBE_CONFIGS, _O.ALTER_CONFIGS, _O.IDEMPOTENT_WRITE,
                           _O.ALTER, _O.DESCRIBE),
    ResourceType.TRANSACTIONAL_ID: (_O.DESCRIBE, _O.WRITE),
}


class _NoResponse:
    """acks=0 produce: Kafka sends nothing back."""


class _CloseConnection:
    """acks=0 produce that failed: Kafka closes the connection so the client notices."""


NO_RESPONSE: Final = _NoResponse()
CLOSE_CONNECTION: Final = _CloseConnection()


@dataclass(frozen=True, slots=True)
class AwaitData:
    """Wake when any of `partitions` changes or `wait_ms` passes, then call `retry(deadline_passed)`."""

    partitions: list[PartitionKey]
    wait_ms: int
    retry: Callable[[bool], Any]


@dataclass(frozen=True, slots=True)
class AwaitCompletion:
    """Answer with `respond(value)` once `completion` is resolved (a rebalance, a durable write, a storage
    round trip)."""

    completion: Completion[Any]
    respond: Callable[[Any], Any]


def answer(result: Any, respond: Callable[[Any], Any]) -> Any:
    """`respond(value)` now if `result` is a value or a resolved Completion, else once it resolves (the
    local coordinators answer from memory, the PostgreSQL ones after a database round trip)."""
    if isinstance(result, Completion):
        return respond(result.value()) if result.done else AwaitCompletion(result, respond)
    return respond(result)


Outcome = Any
"""A kio response object, NO_RESPONSE, CLOSE_CONNECTION, AwaitData or AwaitCompletion."""

Handler = Callable[[RequestContext, Any], Outcome]


ErrorResponder = Callable[[Any, ErrorCode], dict[str, Any]]
"""`error_response(request, code)`: the response fields naming `code` for everything the request asked."""


@dataclass(frozen=True, slots=True)
class ApiHandler:
    api_key: int
    name: str
    version_min: int
    version_max: int
    handle: Handler
    error_fields: ErrorResponder | None = None
    """Kafka's `AbstractRequest.getErrorResponse` for APIs without a top-level error code."""

    def error_response(self, api_version: int, request: Any, code: ErrorCode) -> Any:
        """A response to `request` that reports `code` (for a handler that failed unexpectedly)."""
        fields = self.error_fields(request, code) if self.error_fields else {"error_code": code, "throttle_time": 0}
        return build_response(self.api_key, api_version, fields, fill=True)
