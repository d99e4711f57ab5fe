"""Request decoding and response encoding over kio's generated message classes.

Theory of operation: kio generates one frozen dataclass per (API, version, request|response) from
Kafka's JSON message specs, with a native reader and a writer. We look the classes up once per
(api_key, version) and cache them. Handlers build responses version-independently as plain dicts with
Kafka's field names (ints for durations and timestamps); `build` turns a dict into the versioned class,
dropping fields the version lacks, filling fields it adds that have defaults, and converting ints to the
`timedelta`/`datetime` kio uses. One code path serves every version of an API.
"""

from __future__ import annotations

import datetime
import io
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields, is_dataclass
from functools import cache
from typing import Any

from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_reader, entity_writer

from oncelog.errors import ErrorCode, ProtocolError

from .framing import RequestHeader, parse_request_header, peek_header, response_header, skip_tagged_fields
from .guard import check_request

_UTC = datetime.UTC
API_VERSIONS_KEY = 18


@cache
def request_class(api_key: int, api_version: int) -> Any:
    return load_request_schema(api_key, api_version)


@cache
def response_class(api_key: int, api_version: int) -> Any:
    return load_response_schema(api_key, api_version)


@cache
def _reader(cls: type) -> Callable[[bytes, int], tuple[Any, int]]:
    return entity_reader(cls)


@cache
def _writer(cls: type) -> Callable[[io.BytesIO, Any], None]:
    return entity_writer(cls)


def is_flexible_request(api_key: int, api_version: int) -> bool:
    return bool(request_class(api_key, api_version).__flexible__)


def decode_request(frame: bytes, api_key: int, api_version: int) -> tuple[RequestHeader, Any]:
    """Parse header and body of a request whose (api_key, api_version) the caller already accepted.

    The body is bounds-checked by `guard.check_request` first: kio's native reader trusts the lengths it
    reads, so nothing from the wire reaches it unchecked."""
    cls = request_class(api_key, api_version)
    header = parse_request_header(frame, cls.__flexible__)
    frame = check_request(cls, frame, header.body_position)
    try:
        request, _size = _reader(cls)(frame, header.body_position)
    except Exception as error:  # kio raises several types for malformed bodies
        raise ProtocolError(f"cannot decode {cls.__name__} v{api_version}: {error}") from error
    return header, request


def encode_response(api_key: int, api_version: int, correlation_id: int, response: Any) -> bytes:
    """Frame a response: size, header (v0 for ApiVersions, per KIP-511), body."""
    cls = response_class(api_key, api_version)
    flexible_header = bool(cls.__flexible__) and api_key != API_VERSIONS_KEY
    buffer = io.BytesIO()
    buffer.write(b"\x00\x00\x00\x00")
    buffer.write(response_header(correlation_id, flexible_header))
    _writer(cls)(buffer, response)
    data = buffer.getbuffer()
    data[0:4] = (len(data) - 4).to_bytes(4, "big")
    del data
    return buffer.getvalue()


def encode_request(api_key: int, api_version: int, correlation_id: int, client_id: str | None, request: Any) -> bytes:
    """Frame a request with header v1, or v2 for flexible versions (our own client and tests)."""
    cls = request_class(api_key, api_version)
    buffer = io.BytesIO()
    buffer.write(b"\x00\x00\x00\x00")
    buffer.write(api_key.to_bytes(2, "big", signed=True) + api_version.to_bytes(2, "big", signed=True))
    buffer.write(correlation_id.to_bytes(4, "big", signed=True))
    if client_id is None:
        buffer.write(b"\xff\xff")
    else:
        encoded = client_id.encode()
        buffer.write(len(encoded).to_bytes(2, "big") + encoded)
    if cls.__flexible__:
        buffer.write(b"\x00")
    _writer(cls)(buffer, request)
    data = buffer.getbuffer()
    data[0:4] = (len(data) - 4).to_bytes(4, "big")
    del data
    return buffer.getvalue()


def decode_response(frame: bytes, api_key: int, api_version: int) -> tuple[int, Any]:
    """(correlation_id, response) of a frame without its size prefix."""
    cls = response_class(api_key, api_version)
    correlation_id = int.from_bytes(frame[0:4], "big", signed=True)
    position = 4
    if cls.__flexible__ and api_key != API_VERSIONS_KEY:
        position = skip_tagged_fields(frame, position)
    response, _size = _reader(cls)(frame, position)
    return correlation_id, response


__all__ = [
    "build",
    "decode_request",
    "encode_response",
    "is_flexible_request",
    "peek_header",
    "request_class",
    "response_class",
]


# --- building versioned responses from dicts ----------------------------------------------------------


class _FieldPlan(typing.NamedTuple):
    name: str
    nested: type | None
    is_tuple: bool
    kafka_type: str | None
    has_default: bool
    optional: bool


def _nested_entity(annotation: Any) -> tuple[type | None, bool]:
    """(entity class, is tuple) for an annotation like `tuple[X, ...]`, `X | None` or `X`."""
    origin = typing.get_origin(annotation)
    if origin is tuple:
        inner = typing.get_args(annotation)[0]
        return (inner if isinstance(inner, type) and is_dataclass(inner) else None), True
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                return _nested_entity(arg)
        return None, False
    if isinstance(annotation, type) and is_dataclass(annotation):
        return annotation, False
    return None, False


@cache
def _plan(cls: type) -> tuple[_FieldPlan, ...]:
    hints = typing.get_type_hints(cls)
    plan = []
    for f in fields(cls):
        if not f.init:
            continue
        nested, is_tuple = _nested_entity(hints[f.name])
        has_default = f.default is not MISSING or f.default_factory is not MISSING
        optional = type(None) in typing.get_args(hints[f.name])
        plan.append(_FieldPlan(f.name, nested, is_tuple, f.metadata.get("kafka_type"), has_default, optional))
    return tuple(plan)


def _convert(kafka_type: str | None, value: Any, optional: bool) -> Any:
    if type(value) is int and kafka_type == "error_code":
        return ErrorCode(value)  # a plain int would only fail later, inside kio's writer
    if isinstance(value, int) and not isinstance(value, bool):
        if kafka_type in ("timedelta_i32", "timedelta_i64"):
            return datetime.timedelta(milliseconds=value)
        if kafka_type == "datetime_i64":
            if value < 0 and optional:
                return None  # kio writes a null timestamp as -1
            return datetime.datetime.fromtimestamp(value / 1000, tz=_UTC)
    return value


_ZERO_VALUES: dict[str | None, Any] = {"string": "", "bytes": b"", "bool": False, "float64": 0.0,
                                       "error_code": ErrorCode.none}
"""Values for required fields an error response leaves out (any other scalar type: 0)."""


def build(cls: type, data: Mapping[str, Any], *, fill: bool = False) -> Any:
    """Instantiate kio class `cls` from a dict, recursively; keys the version lacks are ignored. With
    `fill`, required fields the dict lacks get zero values (error responses name only what matters)."""
    kwargs: dict[str, Any] = {}
    for plan in _plan(cls):
        if plan.name not in data:
            if plan.has_default:
                continue
            if plan.optional:
                kwargs[plan.name] = None
                continue
            if plan.is_tuple:
                kwargs[plan.name] = ()
                continue
            if fill:
                if plan.nested is not None:
                    kwargs[plan.name] = build(plan.nested, {}, fill=True)
                else:
                    kwargs[plan.name] = _convert(plan.kafka_type, _ZERO_VALUES.get(plan.kafka_type, 0), False)
                continue
            raise KeyError(f"{cls.__qualname__} v{getattr(cls, '__version__', '?')} needs {plan.name!r}")
        value = data[plan.name]
        if plan.nested is not None and value is not None:
            if plan.is_tuple:
                value = tuple(item if is_dataclass(item) else build(plan.nested, item, fill=fill) for item in value)
            elif not is_dataclass(value):
                value = build(plan.nested, value, fill=fill)
        elif plan.is_tuple and value is not None:
            value = tuple(value)
        else:
            value = _convert(plan.kafka_type, value, plan.optional)
        kwargs[plan.name] = value
    return cls(**kwargs)


def build_response(api_key: int, api_version: int, data: Mapping[str, Any], *, fill: bool = False) -> Any:
    return build(response_class(api_key, api_version), data, fill=fill)


def build_request(api_key: int, api_version: int, data: Mapping[str, Any]) -> Any:
    return build(request_class(api_key, api_version), data)


def duration_ms(value: datetime.timedelta | int | None) -> int:
    """Milliseconds of a kio duration field (kio decodes *_ms fields as timedelta)."""
    if value is None:
        return 0
    if isinstance(value, datetime.timedelta):
        return int(value.total_seconds() * 1000)
    return int(value)


def timestamp_ms(value: datetime.datetime | int | None) -> int:
    if value is None:
        return -1
    if isinstance(value, datetime.datetime):
        return int(value.timestamp() * 1000)
    return int(value)
