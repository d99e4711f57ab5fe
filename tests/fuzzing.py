"""Structure-aware request fuzzing shared by the decoder tests, the live-broker test and bench/fuzz_broker.py.

Hypothesis builds valid requests of every served API key and version from kio's own type strategies;
`mutate` then damages exactly the bytes that hold lengths and counts (found by the guard's own walk:
`length_prefixes`) or arbitrary bytes. `tame` shortens the waits a valid request may ask for (long-poll
fetches, rebalance timeouts), so a fuzz run measures hostility, not patience.
"""

from __future__ import annotations

import dataclasses
import datetime
import struct
from typing import Any

import hypothesis.strategies as st
from hypothesis import assume
from kio.schema.types import BrokerId, GroupId, ProducerId, TopicName, TransactionalId
from kio.static.primitive import Records

from oncelog.handlers import HANDLERS
from oncelog.protocol.codec import encode_request, request_class
from oncelog.protocol.framing import parse_request_header, write_uvarint
from oncelog.protocol.guard import length_prefixes
from oncelog.protocol.records import build_batch

TOPICS = ("fuzz-a", "fuzz-b")
"""Topics a fuzzed broker has (fuzz-a with 3 partitions): requests name them often, so the fuzz reaches
the logs and coordinators instead of stopping at "unknown topic"."""


def _batches() -> st.SearchStrategy[bytes]:
    """Real record batches: plain, idempotent, transactional, with small producer ids and sequences."""
    return st.builds(
        lambda records, producer_id, epoch, sequence, transactional: build_batch(
            records, producer_id=producer_id, producer_epoch=epoch if producer_id >= 0 else -1,
            base_sequence=sequence if producer_id >= 0 else -1, transactional=transactional and producer_id >= 0),
        st.lists(st.tuples(st.none() | st.binary(max_size=8), st.none() | st.binary(max_size=32)), min_size=1,
                 max_size=4),
        st.integers(-1, 3), st.integers(0, 2), st.integers(0, 8), st.booleans())


st.register_type_strategy(Records, st.one_of(st.binary(max_size=300), _batches()).map(Records))
st.register_type_strategy(TopicName, st.one_of(
    st.sampled_from([*TOPICS, "__consumer_offsets", "__transaction_state", "fuzz.c", "fuzz_c"]),
    st.text(max_size=12)).map(TopicName))
st.register_type_strategy(GroupId, st.one_of(st.sampled_from(["g1", "g2"]), st.text(max_size=8)).map(GroupId))
st.register_type_strategy(TransactionalId, st.one_of(st.sampled_from(["tx1", "tx2"]),
                                                     st.text(max_size=8)).map(TransactionalId))
st.register_type_strategy(ProducerId, st.one_of(st.integers(-1, 3), st.integers(-(2**63), 2**63 - 1)).map(ProducerId))
st.register_type_strategy(BrokerId, st.one_of(st.sampled_from([-1, 1]), st.integers(-(2**31), 2**31 - 1)).map(BrokerId))

SERVED = sorted(
    (api.api_key, version)
    for api in HANDLERS.values()
    for version in range(api.version_min, api.version_max + 1)
)

LENGTH_MUTATIONS = ("huge", "int_max", "negative", "null", "plus_one", "minus_one", "overlong_varint", "zero")
WAIT_MAX = datetime.timedelta(milliseconds=200)


def frame_of(api_key: int, version: int, request: Any, correlation_id: int = 7) -> bytes:
    """The request as the broker receives it: header and body, without the size prefix."""
    return encode_request(api_key, version, correlation_id, "fuzz", request)[4:]


def body_position(frame: bytes, api_key: int, version: int) -> int:
    return parse_request_header(frame, bool(request_class(api_key, version).__flexible__)).body_position


DURATION_MAX = datetime.timedelta(days=100 * 365)
"""The decoder (kio) turns int64 milliseconds into timedeltas, which overflow beyond about ±9.2e15 ms:
such a request closes its connection (docs/robustness.md, Limits). No client sends durations that long."""


def tame(request: Any) -> Any:
    """Cap the time fields a valid request may make the broker wait on (max_wait, rebalance timeout), and
    every duration to what the decoder can represent."""
    changes = {name: min(getattr(request, name), WAIT_MAX) for name in ("max_wait", "rebalance_timeout")
               if isinstance(getattr(request, name, None), datetime.timedelta)}
    for name in getattr(request, "__dataclass_fields__", {}):
        value = changes.get(name, getattr(request, name))
        if isinstance(value, datetime.timedelta) and abs(value) > DURATION_MAX:
            changes[name] = DURATION_MAX if value > datetime.timedelta(0) else -DURATION_MAX
    return dataclasses.replace(request, **changes) if changes else request


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[int, int, Any, bytes]:
    api_key, version = draw(st.sampled_from(SERVED))
    request = tame(draw(st.from_type(request_class(api_key, version))))
    try:
        frame = frame_of(api_key, version, request)
    except (UnicodeEncodeError, struct.error, OverflowError, ValueError):
        assume(False)  # strategies can produce values the wire format cannot carry (surrogates)
    return api_key, version, request, frame


def mutate_length(frame: bytes, position: int, width: int, how: str) -> bytes:
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
            "plus_one": write_uvarint(old + 1), "minus_one": write_uvarint(max(old - 1, 0)),
        }[how]
        return frame[:position] + new + frame[end:]
    old = int.from_bytes(frame[position:position + width], "big", signed=True)
    value = {"huge": 2 ** (8 * width - 1) - 1, "int_max": 2 ** (8 * width - 1) - 1, "negative": -7, "null": -1,
             "plus_one": old + 1, "minus_one": old - 1, "overlong_varint": -(2 ** (8 * width - 1)), "zero": 0}[how]
    value = max(min(value, 2 ** (8 * width - 1) - 1), -(2 ** (8 * width - 1)))
    return frame[:position] + value.to_bytes(width, "big", signed=True) + frame[position + width:]


def damage(frame: bytes, body: int, data: st.DataObject) -> bytes:
    """Arbitrary damage to the body: flipped bytes, a cut, bytes appended or spliced in."""
    damaged = bytearray(frame)
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
    return bytes(damaged)


def mutate(case: tuple[int, int, Any, bytes], data: st.DataObject) -> bytes:
    """One of: the valid frame, its lengths damaged, or arbitrary damage."""
    api_key, version, _request, frame = case
    body = body_position(frame, api_key, version)
    how = data.draw(st.sampled_from(["intact", "lengths", "damage"]))
    if how == "intact":
        return frame
    if how == "damage":
        return damage(frame, body, data)
    prefixes = length_prefixes(request_class(api_key, version), frame, body)
    if not prefixes:
        return damage(frame, body, data)
    mutated = frame
    for _ in range(data.draw(st.integers(1, 3))):
        prefix = data.draw(st.sampled_from(prefixes))
        if prefix.position < len(mutated):
            how = data.draw(st.sampled_from(LENGTH_MUTATIONS))
            mutated = mutate_length(mutated, prefix.position, prefix.width, how)
    return mutated
