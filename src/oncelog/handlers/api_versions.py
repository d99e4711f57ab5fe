"""ApiVersions (key 18), versions 0–4.

Behaviour:
- Lists exactly the APIs this broker implements, from the handler table, so an API is advertised if and
  only if it has a handler (docs/protocol.md, Which versions are advertised).
- Responses always use response header v0 (KIP-511; handled by the codec).
- A request with a version above 4 is answered by `unsupported_version_response`: error
  UNSUPPORTED_VERSION in a v0-encoded body listing our ApiVersions range, so every client falls back.
- No feature flags are advertised: that keeps every client on transactions v1 semantics (KIP-890).
"""

from __future__ import annotations

import struct
from typing import Any

from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response
from oncelog.protocol.framing import frame

from .base import RequestContext

API_KEY = 18
VERSIONS = (0, 4)


def _api_keys() -> list[dict[str, int]]:
    from oncelog.handlers import HANDLERS

    return [
        {"api_key": h.api_key, "min_version": h.version_min, "max_version": h.version_max}
        for h in sorted(HANDLERS.values(), key=lambda h: h.api_key)
    ]


def handle(context: RequestContext, request: Any) -> Any:
    return build_response(
        API_KEY,
        context.api_version,
        {"error_code": ErrorCode.none, "api_keys": _api_keys(), "throttle_time": 0},
    )


def unsupported_version_response(correlation_id: int) -> bytes:
    """The v0 body Kafka sends for an ApiVersions version it does not know (header v0, no tags)."""
    body = struct.pack(">ihi", correlation_id, ErrorCode.unsupported_version, 1)
    body += struct.pack(">hhh", API_KEY, VERSIONS[0], VERSIONS[1])
    return frame(body)
