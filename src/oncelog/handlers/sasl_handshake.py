"""SaslHandshake (key 17), versions 0–1: choose the SASL mechanism of this connection. After v1,
SaslAuthenticate carries its tokens; after v0 they travel as bare size-prefixed frames (the connection
handles those, server/connection.py). librdkafka needs v0 in the advertised range to use SASL at all.
Outside a SASL listener Kafka answers ILLEGAL_SASL_STATE; so do we."""

from __future__ import annotations

from typing import Any

from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response

from .base import RequestContext

API_KEY = 17
VERSIONS = (0, 1)


def handle(context: RequestContext, request: Any) -> Any:
    session = context.session
    if session is None:
        return build_response(API_KEY, context.api_version,
                              {"error_code": ErrorCode.illegal_sasl_state, "mechanisms": []})
    code, mechanisms = session.handshake(str(request.mechanism), context.api_version)
    return build_response(API_KEY, context.api_version, {"error_code": code, "mechanisms": mechanisms})


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return {"error_code": code, "mechanisms": []}
