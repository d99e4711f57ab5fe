"""Framing, headers and codecs, with request bytes captured from the real clients."""

from __future__ import annotations

import struct

import pytest

from oncelog.errors import ErrorCode, ProtocolError
from oncelog.handlers.api_versions import unsupported_version_response
from oncelog.protocol.codec import build_response, decode_request, encode_response, is_flexible_request
from oncelog.protocol.framing import FrameDecoder, parse_request_header, peek_header

# First frame (without its size prefix) each client sent to a listening socket.
CONFLUENT_API_VERSIONS_V3 = bytes.fromhex(
    "001200030000000100036361700017636f6e666c75656e742d6b61666b612d707974686f6e16322e31362e312d"
    "72646b61666b612d322e31362e3000"
)
AIOKAFKA_API_VERSIONS_V0 = bytes.fromhex("00120000000000010003636170")
KAFKA_PYTHON_API_VERSIONS_V4 = bytes.fromhex(
    "00120004000000010003636170000d6b61666b612d707974686f6e07332e302e313200"
)
KAFKA_PYTHON_METADATA_V12 = bytes.fromhex("0003000c0000000200036361700001010000")


def sized(frame: bytes) -> bytes:
    return struct.pack(">i", len(frame)) + frame


def test_decoder_returns_whole_frames_however_the_bytes_arrive() -> None:
    stream = sized(b"abc") + sized(b"") + sized(b"0123456789")
    for step in (1, 2, 3, 7, len(stream)):
        decoder = FrameDecoder()
        frames = []
        for start in range(0, len(stream), step):
            frames += decoder.feed(stream[start : start + step])
        assert frames == [b"abc", b"", b"0123456789"]
        assert decoder.buffered_bytes == 0


def test_decoder_rejects_oversized_and_negative_frames() -> None:
    with pytest.raises(ProtocolError):
        FrameDecoder(frame_bytes_max=100).feed(struct.pack(">i", 101))
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(struct.pack(">i", -1))


def test_confluent_api_versions_v3_uses_header_v2_and_decodes() -> None:
    assert peek_header(CONFLUENT_API_VERSIONS_V3) == (18, 3, 1)
    assert is_flexible_request(18, 3)
    header, request = decode_request(CONFLUENT_API_VERSIONS_V3, 18, 3)
    assert header.client_id == "cap"
    assert request.client_software_name == "confluent-kafka-python"
    assert request.client_software_version.startswith("2.16.1")


def test_aiokafka_api_versions_v0_uses_header_v1() -> None:
    header, _request = decode_request(AIOKAFKA_API_VERSIONS_V0, 18, 0)
    assert (header.api_key, header.api_version, header.correlation_id, header.client_id) == (18, 0, 1, "cap")
    assert header.body_position == len(AIOKAFKA_API_VERSIONS_V0)


def test_kafka_python_api_versions_v4_and_metadata_v12() -> None:
    header, request = decode_request(KAFKA_PYTHON_API_VERSIONS_V4, 18, 4)
    assert header.client_id == "cap" and request.client_software_name == "kafka-python"
    header, metadata = decode_request(KAFKA_PYTHON_METADATA_V12, 3, 12)
    assert header.correlation_id == 2 and metadata.topics == () and metadata.allow_auto_topic_creation


def test_null_client_id_and_truncated_headers() -> None:
    frame = struct.pack(">hhih", 3, 1, 7, -1)
    assert parse_request_header(frame, flexible=False).client_id is None
    with pytest.raises(ProtocolError):
        parse_request_header(struct.pack(">hhih", 3, 1, 7, 10) + b"abc", flexible=False)
    with pytest.raises(ProtocolError):
        peek_header(b"\x00\x03")


def test_api_versions_response_always_has_header_v0() -> None:
    response = build_response(18, 3, {"error_code": ErrorCode.none, "api_keys": [], "throttle_time": 0})
    data = encode_response(18, 3, 42, response)
    size, correlation_id, error_code = struct.unpack_from(">iih", data)
    assert size == len(data) - 4 and correlation_id == 42 and error_code == 0


def test_flexible_responses_get_header_v1() -> None:
    response = build_response(3, 9, {"throttle_time": 0, "brokers": [], "topics": []})
    data = encode_response(3, 9, 5, response)
    assert data[4:8] == struct.pack(">i", 5) and data[8] == 0  # empty tagged-field section
    legacy = encode_response(3, 8, 5, build_response(3, 8, {"throttle_time": 0, "brokers": [], "topics": []}))
    assert legacy[8:12] == b"\x00\x00\x00\x00"  # v8 body starts with throttle_time, no tag byte


def test_unsupported_api_versions_answer_is_a_v0_body() -> None:
    data = unsupported_version_response(9)
    size, correlation_id, error_code, count, key, low, high = struct.unpack(">iihihhh", data)
    assert (size, correlation_id, error_code, count) == (len(data) - 4, 9, 35, 1)
    assert (key, low, high) == (18, 0, 4)


def test_build_drops_fields_a_version_lacks_and_converts_durations() -> None:
    fields = {"throttle_time": 250, "topics": [{"name": "t", "partitions": [
        {"partition_index": 0, "error_code": ErrorCode.none, "timestamp": 5, "offset": 9, "leader_epoch": 0}]}]}
    v1 = build_response(2, 1, fields)
    v7 = build_response(2, 7, fields)
    assert not hasattr(v1.topics[0].partitions[0], "leader_epoch")
    assert v7.topics[0].partitions[0].leader_epoch == 0
    assert v7.throttle_time.total_seconds() == 0.25
