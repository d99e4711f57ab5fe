"""The request guard: no body reaches kio's native reader unless every length in it was checked.

Structure-aware fuzzing over every served API key and version: hypothesis builds valid requests from
kio's own type strategies, we encode them, then mutate exactly the bytes that hold lengths and counts
(to huge, negative, null, off by one, overlong varints) or random bytes. Whatever comes out, decoding
either raises ProtocolError (the connection would close) or yields a request with no null where the
schema forbids one, and the Python memory the decode allocated stays inside the guard's budget. Before
the guard, the first example below made kio reserve 32 GiB and the process abort.
"""

from __future__ import annotations

import dataclasses
import struct
import tracemalloc
import types
import typing
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, assume, given, settings
from kio.static.primitive import Records

from oncelog.errors import ProtocolError
from oncelog.handlers import HANDLERS, INTERNAL_HANDLERS
from oncelog.protocol.codec import build_request, decode_request, encode_request, request_class
from oncelog.protocol.guard import decode_budget, length_prefixes

st.register_type_strategy(Records, st.binary(max_size=300).map(Records))

SERVED = sorted(
    (api.api_key, version)
    for api in (*HANDLERS.values(), *INTERNAL_HANDLERS.values())
    for version in range(api.version_min, api.version_max + 1)
)

FUZZ_SETTINGS = settings(max_examples=400, deadline=None, derandomize=True,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                HealthCheck.filter_too_much])


def _frame(api_key: int, version: int, request: Any) -> bytes:
    """The request as the broker receives it: header and body, without the size prefix."""
    return encode_request(api_key, version, 7, "fuzz", request)[4:]


def _body_position(frame: bytes, api_key: int, version: int) -> int:
    from oncelog.protocol.framing import parse_request_header

    return parse_request_header(frame, bool(request_class(api_key, version).__flexible__)).body_position


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[int, int, Any, bytes]:
    api_key, version = draw(st.sampled_from(SERVED))
    request = draw(st.from_type(request_class(api_key, version)))
    try:
        frame = _frame(api_key, version, request)
    except (UnicodeEncodeError, struct.error, OverflowError, ValueError):
        assume(False)  # strategies can produce values the wire format cannot carry (surrogates)
    return api_key, version, request, frame


def _nulls_where_forbidden(value: Any, path: str = "") -> list[str]:
    """Fields holding None although their type does not allow it."""
    if not dataclasses.is_dataclass(value):
        return []
    problems = []
    hints = typing.get_type_hints(type(value))
    for field in dataclasses.fields(value):
        if not field.init:
            continue
        annotation = hints[field.name]
        item = getattr(value, field.name)
        nullable = typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in typing.get_args(
            annotation)
        if item is None and not nullable:
            problems.append(f"{path}{field.name}")
        elif isinstance(item, tuple):
            for index, element in enumerate(item):
                problems += _nulls_where_forbidden(element, f"{path}{field.name}[{index}].")
        else:
            problems += _nulls_where_forbidden(item, f"{path}{field.name}.")
    return problems


def _decode_within_budget(frame: bytes, api_key: int, version: int) -> Any | None:
    """Decode like the broker; None if refused. Asserts the decode stayed inside the memory budget.
    The caller decoded a valid frame of the same API and version first, so one-time work (loading the
    schema, generating the guard's walker) is not counted."""
    tracemalloc.start()
    try:
        _header, request = decode_request(frame, api_key, version)
    except ProtocolError:
        return None
    finally:
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak <= decode_budget(len(frame)), f"decoding {len(frame)} bytes allocated {peak}"
    return request


def test_a_huge_compact_array_length_is_refused_not_allocated() -> None:
    """The outside testers' request: CreateTopics v5 whose topics array claims 2^32 - 2 elements."""
    frame = struct.pack(">hhih", 19, 5, 1, -1) + b"\x00" + b"\xff\xff\xff\xff\x0f"
    with pytest.raises(ProtocolError, match="claims 4294967294 elements"):
        decode_request(frame, 19, 5)


def test_a_null_required_array_is_refused() -> None:
    """Metadata v1 with a null topics array is legal (all topics), DeleteTopics v1 with null names is not."""
    assert decode_request(struct.pack(">hhih", 3, 1, 1, -1) + b"\xff\xff\xff\xff", 3, 1)[1].topics is None
    frame = struct.pack(">hhih", 20, 1, 1, -1) + b"\xff\xff\xff\xff" + b"\x00\x00\x03\xe8"
    with pytest.raises(ProtocolError, match="topic_names is null"):
        decode_request(frame, 20, 1)


def test_unknown_tagged_fields_are_ignored_as_kafka_does() -> None:
    """A tag from a newer schema is skipped; a known tag whose size lies is refused."""
    body = b"\x02a\x02b"  # ApiVersions v3: client software name and version
    header = struct.pack(">hhih", 18, 3, 1, -1) + b"\x00"
    _header, request = decode_request(header + body + b"\x01\x63\x02xy", 18, 3)
    assert (request.client_software_name, request.client_software_version) == ("a", "b")
    fetch = build_request(1, 12, {"max_wait": 0, "min_bytes": 1, "topics": [], "forgotten_topics_data": []})
    frame = _frame(1, 12, fetch)
    assert decode_request(frame, 1, 12)[1] == fetch
    # cluster_id (tag 0) declared 5 bytes long but holding a 2-byte string.
    lying = frame[:-1] + b"\x01\x00\x05\x02ab\x00\x00"
    with pytest.raises(ProtocolError):
        decode_request(lying, 1, 12)


@FUZZ_SETTINGS
@given(valid_requests())
def test_valid_requests_pass_the_guard_unchanged(case: tuple[int, int, Any, bytes]) -> None:
    api_key, version, request, frame = case
    _header, decoded = decode_request(frame, api_key, version)
    assert decoded == request


_LENGTH_MUTATIONS = ("huge", "int_max", "negative", "null", "plus_one", "minus_one", "overlong_varint", "zero")


def _mutate_length(frame: bytes, position: int, width: int, how: str) -> bytes:
    """Replace the length prefix at `position` (width 0 = compact uvarint)."""
    if width == 0:
        end = position
        while frame[end] & 0x80:
            end += 1
        end += 1
        old = 0
        for shift, byte in enumerate(frame[position:end]):
            old |= (byte & 0x7F) << (7 * shift)
        new = {
            "huge": b"\xff\xff\xff\xff\x0f", "int_max": b"\xff\xff\xff\xff\x07", "negative": b"\xfe\xff\xff\xff\x0f",
            "null": b"\x00", "overlong_varint": b"\x80\x80\x80\x80\x80\x01", "zero": b"\x01",
            "plus_one": _uvarint(old + 1), "minus_one": _uvarint(max(old - 1, 0)),
        }[how]
        return frame[:position] + new + frame[end:]
    old = int.from_bytes(frame[position:position + width], "big", signed=True)
    value = {"huge": 2 ** (8 * width - 1) - 1, "int_max": 2 ** (8 * width - 1) - 1, "negative": -7, "null": -1,
             "plus_one": old + 1, "minus_one": old - 1, "overlong_varint": -(2 ** (8 * width - 1)), "zero": 0}[how]
    value = max(min(value, 2 ** (8 * width - 1) - 1), -(2 ** (8 * width - 1)))
    return frame[:position] + value.to_bytes(width, "big", signed=True) + frame[position + width:]


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@FUZZ_SETTINGS
@given(valid_requests(), st.data())
def test_mutated_lengths_are_refused_or_decode_safely(case: tuple[int, int, Any, bytes], data: st.DataObject) -> None:
    api_key, version, _request, frame = case
    cls = request_class(api_key, version)
    decode_request(frame, api_key, version)
    prefixes = length_prefixes(cls, frame, _body_position(frame, api_key, version))
    assume(prefixes)
    mutated = frame
    for _ in range(data.draw(st.integers(1, 3))):
        prefix = data.draw(st.sampled_from(prefixes))
        if prefix.position >= len(mutated):
            continue
        mutated = _mutate_length(mutated, prefix.position, prefix.width, data.draw(st.sampled_from(_LENGTH_MUTATIONS)))
    decoded = _decode_within_budget(mutated, api_key, version)
    if decoded is not None:
        assert not _nulls_where_forbidden(decoded)


@FUZZ_SETTINGS
@given(valid_requests(), st.data())
def test_random_byte_damage_is_refused_or_decodes_safely(case: tuple[int, int, Any, bytes],
                                                         data: st.DataObject) -> None:
    api_key, version, _request, frame = case
    decode_request(frame, api_key, version)
    damaged = bytearray(frame)
    body = _body_position(frame, api_key, version)
    action = data.draw(st.sampled_from(["flip", "truncate", "append", "splice"]))
    if action == "flip" and len(damaged) > body:
        for _ in range(data.draw(st.integers(1, 8))):
            damaged[data.draw(st.integers(body, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    elif action == "truncate":
        del damaged[data.draw(st.integers(body, len(damaged))):]
    elif action == "append":
        damaged += data.draw(st.binary(min_size=1, max_size=64))
    else:
        at = data.draw(st.integers(body, len(damaged)))
        damaged[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    decoded = _decode_within_budget(bytes(damaged), api_key, version)
    if decoded is not None:
        assert not _nulls_where_forbidden(decoded)


@FUZZ_SETTINGS
@given(valid_requests())
def test_every_length_prefix_set_to_the_maximum_is_refused(case: tuple[int, int, Any, bytes]) -> None:
    """Each length prefix in turn claims the largest value its width holds: always refused, never
    allocated (a string claiming 32767 bytes runs past the end; an array claiming 2^31 cannot fit)."""
    api_key, version, _request, frame = case
    decode_request(frame, api_key, version)
    for prefix in length_prefixes(request_class(api_key, version), frame, _body_position(frame, api_key, version)):
        mutated = _mutate_length(frame, prefix.position, prefix.width, "int_max")
        assert _decode_within_budget(mutated, api_key, version) is None, prefix
