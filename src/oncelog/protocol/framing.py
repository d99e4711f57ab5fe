"""Kafka framing and request/response headers, sans-IO.

Theory of operation: every message on the wire is `int32 size` followed by `size` bytes. `FrameDecoder`
is fed whatever bytes arrived and hands back complete frames; it never blocks and never touches a socket
(the h11 style). A frame larger than `frame_bytes_max` or with a negative size is a `ProtocolError`: the
server closes that connection and nothing else.

Request header v1 = api_key, api_version, correlation_id, client_id (nullable int16 string); v2 adds a
tagged-field section. Response header v0 = correlation_id; v1 adds a tagged-field section. Which version
applies follows the API's flexible versions, except that ApiVersions responses always use header v0
(KIP-511). See docs/protocol.md, Framing and headers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from oncelog.errors import ProtocolError

_SIZE = struct.Struct(">i")
_HEADER_FIXED = struct.Struct(">hhih")  # api_key, api_version, correlation_id, client_id length
_CORRELATION = struct.Struct(">i")

FRAME_BYTES_MAX_DEFAULT = 100 * 1024 * 1024  # socket.request.max.bytes


class FrameDecoder:
    """Accumulates bytes and hands out whole frames (without their size prefix), one at a time.

    The caller decides when to take the next frame, so bytes it is not ready for stay here (bounded by
    what it lets the socket deliver). A size prefix is checked as soon as its four bytes are here."""

    def __init__(self, frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT) -> None:
        self._buffer = bytearray()
        self._position = 0
        self._frame_bytes_max = frame_bytes_max

    def limit(self, frame_bytes_max: int) -> None:
        """Change the largest frame accepted (a SASL listener allows small ones until authenticated)."""
        self._frame_bytes_max = frame_bytes_max
        self._check_size()

    def append(self, data: bytes) -> None:
        if self._position and self._position >= len(self._buffer) // 2:
            del self._buffer[: self._position]
            self._position = 0
        self._buffer += data
        self._check_size()

    def _check_size(self) -> int:
        """The size of the frame at the read position (-1 if its prefix is not here yet)."""
        if len(self._buffer) - self._position < 4:
            return -1
        (size,) = _SIZE.unpack_from(self._buffer, self._position)
        if size < 0 or size > self._frame_bytes_max:
            raise ProtocolError(f"frame size {size} outside 0..{self._frame_bytes_max}")
        return int(size)

    def next_frame(self) -> bytes | None:
        size = self._check_size()
        start = self._position + 4
        if size < 0 or len(self._buffer) - start < size:
            return None
        self._position = start + size
        return bytes(self._buffer[start : self._position])

    def feed(self, data: bytes) -> list[bytes]:
        """Append `data` and take every whole frame now in the buffer."""
        self.append(data)
        frames = []
        while (frame := self.next_frame()) is not None:
            frames.append(frame)
        return frames

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer) - self._position


@dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body_position: int
    """Where the request body starts in the frame."""


def peek_header(frame: bytes) -> tuple[int, int, int]:
    """(api_key, api_version, correlation_id): the fields every header version starts with."""
    if len(frame) < 8:
        raise ProtocolError(f"frame of {len(frame)} bytes is too short for a request header")
    api_key, api_version, correlation_id = struct.unpack_from(">hhi", frame, 0)
    return api_key, api_version, correlation_id


def parse_request_header(frame: bytes, flexible: bool) -> RequestHeader:
    """Parse header v1 (or v2 when `flexible`); client_id stays a non-compact string in both."""
    if len(frame) < _HEADER_FIXED.size:
        raise ProtocolError(f"frame of {len(frame)} bytes is too short for a request header")
    api_key, api_version, correlation_id, client_id_length = _HEADER_FIXED.unpack_from(frame, 0)
    position = _HEADER_FIXED.size
    client_id: str | None = None
    if client_id_length >= 0:
        end = position + client_id_length
        if end > len(frame):
            raise ProtocolError("client_id runs past the end of the frame")
        try:
            client_id = frame[position:end].decode()
        except UnicodeDecodeError as error:
            raise ProtocolError("client_id is not UTF-8") from error
        position = end
    if flexible:
        position = skip_tagged_fields(frame, position)
    return RequestHeader(api_key, api_version, correlation_id, client_id, position)


VARINT_BYTES_MAX = 5


def read_uvarint(data: bytes, position: int, end: int | None = None) -> tuple[int, int]:
    """(value, next position) of the unsigned varint at `position`, which must end before `end` (default:
    the end of `data`) and take at most five bytes."""
    end = len(data) if end is None else end
    value = shift = 0
    for _ in range(VARINT_BYTES_MAX):
        if position >= end:
            raise ProtocolError(f"unsigned varint runs past the end of the frame (byte {position})")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
    raise ProtocolError(f"unsigned varint is longer than five bytes (byte {position})")


def write_uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def skip_tagged_fields(data: bytes, position: int) -> int:
    count, position = read_uvarint(data, position)
    for _ in range(count):
        _tag, position = read_uvarint(data, position)
        size, position = read_uvarint(data, position)
        position += size
        if position > len(data):
            raise ProtocolError("tagged field runs past the end of the frame")
    return position


def response_header(correlation_id: int, flexible: bool) -> bytes:
    """Response header v0, or v1 (empty tagged-field section) when `flexible`."""
    header = _CORRELATION.pack(correlation_id)
    return header + b"\x00" if flexible else header


def frame(*parts: bytes) -> bytes:
    """Prefix the concatenated parts with their int32 size."""
    body = b"".join(parts)
    return _SIZE.pack(len(body)) + body
