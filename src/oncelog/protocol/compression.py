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
DECOMPRESSED_BYTES_MAX = 256 << 20
"""A batch that inflates beyond this is refused (a compression bomb must not exhaust the CLI's memory)."""


class CompressionError(ValueError):
    pass


def _cramjam(codec: str) -> Any:
    try:
        import cramjam
    except ImportError:
        raise CompressionError(f"{codec} batches need the cramjam package: pip install cramjam") from None
    return cramjam


def compress(codec: int, data: bytes) -> bytes:
    if codec == 0:
        return data
    if codec == 1:
        return gzip.compress(data, compresslevel=6)
    name = NAMES.get(codec, str(codec))
    cramjam = _cramjam(name)
    if codec == 2:
        return _XERIAL_MAGIC + struct.pack(">ii", 1, 1) + _block(bytes(cramjam.snappy.compress_raw(data)))
    if codec == 3:
        return bytes(cramjam.lz4.compress(data))
    if codec == 4:
        return bytes(cramjam.zstd.compress(data))
    raise CompressionError(f"unknown compression codec {codec}")


def _block(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


def decompress(codec: int, data: bytes) -> bytes:
    if codec == 0:
        return data
    if codec == 1:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            result = stream.read(DECOMPRESSED_BYTES_MAX + 1)
    elif codec == 2:
        result = _snappy(data)
    elif codec == 3:
        result = bytes(_cramjam("lz4").lz4.decompress(data))
    elif codec == 4:
        result = bytes(_cramjam("zstd").zstd.decompress(data))
    else:
        raise CompressionError(f"unknown compression codec {codec}")
    if len(result) > DECOMPRESSED_BYTES_MAX:
        raise CompressionError(f"a batch inflates beyond {DECOMPRESSED_BYTES_MAX} bytes")
    return result


def _snappy(data: bytes) -> bytes:
    snappy = _cramjam("snappy").snappy
    if not data.startswith(_XERIAL_MAGIC):
        return bytes(snappy.decompress_raw(data))
    position, parts = len(_XERIAL_MAGIC) + 8, []
    while position + 4 <= len(data):
        (size,) = struct.unpack_from(">i", data, position)
        position += 4
        if size < 0 or position + size > len(data):
            raise CompressionError("xerial snappy block runs past the end")
        parts.append(bytes(snappy.decompress_raw(data[position:position + size])))
        position += size
    return b"".join(parts)
