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

from oncelog.errors import ProtocolError
from oncelog.protocol.codec import build_request, decode_request, request_class
from oncelog.protocol.guard import decode_budget, length_prefixes
from tests.fuzzing import LENGTH_MUTATIONS, body_position, damage, frame_of, mutate_length, valid_requests

FUZZ_SETTINGS = settings(max_examples=400, deadline=None, derandomize=True,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                HealthCheck.filter_too_much])
_frame = frame_of
_body_position = body_position



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
        mutated = mutate_length(mutated, prefix.position, prefix.width, data.draw(st.sampled_from(LENGTH_MUTATIONS)))
    decoded = _decode_within_budget(mutated, api_key, version)
    if decoded is not None:
        assert not _nulls_where_forbidden(decoded)


@FUZZ_SETTINGS
@given(valid_requests(), st.data())
def test_random_byte_damage_is_refused_or_decodes_safely(case: tuple[int, int, Any, bytes],
                                                         data: st.DataObject) -> None:
    api_key, version, _request, frame = case
    decode_request(frame, api_key, version)
    damaged = damage(frame, _body_position(frame, api_key, version), data)
    decoded = _decode_within_budget(damaged, api_key, version)
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
        mutated = mutate_length(frame, prefix.position, prefix.width, "int_max")
        assert _decode_within_budget(mutated, api_key, version) is None, prefix
