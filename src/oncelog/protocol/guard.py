"""A bounds check of every request body before kio decodes it: hostile bytes never reach the native reader.

Theory of operation: kio's native reader trusts the counts it reads. A flexible array whose length prefix
says four billion makes it reserve tens of GiB before it looks at a single element, and the process
aborts. A null where the schema has a required array comes back as `None` and crashes the handler. So
no request body goes to kio before `check_request` has walked it once by the same schema (kio's
generated dataclasses for that API and version), building nothing:

- every length and count is checked against the bytes left before it is used, and an array's count
  times the smallest size one element can take must fit in what is left;
- a null where the schema does not allow one, a negative length other than the null marker, a varint
  longer than five bytes, or a value running past the end is a `ProtocolError`: the connection closes,
  as Kafka closes it when a request does not parse (`SocketServer` drops the channel);
- a known tagged field must fill exactly the size its header declares (kio reads it by its type and
  ignores the size, so a lying size would desynchronise everything after it); an unknown tagged field
  is cut out of the frame before decoding, because Kafka ignores unknown tags and kio refuses them;
- the memory the decoded objects will take is estimated pessimistically as the walk goes (`_Cost`), and
  a body whose estimate exceeds `DECODE_EXPANSION_MAX` times the frame plus `DECODE_SLACK_BYTES` is
  refused, so no frame makes the broker allocate more than a small multiple of its own size.

The walk is plain Python over a plan compiled once per message class. Produce is a handful of fields
around one records blob, so the cost is a few microseconds; bench/decode_guard.py measures it.
"""

from __future__ import annotations

import struct
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from functools import cache
from typing import Any

from oncelog.errors import ProtocolError

from .framing import read_uvarint, write_uvarint

DECODE_EXPANSION_MAX = 16
"""Decoded objects may take at most this many times the frame's size (plus the slack below)."""

DECODE_SLACK_BYTES = 64 * 1024
"""Fixed allowance on top of the multiple: small requests decode into a few objects of fixed size."""


class _Cost:
    """Pessimistic CPython sizes (64-bit) of what kio builds; used only to bound, never to account."""

    ENTITY = 64
    SLOT = 8
    INTEGER = 32
    TIMEDELTA = 64
    DATETIME = 80
    UUID = 96
    STRING = 80
    STRING_PER_BYTE = 4  # one astral character makes every character of a str take four bytes
    BYTES = 40
    TUPLE = 64


# Wire kinds.
_FIXED = 0
_STRING = 1
_BYTES = 2
_ENTITY = 3
_ARRAY = 4

_FIXED_SIZES: dict[str, tuple[int, int]] = {
    # kafka_type: (bytes on the wire, estimated object bytes)
    "bool": (1, 0),
    "int8": (1, _Cost.INTEGER),
    "uint8": (1, _Cost.INTEGER),
    "int16": (2, _Cost.INTEGER),
    "uint16": (2, _Cost.INTEGER),
    "error_code": (2, 0),
    "int32": (4, _Cost.INTEGER),
    "uint32": (4, _Cost.INTEGER),
    "int64": (8, _Cost.INTEGER),
    "uint64": (8, _Cost.INTEGER),
    "float64": (8, _Cost.INTEGER),
    "timedelta_i32": (4, _Cost.TIMEDELTA),
    "timedelta_i64": (8, _Cost.TIMEDELTA),
    "datetime_i64": (8, _Cost.DATETIME),
    "uuid": (16, _Cost.UUID),
}


@dataclass(slots=True)
class _Field:
    name: str
    kind: int
    nullable: bool
    flexible: bool
    size: int = 0
    """Wire bytes of a fixed-size value."""
    cost: int = 0
    """Estimated object bytes of a fixed-size value."""
    element: _Field | None = None
    plan: _Plan | None = None
    min_bytes: int = 0
    """The fewest bytes a value of this field can take on the wire (0 only for empty structs)."""


@dataclass(slots=True)
class _Plan:
    name: str
    flexible: bool
    fields: tuple[_Field, ...] = ()
    tagged: dict[int, _Field] | None = None
    cost: int = 0
    min_bytes: int = 0


def _strip_none(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        assert len(rest) == 1, f"unsupported union {annotation}"
        return rest[0], True
    return annotation, False


def _field_for(name: str, annotation: Any, kafka_type: str | None, flexible: bool) -> _Field:
    inner, nullable = _strip_none(annotation)
    if typing.get_origin(inner) is tuple:
        element_annotation = typing.get_args(inner)[0]
        element = _field_for(name + "[]", element_annotation, kafka_type, flexible)
        return _Field(name, _ARRAY, nullable, flexible, element=element, min_bytes=1 if flexible else 4)
    if is_dataclass(inner):
        assert isinstance(inner, type)
        plan = _plan(inner)
        # A nullable struct carries an int8 presence marker in front (Kafka's nullable struct encoding).
        return _Field(name, _ENTITY, nullable, flexible, plan=plan, min_bytes=plan.min_bytes + (1 if nullable else 0))
    assert kafka_type is not None, f"field {name} has no kafka_type"
    if kafka_type == "string":
        return _Field(name, _STRING, nullable, flexible, min_bytes=1 if flexible else 2)
    if kafka_type in ("bytes", "records"):
        return _Field(name, _BYTES, nullable, flexible, min_bytes=1 if flexible else 4)
    size, cost = _FIXED_SIZES[kafka_type]
    return _Field(name, _FIXED, nullable, flexible, size=size, cost=cost, min_bytes=size)


@cache
def _plan(cls: type) -> _Plan:
    flexible = bool(getattr(cls, "__flexible__", False))
    plan = _Plan(cls.__qualname__, flexible)
    hints = typing.get_type_hints(cls)
    ordered: list[_Field] = []
    tagged: dict[int, _Field] = {}
    count = 0
    for f in fields(cls):
        if not f.init:
            continue
        count += 1
        field = _field_for(f.name, hints[f.name], f.metadata.get("kafka_type"), flexible)
        tag = f.metadata.get("tag")
        if tag is None:
            ordered.append(field)
        else:
            tagged[int(tag)] = field
    plan.fields = tuple(ordered)
    plan.tagged = tagged
    plan.cost = _Cost.ENTITY + _Cost.SLOT * count
    plan.min_bytes = sum(field.min_bytes for field in ordered) + (1 if flexible else 0)
    return plan


@dataclass(frozen=True, slots=True)
class LengthPrefix:
    """Where a length or count sits in a body (for structure-aware fuzzing)."""

    position: int
    width: int
    """0 for an unsigned varint (compact, length + 1), else a big-endian signed int of this many bytes."""
    is_array: bool
    nullable: bool


class _Walk:
    """The state of one pass that is not a local of the generated code: the running estimate, the unknown
    tagged fields to cut, and (for fuzzers) where the length prefixes were."""

    __slots__ = ("cost", "cuts", "in_tagged_field", "prefixes")

    def __init__(self, trace: bool) -> None:
        self.cost = 0
        self.cuts: list[tuple[int, int, bytes]] = []
        self.in_tagged_field = 0
        self.prefixes: list[LengthPrefix] | None = [] if trace else None


# --- helpers the generated walkers call ---------------------------------------------------------------

_I16 = struct.Struct(">h").unpack_from
_I32 = struct.Struct(">i").unpack_from

Walker = Callable[[_Walk, bytes, int, int], int]
"""A generated walker: (walk, data, end, position) -> position after the value."""


def _short(what: str, position: int) -> ProtocolError:
    return ProtocolError(f"{what} runs past the end of the frame (byte {position})")


def _bad_length(what: str, length: int, position: int) -> ProtocolError:
    if length == -1:
        return ProtocolError(f"{what} is null but the schema requires a value (byte {position})")
    return ProtocolError(f"{what} has negative length {length} (byte {position})")


def _too_many(what: str, count: int, position: int) -> ProtocolError:
    return ProtocolError(f"{what} claims {count} elements, more than the frame can hold (byte {position})")


def _tagged(walk: _Walk, data: bytes, end: int, position: int, known: dict[int, tuple[str, Walker]]) -> int:
    """A tagged-field section that is not empty (rare): known tags must fill their size exactly, unknown
    ones are recorded as cuts (Kafka ignores them, kio refuses them)."""
    start = position
    count, position = read_uvarint(data, position, end)
    if count > end - position:
        raise ProtocolError(f"{count} tagged fields cannot fit in what is left of the frame (byte {position})")
    kept: list[bytes] = []
    dropped = False
    for _ in range(count):
        field_start = position
        tag, position = read_uvarint(data, position, end)
        size, position = read_uvarint(data, position, end)
        content_end = position + size
        if content_end > end:
            raise _short(f"tagged field {tag}", position)
        entry = known.get(tag)
        if entry is None:
            if walk.in_tagged_field:  # cutting here would change the enclosing field's declared size
                raise ProtocolError(f"unknown tagged field {tag} inside a tagged field (byte {position})")
            dropped = True
            position = content_end
            continue
        name, walker = entry
        walk.in_tagged_field += 1
        position = walker(walk, data, content_end, position)
        walk.in_tagged_field -= 1
        if position != content_end:
            raise ProtocolError(f"tagged field {name} does not fill its declared {size} bytes (byte {position})")
        kept.append(data[field_start:content_end])
    if dropped:
        walk.cuts.append((start, position, write_uvarint(len(kept)) + b"".join(kept)))
    return position


# --- code generation ------------------------------------------------------------------------------------


class _Emitter:
    """Writes the Python source of the walkers of one message class and everything nested in it."""

    def __init__(self, trace: bool) -> None:
        self.trace = trace
        self.namespace: dict[str, Any] = {
            "_short": _short, "_bad_length": _bad_length, "_too_many": _too_many, "_uvarint": read_uvarint,
            "_tagged": _tagged, "_I16": _I16, "_I32": _I32, "_LP": LengthPrefix,
        }
        self._count = 0

    def _name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def _define(self, name: str, body: list[str]) -> Walker:
        source = f"def {name}(w, data, end, p):\n" + "\n".join("    " + line for line in body)
        exec(compile(source, f"<guard {name}>", "exec"), self.namespace)
        walker: Walker = self.namespace[name]
        return walker

    def entity(self, plan: _Plan) -> str:
        """Define the walker of a struct; return its name in the namespace."""
        name = self._name("entity")
        body = [f"cost = {plan.cost}"]
        fixed_bytes = 0
        fixed_names: list[str] = []

        def flush_fixed() -> None:
            nonlocal fixed_bytes, fixed_names
            if fixed_bytes:
                body.append(f"p += {fixed_bytes}")
                body.append(f"if p > end: raise _short({' '.join(fixed_names)!r}, p)")
            fixed_bytes, fixed_names = 0, []

        for field in plan.fields:
            if field.kind == _FIXED:
                fixed_bytes += field.size
                fixed_names.append(field.name)
                body[0] = f"cost = {int(body[0].split('= ')[1]) + field.cost}"
                continue
            flush_fixed()
            body += self.field(field, "n")
        flush_fixed()
        if plan.flexible:
            tags = {tag: (field.name, self.namespace[self.standalone(field)])
                    for tag, field in (plan.tagged or {}).items()}
            tags_name = self._name("tags")
            self.namespace[tags_name] = tags
            body += [
                "if p >= end: raise _short('tagged fields', p)",
                "if data[p] == 0: p += 1",
                f"else: p = _tagged(w, data, end, p, {tags_name})",
            ]
        body += ["w.cost += cost", "return p"]
        self._define(name, body)
        return name

    def standalone(self, field: _Field) -> str:
        """Define a walker for one field on its own (tagged fields, array elements that need a loop)."""
        name = self._name("field")
        self._define(name, ["cost = 0", *self.field(field, "n"), "w.cost += cost", "return p"])
        return name

    def length(self, field: _Field, wide: bool, var: str) -> list[str]:
        """Read a length prefix into `var` (-1 for null, after checking null is allowed)."""
        lines = []
        if self.trace:
            width = 0 if field.flexible else (4 if wide else 2)
            lines.append(f"w.prefixes.append(_LP(p, {width}, {field.kind == _ARRAY}, {field.nullable}))")
        if field.flexible:
            lines += [
                f"if p >= end: raise _short({field.name!r}, p)",
                f"{var} = data[p]",
                f"if {var} < 0x80: p += 1",
                f"else: {var}, p = _uvarint(data, p, end)",
                f"{var} -= 1",
            ]
        else:
            size = 4 if wide else 2
            lines += [
                f"if p + {size} > end: raise _short({field.name!r}, p)",
                f"{var} = _I{size * 8}(data, p)[0]",
                f"p += {size}",
            ]
        lines.append(f"if {var} < 0 and ({var} != -1 or {not field.nullable}): "
                     f"raise _bad_length({field.name!r}, {var}, p)")
        return lines

    def field(self, field: _Field, var: str) -> list[str]:
        kind = field.kind
        if kind == _FIXED:
            return [f"p += {field.size}", f"if p > end: raise _short({field.name!r}, p)", f"cost += {field.cost}"]
        if kind in (_STRING, _BYTES):
            per_byte, fixed = (_Cost.STRING_PER_BYTE, _Cost.STRING) if kind == _STRING else (1, _Cost.BYTES)
            return [
                *self.length(field, kind == _BYTES, var),
                f"if {var} >= 0:",
                f"    p += {var}",
                f"    if p > end: raise _short({field.name!r}, p)",
                f"    cost += {fixed} + {per_byte} * {var}",
            ]
        if kind == _ENTITY:
            assert field.plan is not None
            walker = self.entity(field.plan)
            if not field.nullable:
                return [f"p = {walker}(w, data, end, p)"]
            return [  # a nullable struct: int8 marker, negative for null
                f"if p >= end: raise _short({field.name!r}, p)",
                "p += 1",
                f"if data[p - 1] < 0x80: p = {walker}(w, data, end, p)",
            ]
        element = field.element
        assert kind == _ARRAY and element is not None
        lines = [
            *self.length(field, True, var),
            f"if {var} > 0:",
            f"    if {var} * {max(element.min_bytes, 1)} > end - p: raise _too_many({field.name!r}, {var}, p)",
            f"    cost += {_Cost.TUPLE} + {_Cost.SLOT} * {var}",
        ]
        if element.kind == _FIXED and not self.trace:
            lines += [f"    p += {var} * {element.size}", f"    cost += {var} * {element.cost}"]
        else:
            walker = self.entity(element.plan) if element.kind == _ENTITY and element.plan else self.standalone(element)
            lines += [f"    for _ in range({var}): p = {walker}(w, data, end, p)"]
        return lines


@cache
def _walker(cls: type, trace: bool) -> Walker:
    emitter = _Emitter(trace)
    walker: Walker = emitter.namespace[emitter.entity(_plan(cls))]
    return walker


def decode_budget(frame_bytes: int) -> int:
    """The estimated decoded bytes a frame of `frame_bytes` may cost."""
    return DECODE_EXPANSION_MAX * frame_bytes + DECODE_SLACK_BYTES


def _walk(cls: type, frame: bytes, position: int, trace: bool) -> _Walk:
    walk = _Walk(trace)
    _walker(cls, trace)(walk, frame, len(frame), position)
    if walk.cost > decode_budget(len(frame)):
        raise ProtocolError(f"a {len(frame)}-byte request would decode into about {walk.cost} bytes, more than "
                            f"{DECODE_EXPANSION_MAX} times its size")
    return walk


def check_request(cls: type, frame: bytes, position: int) -> bytes:
    """Walk the body of `frame` from `position` as message class `cls`; raise ProtocolError if it is not
    safe to decode. Returns the frame to decode: `frame` itself, or a copy without unknown tagged fields."""
    walk = _walk(cls, frame, position, trace=False)
    if not walk.cuts:
        return frame
    pieces: list[bytes] = []
    last = 0
    for start, end, replacement in walk.cuts:
        pieces.append(frame[last:start])
        pieces.append(replacement)
        last = end
    pieces.append(frame[last:])
    return b"".join(pieces)


def length_prefixes(cls: type, frame: bytes, position: int) -> list[LengthPrefix]:
    """Every string, bytes and array length prefix of a well-formed body, in order (fuzzers mutate them)."""
    prefixes = _walk(cls, frame, position, trace=True).prefixes
    assert prefixes is not None
    return prefixes
