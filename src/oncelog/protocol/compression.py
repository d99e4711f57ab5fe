"""Record batch compression for oncelog's own clients (the console producer and consumer).

The broker never decompresses: it stores client batches as they come. The CLI does: `oncelog consume`
must read what any producer wrote, and `oncelog produce --compression-codec gzip` writes gzip. gzip is
the standard library's; snappy, lz4 and zstd use `cramjam` when it is installed (`pip install cramjam`),
and otherwise fail with a message saying so. Codec ids are Kafka's (the batch attributes' low 3 bits).
Snappy from the Java client comes in xerial's framing ("\\x82SNAPPY\\x00", then length-prefixed blocks);
librdkafka may send raw snappy: both are read.
"""

from __future__ import annotations

import gzip
import io
import struct
from typing import Any

CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
NAMES = {code: name for name, code in CODECS.items()}
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
DECOMPRESSED_BYTES_MAX = 64 << 20
"""A batch that inflates beyond this is refused (a compression bomb must not exhaust the CLI's memory)."""


class CompressionError(ValueError):
    pass


def _cramjam(codec: str) -> Any:
    try:
        import cramjam
    except ImportError:
        raise CompressionError(f"{codec} batches need the cramjam package: pip install cramjam") from None
    return cramjam


def compress(codec: int, data: bytes, level: int | None = None) -> bytes:
    """`data` compressed with Kafka codec `codec`, at `level` where the codec has levels (the topic's
    compression.gzip.level / .lz4.level / .zstd.level; None or -1: the codec's default)."""
    if codec == 0:
        return data
    if codec == 1:
        return gzip.compress(data, compresslevel=6 if level is None or level < 0 else level)
    name = NAMES.get(codec, str(codec))
    cramjam = _cramjam(name)
    if codec == 2:
        return _XERIAL_MAGIC + struct.pack(">ii", 1, 1) + _block(bytes(cramjam.snappy.compress_raw(data)))
    if codec == 3:
        return bytes(cramjam.lz4.compress(data, level=9 if level is None else level))
    if codec == 4:
        return bytes(cramjam.zstd.compress(data, level=3 if level is None else level))
    raise CompressionError(f"unknown compression codec {codec}")


def _block(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


def decompress(codec: int, data: bytes) -> bytes:
    """The batch's records section, inflated; CompressionError if it is corrupt or would inflate beyond
    DECOMPRESSED_BYTES_MAX (checked while inflating: a bomb never gets that memory)."""
    if codec == 0:
        return data
    try:
        if codec == 1:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
                result = stream.read(DECOMPRESSED_BYTES_MAX + 1)
            if len(result) > DECOMPRESSED_BYTES_MAX:
                raise CompressionError(f"a batch inflates beyond {DECOMPRESSED_BYTES_MAX} bytes")
            return result
        if codec == 2:
            return _snappy(data)
        if codec == 3:
            return _bounded(_cramjam("lz4").lz4.decompress_into, data)
        if codec == 4:
            return _bounded(_cramjam("zstd").zstd.decompress_into, data)
    except CompressionError:
        raise
    except Exception as error:  # zlib.error, EOFError, gzip.BadGzipFile, cramjam.DecompressionError, ...
        raise CompressionError(f"corrupt {NAMES.get(codec, codec)} data: {error}") from error
    raise CompressionError(f"unknown compression codec {codec}")


_TOO_SMALL = ("whole buffer", "smaller than required")
"""How cramjam says the output did not fit (zstd and lz4; snappy)."""


def _bounded(decompress_into: Any, data: bytes) -> bytes:
    """Inflate into buffers of growing size, never past DECOMPRESSED_BYTES_MAX."""
    size = min(DECOMPRESSED_BYTES_MAX, max(1 << 16, 8 * len(data)))
    while True:
        buffer = bytearray(size)
        try:
            written = decompress_into(data, buffer)
        except Exception as error:
            if not any(words in str(error) for words in _TOO_SMALL):
                raise
            if size >= DECOMPRESSED_BYTES_MAX:
                raise CompressionError(f"a batch inflates beyond {DECOMPRESSED_BYTES_MAX} bytes") from None
            size = min(DECOMPRESSED_BYTES_MAX, size * 4)
            continue
        return bytes(buffer[:int(written)])


def _snappy(data: bytes) -> bytes:
    snappy = _cramjam("snappy").snappy
    if not data.startswith(_XERIAL_MAGIC):
        return _bounded(snappy.decompress_raw_into, data)
    position, parts, total = len(_XERIAL_MAGIC) + 8, [], 0
    while position + 4 <= len(data):
        (size,) = struct.unpack_from(">i", data, position)
        position += 4
        if size < 0 or position + size > len(data):
            raise CompressionError("xerial snappy block runs past the end")
        part = _bounded(snappy.decompress_raw_into, data[position:position + size])
        total += len(part)
        if total > DECOMPRESSED_BYTES_MAX:
            raise CompressionError(f"a batch inflates beyond {DECOMPRESSED_BYTES_MAX} bytes")
        parts.append(part)
        position += size
    return b"".join(parts)
