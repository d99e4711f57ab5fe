"""SaslAuthenticate (key 36), versions 0–2: one SASL token of the mechanism SaslHandshake chose, and the
server's answer token. v1+ tells the client its session lifetime (KIP-368 re-authentication). A failure
answers SASL_AUTHENTICATION_FAILED and the connection then closes (server/connection.py)."""

from __future__ import annotations

from typing import Any

from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response

from .base import RequestContext

API_KEY = 36
VERSIONS = (0, 2)


def handle(context: RequestContext, request: Any) -> Any:
    session = context.session
    if session is None:
        return build_response(API_KEY, context.api_version, error_response(request, ErrorCode.illegal_sasl_state))
    answer = session.authenticate(bytes(request.auth_bytes), context.api_version)
    return build_response(API_KEY, context.api_version, {
        "error_code": answer.error_code, "error_message": answer.error_message, "auth_bytes": answer.auth_bytes,
        "session_lifetime": answer.session_lifetime_ms})


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    message = "SaslAuthenticate is served on SASL listeners only" if code == ErrorCode.illegal_sasl_state else None
    return {"error_code": code, "error_message": message, "auth_bytes": b"", "session_lifetime": 0}
