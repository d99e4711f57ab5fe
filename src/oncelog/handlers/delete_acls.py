"""DeleteAcls (key 31), versions 1–3: see acls.py, which serves the three ACL APIs."""

from __future__ import annotations

from typing import Any

from oncelog.coordinator.runtime import Completion
from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response

from . import acls
from .base import AwaitCompletion, RequestContext

API_KEY = 31
VERSIONS = acls.VERSIONS


def handle(context: RequestContext, request: Any) -> Any:
    fields = acls.delete(context, request)
    if isinstance(fields, Completion):
        return AwaitCompletion(fields, lambda done: build_response(API_KEY, context.api_version, done))
    return build_response(API_KEY, context.api_version, fields)


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return acls.delete_error(request, code)
