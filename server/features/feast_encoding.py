"""Feast's Redis online-store layout, written and read without the feast package.

What Feast (0.67, feast/infra/online_stores/redis.py and feast/infra/key_encoding_utils.py)
writes for one entity of a feature view:

- key: the serialized EntityKey (version 3: the count of join keys, then each join key as
  type STRING + length + UTF-8, then each value as its ValueType + length + bytes; keys
  sorted) followed by the project name in UTF-8;
- one hash field per feature: murmur3_32 (seed 0, unsigned) of "view:feature", as 4 bytes
  little-endian, holding the feature's serialized feast.types.Value;
- `_ts:<view>`: the event timestamp, a serialized google.protobuf.Timestamp.

Values are decoded by hand (the tag byte, then the fixed-width or varint payload): parsing
each into a protobuf object costs several times more for the 1,700 values of a user and
100 items. Encodings this module does not know go through the protobuf class.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from switchyard.protos import feast_types_pb2

ValueType = feast_types_pb2.ValueType

# Value types a model row can hold (FP32 columns); the others (strings, bytes, lists) cannot.
NUMERIC_TYPES: dict[int, str] = {
    ValueType.FLOAT: "FLOAT",
    ValueType.DOUBLE: "DOUBLE",
    ValueType.INT32: "INT32",
    ValueType.INT64: "INT64",
    ValueType.BOOL: "BOOL",
}
# Join key types whose ids Recommend's string ids can stand for.
JOIN_KEY_TYPES: dict[int, str] = {
    ValueType.STRING: "STRING",
    ValueType.INT64: "INT64",
    ValueType.INT32: "INT32",
}
SUPPORTED_KEY_VERSIONS = (3,)

# Tag bytes of feast.types.Value (field number << 3 | wire type).
_TAG_INT32 = 0x18  # field 3, varint
_TAG_INT64 = 0x20  # field 4, varint
_TAG_DOUBLE = 0x29  # field 5, 64-bit
_TAG_FLOAT = 0x35  # field 6, 32-bit
_TAG_BOOL = 0x38  # field 7, varint
_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")
_UINT32 = struct.Struct("<I")
_INT64 = struct.Struct("<q")
_INT32 = struct.Struct("<i")
_DECIMAL = re.compile(r"-?[0-9]+")
_SIX_ZEROS = bytes(6)  # not the usual Timestamp shape (no 0x08 tag): NaN in whole_seconds


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit (unsigned), as mmh3.hash(data, seed, signed=False). Only run
    at start, once per feature, so plain Python is fast enough."""
    c1, c2, mask = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = seed & mask
    n_blocks = len(data) // 4
    for (k,) in struct.iter_unpack("<I", data[: n_blocks * 4]):
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        h ^= (k * c2) & mask
        h = ((h << 13) | (h >> 19)) & mask
        h = (h * 5 + 0xE6546B64) & mask
    tail = data[n_blocks * 4 :]
    if tail:
        k = int.from_bytes(tail, "little")
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        h ^= (k * c2) & mask
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    h ^= h >> 16
    return h


def field_name(view: str, feature: str) -> bytes:
    """The hash field of one feature of a view."""
    return murmur3_32(f"{view}:{feature}".encode()).to_bytes(4, "little")


def timestamp_field(view: str) -> bytes:
    return f"_ts:{view}".encode()


def entity_key_encoder(join_key: str, value_type: int, project: str) -> Callable[[str], bytes]:
    """The Redis key of an entity id for one join key (version 3): the serialized EntityKey
    followed by the project.

    The encoder raises ValueError for an id that is not of the join key's type: INT64 and
    INT32 keys take ASCII decimal ids only (int() would also take "1_000", " 12" or "+5",
    naming another entity's key), and struct.error for one out of the type's range.
    """
    name = join_key.encode()
    head = _UINT32.pack(1) + _UINT32.pack(ValueType.STRING) + _UINT32.pack(len(name)) + name
    head += _UINT32.pack(value_type)
    tail = project.encode()
    if value_type == ValueType.STRING:

        def encode(entity_id: str) -> bytes:
            raw = entity_id.encode()
            return head + _UINT32.pack(len(raw)) + raw + tail

        return encode
    if value_type == ValueType.INT64:
        integer = _INT64
    elif value_type == ValueType.INT32:
        integer = _INT32
    else:
        raise ValueError(f"join key type {value_type} is not supported")
    head += _UINT32.pack(integer.size)

    def encode_integer(entity_id: str) -> bytes:
        if _DECIMAL.fullmatch(entity_id) is None:
            raise ValueError(f"{entity_id!r} is not a decimal integer")
        return head + integer.pack(int(entity_id)) + tail

    return encode_integer


def _varint(data: bytes, start: int) -> int:
    value = shift = 0
    for byte in data[start:]:
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value
        shift += 7
    raise ValueError("truncated varint")


def decode_value(data: bytes) -> float | None:
    """A serialized feast.types.Value as a float; None for an empty (null) value.

    Raises ValueError for a value that is not a number (a string, a list).
    """
    if not data:
        return None
    tag = data[0]
    if tag == _TAG_FLOAT and len(data) == 5:
        return float(_FLOAT.unpack_from(data, 1)[0])
    if tag == _TAG_DOUBLE and len(data) == 9:
        return float(_DOUBLE.unpack_from(data, 1)[0])
    if tag in (_TAG_INT64, _TAG_INT32):
        value = _varint(data, 1)
        # Negative ints are 10-byte two's complement varints (int32 ones sign-extended too).
        return float(value - (1 << 64) if value >= 1 << 63 else value)
    if tag == _TAG_BOOL and len(data) == 2:
        return float(data[1] != 0)
    return _decode_with_protobuf(data)


def _decode_with_protobuf(data: bytes) -> float | None:
    message = feast_types_pb2.Value()
    try:
        message.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError, a bare Exception subclass
        raise ValueError(f"not a feast Value: {exc}") from None
    kind = message.WhichOneof("val")
    if kind is None:
        return None
    if kind in ("float_val", "double_val", "int32_val", "int64_val", "bool_val"):
        return float(getattr(message, kind))
    raise ValueError(f"a {kind} is not a number")


def decode_float_values(values: Iterable[bytes | None], count: int) -> np.ndarray | None:
    """The `count` values of FLOAT features, all present and in float_val's usual 5 bytes,
    decoded in one pass; None when any is not (the caller decodes those one by one). A
    float_val is always 5 bytes, so 5 x count bytes whose every fifth byte is its tag can
    only be count of them."""
    try:
        raw = b"".join(values)  # type: ignore[arg-type]  # a None raises TypeError
    except TypeError:
        return None
    if len(raw) != 5 * count:
        return None
    cells = np.frombuffer(raw, np.uint8).reshape(-1, 5)
    if not (cells[:, 0] == _TAG_FLOAT).all():
        return None
    return np.ascontiguousarray(cells[:, 1:]).view("<f4").ravel()


def whole_seconds(cells: Sequence[bytes | None]) -> np.ndarray:
    """The whole seconds of serialized google.protobuf.Timestamps, in one pass: float64, NaN
    where a cell is absent or not in the usual shape (decode those with decode_timestamp_s).
    The nanos are dropped: the time is at most a second later than this."""
    joined = b"".join(_SIX_ZEROS if cell is None else cell[:6] for cell in cells)
    if len(joined) != 6 * len(cells):
        # A cell shorter than the usual shape: padded with 0x80, whose sixth byte (a varint
        # continuation byte) makes it unusual, so it is decoded one by one.
        joined = b"".join(
            _SIX_ZEROS if cell is None else cell[:6].ljust(6, b"\x80") for cell in cells
        )
    head = np.frombuffer(joined, np.uint8).reshape(len(cells), 6).astype(np.int64)
    usual = (head[:, 0] == 0x08) & (head[:, 1:5] >= 0x80).all(axis=1) & (head[:, 5] < 0x80)
    groups = head[:, 1:6] & 0x7F
    seconds = (groups << np.array([0, 7, 14, 21, 28])).sum(axis=1)
    return np.where(usual, seconds.astype(np.float64), np.nan)


def decode_timestamp_s(data: bytes | None) -> float | None:
    """A serialized google.protobuf.Timestamp as seconds since the epoch; None if absent
    (b"" is the epoch itself, as protobuf parses it)."""
    if data is None:
        return None
    if 6 <= len(data) <= 12 and data[0] == 0x08 and data[5] < 0x80 and min(data[1:5]) >= 0x80:
        # The usual shape: seconds of 1978 to 3058 (a 5-byte varint), then maybe nanos.
        seconds = (
            (data[1] & 0x7F)
            | (data[2] & 0x7F) << 7
            | (data[3] & 0x7F) << 14
            | (data[4] & 0x7F) << 21
            | data[5] << 28
        )
        if len(data) == 6:
            return float(seconds)
        if data[6] == 0x10:
            return seconds + _varint(data, 7) * 1e-9
    seconds = nanos = 0
    position = 0
    while position < len(data):
        tag = data[position]
        value = _varint(data, position + 1)
        position += 1
        while data[position] & 0x80:
            position += 1
        position += 1
        if tag == 0x08:
            seconds = value - (1 << 64) if value >= 1 << 63 else value
        elif tag == 0x10:
            nanos = value
        else:
            raise ValueError(f"unexpected Timestamp field tag {tag:#x}")
    return seconds + nanos * 1e-9
