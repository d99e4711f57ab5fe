"""CreateAcls (key 30), versions 1–3: see acls.py, which serves the three ACL APIs."""

from __future__ import annotations

from typing import Any

from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response

from . import acls
from .base import RequestContext

API_KEY = 30
VERSIONS = acls.VERSIONS


def handle(context: RequestContext, request: Any) -> Any:
    return build_response(API_KEY, context.api_version, acls.create(context, request))


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return acls.create_error(request, code)
