"""DescribeUserScramCredentials (key 50), version 0: which SCRAM mechanisms each user has, and their
iteration counts — never salts or keys. As Kafka's `ScramControlManager.describeScramCredentials`:
no user list means every user; a named user without credentials is RESOURCE_NOT_FOUND; a name asked
twice is DUPLICATE_RESOURCE."""

from __future__ import annotations

from collections import Counter
from typing import Any

from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response

from .base import RequestContext

API_KEY = 50
VERSIONS = (0, 0)
MECHANISM_CODES = {"SCRAM-SHA-256": 1, "SCRAM-SHA-512": 2}


def handle(context: RequestContext, request: Any) -> Any:
    store = context.broker.security
    if store is None:  # not started yet
        return build_response(API_KEY, context.api_version,
                              error_response(request, ErrorCode.coordinator_not_available))
    users = store.users()
    asked = [str(user.name) for user in request.users] if request.users else sorted(users)
    counts = Counter(asked)
    results: list[dict[str, Any]] = []
    for name in dict.fromkeys(asked):
        if counts[name] > 1:
            results.append({"user": name, "error_code": ErrorCode.duplicate_resource,
                            "error_message": f"Cannot describe SCRAM credentials for the same user twice in a "
                                             f"single request: {name}", "credential_infos": []})
        elif name not in users:
            results.append({"user": name, "error_code": ErrorCode.resource_not_found,
                            "error_message": f"Attempt to describe a user credential that does not exist: {name}",
                            "credential_infos": []})
        else:
            results.append({"user": name, "error_code": ErrorCode.none, "error_message": None, "credential_infos": [
                {"mechanism": MECHANISM_CODES[mechanism], "iterations": credential.iterations}
                for mechanism, credential in sorted(users[name].items())]})
    return build_response(API_KEY, context.api_version,
                          {"throttle_time": 0, "error_code": ErrorCode.none, "error_message": None,
                           "results": results})


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return {"throttle_time": 0, "error_code": code, "error_message": None, "results": []}
