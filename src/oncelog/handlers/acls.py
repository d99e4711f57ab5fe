"""DescribeAcls (key 29), CreateAcls (30), DeleteAcls (31), versions 1–3 (Kafka 4 dropped v0, KIP-896).

As Kafka's `AclApis`: without an authorizer every one answers SECURITY_DISABLED; an invalid binding or
filter is INVALID_REQUEST naming the problem; creating an ACL that exists succeeds; changes are written
durably (security/acl_store.py) before the answer, and a disk failure answers KAFKA_STORAGE_ERROR with
nothing changed.
"""

from __future__ import annotations

import logging
from typing import Any

from oncelog.coordinator.runtime import Completion
from oncelog.errors import ErrorCode
from oncelog.logs import safe
from oncelog.security.acl import AclBinding, AclError, AclFilter, Operation, PatternType, Permission, ResourceType

from .base import RequestContext

logger = logging.getLogger(__name__)

DESCRIBE, CREATE, DELETE = 29, 30, 31
VERSIONS = (1, 3)
_DISABLED = "No Authorizer is configured on the broker (set authorizer.class.name)"


def _enum(kind: Any, value: int) -> Any:
    try:
        return kind(int(value))
    except ValueError:
        return kind(0)


def _binding(creation: Any) -> AclBinding:
    return AclBinding(_enum(ResourceType, creation.resource_type), str(creation.resource_name),
                      _enum(PatternType, getattr(creation, "resource_pattern_type", PatternType.LITERAL)),
                      str(creation.principal), str(creation.host), _enum(Operation, creation.operation),
                      _enum(Permission, creation.permission_type))


def _filter(request: Any) -> AclFilter:
    return AclFilter(_enum(ResourceType, request.resource_type_filter), request.resource_name_filter,
                     _enum(PatternType, getattr(request, "pattern_type_filter", PatternType.LITERAL)),
                     request.principal_filter, request.host_filter, _enum(Operation, request.operation),
                     _enum(Permission, request.permission_type))


def _described(acl: AclBinding) -> dict[str, Any]:
    return {"principal": acl.principal, "host": acl.host, "operation": int(acl.operation),
            "permission_type": int(acl.permission)}


def _enabled(context: RequestContext) -> bool:
    return context.broker.authorizer.config.enabled and context.broker.security is not None


def describe(context: RequestContext, request: Any) -> dict[str, Any]:
    if not _enabled(context):
        return describe_error(request, ErrorCode.security_disabled)
    acl_filter = _filter(request)
    try:
        acl_filter.validate()
    except AclError as error:
        return {"throttle_time": 0, "error_code": ErrorCode.invalid_request, "error_message": str(error),
                "resources": []}
    assert context.broker.security is not None
    resources: dict[tuple[int, str, int], list[dict[str, Any]]] = {}
    for acl in context.broker.security.acls():
        if acl_filter.matches(acl):
            key = (int(acl.resource_type), acl.resource_name, int(acl.pattern_type))
            resources.setdefault(key, []).append(_described(acl))
    return {"throttle_time": 0, "error_code": ErrorCode.none, "error_message": None, "resources": [
        {"resource_type": t, "resource_name": n, "pattern_type": p, "acls": acls}
        for (t, n, p), acls in sorted(resources.items())]}


def describe_error(request: Any, code: ErrorCode) -> dict[str, Any]:
    return {"throttle_time": 0, "error_code": code,
            "error_message": _DISABLED if code == ErrorCode.security_disabled else None, "resources": []}


def create(context: RequestContext, request: Any) -> dict[str, Any] | Completion[dict[str, Any]]:
    """The response fields, or a completion of them once the ACLs are stored."""
    if not _enabled(context):
        return create_error(request, ErrorCode.security_disabled)
    store = context.broker.security
    assert store is not None
    results: list[dict[str, Any]] = []
    valid: list[AclBinding] = []
    for creation in request.creations:
        binding = _binding(creation)
        try:
            binding.validate()
        except AclError as error:
            results.append({"error_code": ErrorCode.invalid_request, "error_message": str(error)})
            continue
        valid.append(binding)
        results.append({"error_code": ErrorCode.none, "error_message": None})
    if not valid:
        return {"throttle_time": 0, "results": results}
    answer: Completion[dict[str, Any]] = Completion()

    def stored(error: OSError | None) -> None:
        if error is not None:
            logger.error("storing ACLs failed: %s", safe(error))
            for result in results:
                if result["error_code"] == ErrorCode.none:
                    result.update(error_code=ErrorCode.kafka_storage_error,
                                  error_message=f"the broker could not store the ACLs: {error.strerror or error}")
        else:
            logger.info("%s created ACLs: %s", context.principal, "; ".join(map(_text, valid)))
        answer.resolve({"throttle_time": 0, "results": results})

    store.create_acls(valid).on_done(stored)
    return answer


def create_error(request: Any, code: ErrorCode) -> dict[str, Any]:
    message = _DISABLED if code == ErrorCode.security_disabled else None
    return {"throttle_time": 0, "results": [{"error_code": code, "error_message": message}
                                            for _creation in request.creations]}


def delete(context: RequestContext, request: Any) -> dict[str, Any] | Completion[dict[str, Any]]:
    """The response fields, or a completion of them once the deletion is stored."""
    if not _enabled(context):
        return delete_error(request, ErrorCode.security_disabled)
    store = context.broker.security
    assert store is not None
    filters = [_filter(f) for f in request.filters]
    invalid: dict[int, str] = {}
    for index, acl_filter in enumerate(filters):
        try:
            acl_filter.validate()
        except AclError as error:
            invalid[index] = str(error)
    answer: Completion[dict[str, Any]] = Completion()

    def deleted(outcome: list[list[AclBinding]] | OSError) -> None:
        if isinstance(outcome, OSError):
            logger.error("deleting ACLs failed: %s", safe(outcome))
            answer.resolve(delete_error(request, ErrorCode.kafka_storage_error))
            return
        matched = iter(outcome)
        results = []
        for index in range(len(filters)):
            if index in invalid:
                results.append({"error_code": ErrorCode.invalid_request, "error_message": invalid[index],
                                "matching_acls": []})
                continue
            removed = next(matched)
            if removed:
                logger.info("%s deleted ACLs: %s", context.principal, "; ".join(map(_text, removed)))
            results.append({"error_code": ErrorCode.none, "error_message": None, "matching_acls": [
                {"error_code": ErrorCode.none, "error_message": None, "resource_type": int(acl.resource_type),
                 "resource_name": acl.resource_name, "pattern_type": int(acl.pattern_type), **_described(acl)}
                for acl in removed]})
        answer.resolve({"throttle_time": 0, "filter_results": results})

    store.delete_acls([f for index, f in enumerate(filters) if index not in invalid]).on_done(deleted)
    return answer


def delete_error(request: Any, code: ErrorCode) -> dict[str, Any]:
    message = _DISABLED if code == ErrorCode.security_disabled else None
    return {"throttle_time": 0, "filter_results": [{"error_code": code, "error_message": message,
                                                    "matching_acls": []} for _f in request.filters]}


def _text(acl: AclBinding) -> str:
    return (f"{acl.permission.name} {acl.principal} from {acl.host} {acl.operation.name} on "
            f"{acl.resource_type.name}:{acl.pattern_type.name}:{acl.resource_name}")
