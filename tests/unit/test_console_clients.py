"""The console clients' pure parts: Kafka's partitioner hash, the range assignor, line parsing, codecs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from oncelog.config import ConfigError
from oncelog.console_producer import LineFormat, murmur2
from oncelog.consumer_group import encode_assignment, encode_subscription, range_assignment
from oncelog.coordinator.group.assignment import assigned_partitions, subscription_topics
from oncelog.protocol import compression
from oncelog.protocol.records import build_batch, decode_records, iter_batches, parse_header


def test_murmur2_matches_kafkas_published_values() -> None:
    assert murmur2(b"21") == -973932308  # Kafka's UtilsTest.testMurmur2
    assert murmur2(b"foobar") == -790332482


@given(st.binary(max_size=64))
def test_murmur2_matches_kafka_python(data: bytes) -> None:
    assert murmur2(data) & 0xFFFFFFFF == kafka_python_murmur2(data)


def test_range_assignment_is_kafkas_range_assignor() -> None:
    members = {"b": {"t"}, "a": {"t"}, "c": {"t", "u"}}
    plan = range_assignment(members, {"t": 7, "u": 2})
    assert plan == {"a": {"t": [0, 1, 2]}, "b": {"t": [3, 4]}, "c": {"t": [5, 6], "u": [0, 1]}}
    assert range_assignment({"a": {"t"}, "b": {"t"}}, {"t": 1}) == {"a": {"t": [0]}, "b": {}}


def test_the_embedded_protocol_round_trips_through_the_brokers_readers() -> None:
    assert subscription_topics(encode_subscription(["orders", "payments"])) == {"orders", "payments"}
    assert assigned_partitions(encode_assignment({"orders": [0, 2], "x": [1]})) == {"orders": [0, 2], "x": [1]}


def test_line_format_reads_kafkas_properties() -> None:
    plain = LineFormat.from_properties([])
    assert plain.parse(b"just\ta value") == (None, b"just\ta value", ())
    keyed = LineFormat.from_properties(["parse.key=true", "key.separator=::"])
    assert keyed.parse(b"k::v::w") == (b"k", b"v::w", ())
    with_headers = LineFormat.from_properties(["parse.headers=true", "parse.key=true"])
    assert with_headers.parse(b"a:1,b\tk\tv") == (b"k", b"v", (("a", b"1"), ("b", None)))
    with pytest.raises(ValueError, match="key separator"):
        keyed.parse(b"no separator")
    with pytest.raises(ConfigError):
        LineFormat.from_properties(["print.key=true"])


@pytest.mark.parametrize("codec", sorted(compression.CODECS))
def test_compressed_batches_round_trip(codec: str) -> None:
    code = compression.CODECS[codec]
    records = [(b"k%d" % index, b"value %d" % index * 20) for index in range(30)]
    batch = build_batch(records, headers=[(("h", b"x"),)] * 30, compression=code,
                        compress=lambda body: compression.compress(code, body))
    [(position, header)] = list(iter_batches(batch))
    assert header.compression == code
    body = compression.decompress(code, batch[position + 61:position + header.size])
    decoded = list(decode_records(body, parse_header(batch)))
    assert [(r.key, r.value, r.headers) for r in decoded] == [(k, v, (("h", b"x"),)) for k, v in records]


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_a_compression_bomb_is_refused_while_inflating(codec: int, monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = compression.compress(codec, b"\0" * 50_000)
    monkeypatch.setattr(compression, "DECOMPRESSED_BYTES_MAX", 1000)
    with pytest.raises(compression.CompressionError, match="inflates"):
        compression.decompress(codec, bomb)


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_corrupt_compressed_data_is_a_compression_error(codec: int) -> None:
    with pytest.raises(compression.CompressionError, match="corrupt"):
        compression.decompress(codec, b"\x12garbage" * 7)


def test_separators_unescape_only_what_shells_make_hard_to_type() -> None:
    from oncelog.console_consumer import unescape

    assert unescape("\\t") == "\t" and unescape("a\\nb") == "a\nb" and unescape("\\\\t") == "\\t"
    assert unescape("→é:") == "→é:"  # non-ASCII stays as typed (unicode_escape turned it into mojibake)
    assert LineFormat.from_properties(["parse.key=true", "key.separator=→"]).parse("k→v".encode()) == (
        b"k", b"v", ())


def test_one_fetch_inflates_at_most_its_budget_and_the_rest_comes_next(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from oncelog import console_consumer

    first = build_batch([(b"k", b"a" * 5000)], base_offset=0, compression=1,
                        compress=lambda body: compression.compress(1, body))
    second = build_batch([(b"k", b"b" * 5000)], base_offset=1, compression=1,
                         compress=lambda body: compression.compress(1, body))
    monkeypatch.setattr(console_consumer, "FETCH_INFLATED_MAX", 1000)
    reader = console_consumer._Reader(None, None, False, -1)  # type: ignore[arg-type]
    data = SimpleNamespace(records=first + second, aborted_transactions=None)
    records, position = reader._records(data, 0)
    assert [r.offset for r in records] == [0] and position == 1
    records, position = reader._records(SimpleNamespace(records=second, aborted_transactions=None), 1)
    assert [r.offset for r in records] == [1] and position == 2

