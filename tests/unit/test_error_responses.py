"""Every served API can answer any request it accepts with an error response (Kafka's getErrorResponse),
so a handler that fails unexpectedly still answers its request instead of leaving the connection stuck."""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings
from kio.static.primitive import Records

from oncelog.errors import ErrorCode
from oncelog.handlers import HANDLERS
from oncelog.protocol.codec import decode_response, encode_response, request_class

st.register_type_strategy(Records, st.binary(max_size=64).map(Records))

SERVED = sorted((api.api_key, version) for api in HANDLERS.values()
                for version in range(api.version_min, api.version_max + 1))


@st.composite
def requests(draw: st.DrawFn) -> tuple[int, int, Any]:
    api_key, version = draw(st.sampled_from(SERVED))
    return api_key, version, draw(st.from_type(request_class(api_key, version)))


def _error_codes(value: Any) -> list[ErrorCode]:
    """Every error code in a decoded response, depth first."""
    found = []
    for name in getattr(value, "__dataclass_fields__", {}):
        item = getattr(value, name)
        if isinstance(item, ErrorCode):
            found.append(item)
        elif isinstance(item, tuple):
            for element in item:
                found += _error_codes(element)
        else:
            found += _error_codes(item)
    return found


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_every_request_has_an_error_response_that_encodes(case: tuple[int, int, Any]) -> None:
    api_key, version, request = case
    api = HANDLERS[api_key]
    response = api.error_response(version, request, ErrorCode.unknown_server_error)
    frame = encode_response(api_key, version, 42, response)
    correlation_id, decoded = decode_response(frame[4:], api_key, version)
    assert correlation_id == 42
    codes = _error_codes(decoded)
    # Every error code in the response is the error (none left at NONE by a forgotten field), and a
    # response with a top-level error code always carries it.
    assert all(code == ErrorCode.unknown_server_error for code in codes), decoded
    if "error_code" in decoded.__dataclass_fields__:
        assert decoded.error_code == ErrorCode.unknown_server_error
